"""A real Chromium for browser tests: Debian's chromium package (installed with apt-get when
missing, like tests/helpers/postgres.py installs PostgreSQL), driven by Playwright for Python pointed at
that executable. Playwright's own browser downloads are never used."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

from helpers.installs import debian_commands


def chromium_executable() -> str:
    """Debian's chromium, installed when missing; a skip (a failure under CI=true) where it cannot be had."""
    return debian_commands("Chromium", ("chromium",), "chromium")


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards. As root, Chromium's sandbox cannot start: --no-sandbox."""
    executable = chromium_executable()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()
