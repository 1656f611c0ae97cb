"""HTTP clients for the tests. httpx builds a TLS context for every client it makes, reading the
CA bundle each time (about 20 ms of CPU per client, the largest share of a stack test's own CPU),
though the tests speak plain HTTP to 127.0.0.1: the clients made here share one context, the one
httpx would have built."""

from __future__ import annotations

from typing import Any

import httpx

TLS = httpx.create_ssl_context()


def http_client(**options: Any) -> httpx.Client:
    """httpx.Client(**options) with the shared TLS context."""
    return httpx.Client(verify=TLS, **options)


def async_http_client(**options: Any) -> httpx.AsyncClient:
    """httpx.AsyncClient(**options) with the shared TLS context."""
    return httpx.AsyncClient(verify=TLS, **options)
