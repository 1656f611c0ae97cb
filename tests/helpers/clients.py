"""HTTP clients for the tests. httpx builds a TLS context for every client it makes, reading the
CA bundle each time (about 20 ms of CPU per client, the largest share of a stack test's own CPU),
though the tests speak plain HTTP to 127.0.0.1: the clients made here share one context, the one
httpx would have built."""

from __future__ import annotations

from typing import Any

import httpx

TLS = httpx.create_ssl_context()
# httpx's own default is 5 s: on a busy machine a sound answer can take longer. A short timeout is for the
# tests whose outcome is the timeout, and they give it.
TIMEOUT_SECONDS = 30.0


def http_client(**options: Any) -> httpx.Client:
    """httpx.Client(**options) with the shared TLS context (and TIMEOUT_SECONDS unless given)."""
    return httpx.Client(verify=TLS, **{"timeout": TIMEOUT_SECONDS, **options})


def async_http_client(**options: Any) -> httpx.AsyncClient:
    """httpx.AsyncClient(**options) with the shared TLS context (and TIMEOUT_SECONDS unless given)."""
    return httpx.AsyncClient(verify=TLS, **{"timeout": TIMEOUT_SECONDS, **options})
