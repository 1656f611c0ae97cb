"""Two Billing replicas on one database race reservations for one account: single and batched
calls to both at once never grant more than the budget holds (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.billing import ledger_database, unique
from helpers.postgres import postgres_database
from helpers.waiting import eventually
from sqlalchemy import func, select
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc

from services.billing import ledger
from services.billing.storage import Lease
from services.common.service import channel
from services.launcher import Stack, free_port

pytestmark = pytest.mark.slow

ESTIMATE = 1_000
CREDITS, LIMIT = 2_000, 8_500  # room for 10 reservations of ESTIMATE, not 11
RESERVATIONS = 60
DEADLINE_SECONDS = 60  # readiness and the replicas' reload of the limited accounts, not a latency


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('reservations') / 'billing.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[str]]]:
    """Two Billing processes on the database (no Registry: reservations never ask it)."""
    data_dir = Path(tmp_path_factory.mktemp("replicas"))
    env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(data_dir), "SWITCHBOARD_DATABASE_URL": database_url,
           "SWITCHBOARD_SERVICE_CREDENTIAL": "sb-service-" + secrets.token_urlsafe(16),
           "SWITCHBOARD_ADMIN_TOKEN": "sb-admin-" + secrets.token_urlsafe(16),
           "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "3600"}  # fmt: skip
    stack = Stack(data_dir, env)
    addresses = []
    try:
        for number in (0, 1):  # one at a time: both would run the migrations at once
            port = free_port()
            stack.start_service(f"billing-{number}", port, "--registry-address", f"127.0.0.1:{free_port()}",
                                module="billing")  # fmt: skip
            stack.wait_ready(DEADLINE_SECONDS)
            addresses.append(f"127.0.0.1:{port}")
        yield stack, addresses
    finally:
        stack.stop()


async def wait_limited(stubs: list[billing_grpc.LedgerServiceStub], account: str) -> None:
    """Until both replicas refuse what no budget holds: each reloaded the accounts with a limit."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    for stub in stubs:
        ask = billing_pb.ReserveSpendRequest(request_id=unique("probe"), account=account, estimated_nano_usd=10**15)
        while (await stub.ReserveSpend(ask, timeout=10)).granted:
            assert time.monotonic() < deadline, "a replica never learned of the limit"
            await asyncio.sleep(0.1)


def reservation(account: str) -> billing_pb.ReserveSpendRequest:
    return billing_pb.ReserveSpendRequest(request_id=unique("req"), account=account, estimated_nano_usd=ESTIMATE)


async def test_two_replicas_racing_reservations_never_overspend(database_url: str, replicas) -> None:
    stack, addresses = replicas
    account = unique("raced")
    with ledger_database(database_url) as db:
        await db.run(lambda s: ledger.update_account(s, account, included_credits_nano_usd=CREDITS,
                                                    limit_nano_usd=LIMIT))  # fmt: skip
        credential = stack.env["SWITCHBOARD_SERVICE_CREDENTIAL"]
        channels = [channel(address, credential) for address in addresses]
        stubs = [billing_grpc.LedgerServiceStub(ch) for ch in channels]
        try:
            await wait_limited(stubs, account)
            asks = [reservation(account) for _ in range(RESERVATIONS)]
            # Half of each replica's share one at a time, the other half in batches of five.
            singles = [stubs[i % 2].ReserveSpend(ask, timeout=30) for i, ask in enumerate(asks[:30])]
            batched = [
                billing_pb.BatchReserveSpendRequest(requests=asks[start : start + 5]) for start in range(30, 60, 5)
            ]
            batches = [stubs[i % 2].BatchReserveSpend(batch, timeout=30) for i, batch in enumerate(batched)]
            answers = await asyncio.gather(*singles, *batches)
        finally:
            for ch in channels:
                await ch.close()
        outcomes = [*answers[:30], *(response for batch in answers[30:] for response in batch.responses)]
        assert len(outcomes) == RESERVATIONS
        assert sum(o.granted for o in outcomes) == 10  # 10 * 1,000 <= 10,500 < 11 * 1,000
        assert all(o.remaining_nano_usd >= 0 for o in outcomes)
        reserved = await db.run(lambda s: ledger.reserved_spend(s, account, time.time()))
    assert reserved == 10 * ESTIMATE <= CREDITS + LIMIT


LEASED_BUDGET = 400 * ESTIMATE  # large enough for slices (book.WANT_ASKS asks each, a quarter of the room at most)


def leases_in_force(db, account: str) -> int:
    """Leases of the account either replica may still grant from."""
    query = select(func.count()).select_from(Lease).where(Lease.account == account, Lease.valid_until > time.time())
    return db.read(lambda s: s.connection().execute(query).scalar_one())


async def test_two_replicas_granting_from_leased_slices_never_overspend(database_url: str, replicas) -> None:
    """Both replicas lease slices of a large budget and decide in memory while 600 reservations race
    through them; none is granted over the budget, and once the slices went back (idle), the
    database decides the rest: exactly the 400 the budget holds were granted in all."""
    stack, addresses = replicas
    account = unique("leased")
    with ledger_database(database_url) as db:
        await db.run(lambda s: ledger.update_account(s, account, limit_nano_usd=LEASED_BUDGET))
        credential = stack.env["SWITCHBOARD_SERVICE_CREDENTIAL"]
        channels = [channel(address, credential) for address in addresses]
        stubs = [billing_grpc.LedgerServiceStub(ch) for ch in channels]
        try:
            await wait_limited(stubs, account)
            batches = [billing_pb.BatchReserveSpendRequest(requests=[reservation(account) for _ in range(10)])
                       for _ in range(60)]  # fmt: skip
            answers = await asyncio.gather(
                *(stubs[i % 2].BatchReserveSpend(b, timeout=30) for i, b in enumerate(batches))
            )
            outcomes = [response for answer in answers for response in answer.responses]
            assert all(o.remaining_nano_usd >= 0 for o in outcomes)
            granted = sum(o.granted for o in outcomes)
            assert 0 < granted <= LEASED_BUDGET // ESTIMATE
            reserved = await db.run(lambda s: ledger.reserved_spend(s, account, time.time()))
            assert granted * ESTIMATE <= reserved <= LEASED_BUDGET  # grants, and slices' free parts
            while True:  # the rest, one at a time, once no slice can grant: the database decides
                eventually(lambda: leases_in_force(db, account) == 0, "the slices to go back", seconds=60)
                more = 0
                for i in itertools.count():
                    if not (await stubs[i % 2].ReserveSpend(reservation(account), timeout=30)).granted:
                        break
                    more += 1
                granted += more
                if not more:
                    break
        finally:
            for ch in channels:
                await ch.close()
    assert granted == LEASED_BUDGET // ESTIMATE
