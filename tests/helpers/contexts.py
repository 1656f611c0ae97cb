"""A stand-in for the part of a grpc.aio servicer context that in-process tests need."""

from __future__ import annotations


class BearerContext:
    """The part of a grpc.aio context the servicers read: the caller's bearer token."""

    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata
