"""Internal apps: who is calling (client keys), what they may do (scopes), rate limits, and token vending."""
