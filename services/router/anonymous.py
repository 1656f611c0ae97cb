"""Per-client limits of anonymous mode (docs/anonymous.md): one client cannot empty or block the
anonymous account that every tokenless caller shares.

A client is its address: the last `x-forwarded-for` entry, which Envoy appends from the peer
of the connection (`use_remote_address`; whatever a caller sent before it is ignored), or the
gRPC peer for a call that did not come through Envoy; an IPv6 address counts as its /64 (one
host commonly holds a whole /64). Per client and per Router replica:

- at most `max_concurrent` anonymous calls in flight (429 past it);
- at most `per_minute` calls a minute, as a token bucket of that size (429 with RetryInfo);
- a reservation of at most `max_reservation_nano_usd` per call (400 naming the parameter to lower);
- at most `per_hour_nano_usd` of estimates an hour, as a token bucket (429 with RetryInfo).

At most MAX_CLIENTS clients are remembered (the least recently seen is forgotten first).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from services.common.errors import ApiError, Code, invalid_argument

MAX_CLIENTS = 10_000


@dataclass(frozen=True)
class AnonymousLimits:
    """The per-client limits (the Router's settings; docs/anonymous.md has the defaults)."""

    max_concurrent: int = 2
    per_minute: int = 20
    max_reservation_nano_usd: int = 20_000_000  # $0.02
    per_hour_nano_usd: int = 100_000_000  # $0.10


class Bucket:
    """A token bucket: `capacity` tokens, refilled at `capacity` per `period` seconds; full at first."""

    def __init__(self, capacity: float, period: float) -> None:
        self.capacity, self.period = capacity, period
        self.level, self.updated = capacity, None

    def take(self, amount: float, now: float) -> float:
        """Takes `amount` and answers 0, or takes nothing and answers the seconds until it could."""
        if self.updated is not None:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / self.period)
        self.updated = now
        if amount <= self.level:
            self.level -= amount
            return 0.0
        return (amount - self.level) * self.period / self.capacity


@dataclass
class Client:
    """One client's calls in flight, call rate and spend rate."""

    calls: Bucket
    spend: Bucket
    in_flight: int = 0


def client_address(forwarded_for: str, peer: str) -> str:
    """The client a call is counted against (see the module's docstring)."""
    peer_text = peer.partition(":")[2].rpartition(":")[0].strip("[]")
    text = forwarded_for.rpartition(",")[2].strip() or peer_text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:  # not Envoy's entry (Envoy appends an address): the connection's peer
        try:
            address = ipaddress.ip_address(peer_text)
        except ValueError:
            return peer_text[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _too_many(message: str, wait: float) -> ApiError:
    return ApiError(Code.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", message, retry_seconds=max(1, math.ceil(wait)))


class AnonymousClients:
    """The limits' state per client, in this process."""

    def __init__(self, limits: AnonymousLimits, clock=time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._clients: OrderedDict[str, Client] = OrderedDict()

    def _client(self, address: str) -> Client:
        client = self._clients.pop(address, None)
        if client is None:
            client = Client(Bucket(self.limits.per_minute, 60), Bucket(self.limits.per_hour_nano_usd, 3600))
            while len(self._clients) >= MAX_CLIENTS:
                self._clients.popitem(last=False)
        self._clients[address] = client  # the most recently seen last
        return client

    @contextmanager
    def admitted(self, address: str) -> Iterator[None]:
        """Holds one of the client's concurrent calls for the block, after taking one from its rate."""
        client = self._client(address)
        if client.in_flight >= self.limits.max_concurrent:
            raise _too_many(f"anonymous callers may have {self.limits.max_concurrent} requests in flight per "
                            "address; wait for one to finish, or send a token", 1)  # fmt: skip
        wait = client.calls.take(1, self.clock())
        if wait:
            raise _too_many(f"anonymous callers may send {self.limits.per_minute} requests a minute per address; "
                            "retry later, or send a token", wait)  # fmt: skip
        client.in_flight += 1
        try:
            yield
        finally:
            client.in_flight -= 1

    def reserve(self, address: str, estimate_nano_usd: int, param: str) -> None:
        """Checks one call's estimate against the per-call cap and takes it from the client's hour."""
        cap = self.limits.max_reservation_nano_usd
        if estimate_nano_usd > cap:
            raise invalid_argument(
                "ANONYMOUS_RESERVATION_TOO_LARGE",
                f"an anonymous request may reserve at most {cap:,} nano-USD; this one would reserve "
                f"{estimate_nano_usd:,}: lower {param}, or send a token",
                param,
            )
        wait = self._client(address).spend.take(estimate_nano_usd, self.clock())
        if wait:
            raise _too_many(f"anonymous callers may spend {self.limits.per_hour_nano_usd:,} nano-USD an hour per "
                            "address; retry later, or send a token", wait)  # fmt: skip
