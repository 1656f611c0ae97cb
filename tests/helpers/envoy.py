"""Envoy's own validation of a configuration file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def assert_envoy_accepts(config: Path) -> None:
    """Envoy's own validation (`envoy --mode validate`) of a configuration file."""
    envoy = Path(sys.executable).parent / "envoy"
    checked = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.stdout.strip() == f"configuration '{config}' OK", checked.stderr
