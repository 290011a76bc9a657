"""Authorizations: each authorizer's grants to each platform, code exchange, routing by permission set."""
