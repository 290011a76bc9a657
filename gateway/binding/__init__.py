"""Open-account binding (SPEC §11): each authorizer to its principal's open account, planned then applied."""
