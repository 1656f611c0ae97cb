"""Node.js and the pinned npm packages of tests/node (Debian's nodejs and npm, installed when missing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers.installs import cannot_have, debian_commands
from helpers.locks import machine_lock

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


INSTALL_TIMEOUT_SECONDS = 900


def _install_node() -> str:
    """Debian's nodejs and npm, installed with apt-get when missing (CI runs as root)."""
    return debian_commands("Node.js", ("nodejs", "npm"), "node", "npm")


def _install_packages() -> None:
    """The pinned npm packages of tests/node/package-lock.json, unless already installed from it."""
    lock, installed = NODE_DIR / "package-lock.json", NODE_DIR / "node_modules" / ".package-lock.json"
    with machine_lock("npm"):  # a parallel worker's `npm ci` would empty node_modules under this one
        if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
            return
        # No install scripts: none of these packages needs one to run.
        answer = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS,
        )  # fmt: skip
    if answer.returncode != 0:
        cannot_have(f"npm ci failed in {NODE_DIR}: {answer.stderr[-2000:]}")


def node_with_packages() -> str:
    """The node binary, with tests/node's pinned packages installed."""
    binary = _install_node()
    _install_packages()
    return binary
