"""Credentials WeChat issues: verify tickets, component and authorizer tokens, renewed once."""
