"""Client interceptors that add metadata to every outgoing call, whatever its kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

# What to add to a call, asked anew for each call (a trace context changes; a credential does not).
Entries = Callable[[], Sequence[tuple[str, str]]]


class _Adding:
    def __init__(self, entries: Entries) -> None:
        self._entries = entries

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        entries = self._entries()
        if not entries:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *entries)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first call kind it implements: one class per kind.
class _OnUnary(_Adding, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _OnServerStream(_Adding, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _OnBidiStream(_Adding, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


def adding_metadata(entries: Entries) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that add `entries()` to the metadata of every call."""
    return [kind(entries) for kind in (_OnUnary, _OnServerStream, _OnBidiStream)]
