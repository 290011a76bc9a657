"""Thin HTTP controllers; the logic lives in the services they are given by dependency injection."""
