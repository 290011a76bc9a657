"""Onboarding (SPEC §4): invites, the authorization start page, and the redirect back."""
