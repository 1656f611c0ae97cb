"""Installing what a test needs from Debian's packages (CI runs as root on a fresh machine), and
saying why not where that cannot be done."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest

from helpers.locks import machine_lock

APT_TIMEOUT_SECONDS = 900


def cannot_have(reason: str) -> NoReturn:
    """CI must run every test: there a missing tool fails; elsewhere the test is skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def can_apt_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str) -> None:
    """apt-get install of Debian packages, without recommends; the caller checks can_apt_install()."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with machine_lock("apt"):  # dpkg takes one install at a time; a parallel worker waits for the other's
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            check=True, env=env, capture_output=True, timeout=APT_TIMEOUT_SECONDS,
        )  # fmt: skip


def debian_commands(what: str, packages: tuple[str, ...], *commands: str) -> str:
    """The path of the first command, its Debian packages installed when any command is missing;
    a skip (a failure under CI=true) where they cannot be had. `what` names them in that message."""
    if not all(shutil.which(command) for command in commands):
        if not can_apt_install():
            cannot_have(f"{what} is not installed and apt-get cannot install it here (needs root)")
        apt_install(*packages)
    found = [shutil.which(command) for command in commands]
    assert all(found), f"{' and '.join(packages)} installed but not on PATH"
    return str(found[0])
