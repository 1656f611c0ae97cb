"""`switchboard up --demo`: a reference provider, a small catalog and a demo user."""

from __future__ import annotations

from services.launcher import Stack


def start_demo(stack: Stack, base_url: str, admin_token: str) -> str:
    """Starts the demo parts in the stack; returns lines to print for the operator."""
    return "  demo: the reference provider is not part of this build yet"
