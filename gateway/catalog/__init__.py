"""The auditors' catalog (SPEC §6): every authorizer across every platform, synced, queried, exported."""
