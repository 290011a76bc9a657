"""Delivery to internal apps (SPEC §10): subscriptions, signed webhooks, and the outbox worker."""
