"""Switchboard's services: registry, router, billing, and what they share."""
