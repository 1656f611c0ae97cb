"""Billing with the Registry and real cost APIs: reconciliation against the
reference provider and a garbage-answering stub through the admin REST API,
SIGKILL in the middle of a reconciliation run, and who may see what."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import orjson
from helpers.billing import (
    GARBAGE,
    VALID,
    CostApiStub,
    by_provider,
    garbage_answer,
    reconcile,
    record,
    reference_provider,
    register_provider,
    serving_in_thread,
    store,
    unique,
    usage,
)

DEADLINE_SECONDS = 60.0


def test_reconciliation_with_the_reference_providers_cost_api(stack) -> None:
    from services.reference_provider.app import Knobs, State

    account, good, wrong_token = unique("user"), unique("ref"), unique("ref-badtoken")
    records = [record(account, good, estimate=5_000) for _ in range(40)]
    refused = [record(account, wrong_token, estimate=7_000) for _ in range(3)]
    with reference_provider("sekrit-billing-token") as cost_url, stack.admin() as admin:
        register_provider(admin, good, cost_url, "Bearer sekrit-billing-token")
        register_provider(admin, wrong_token, cost_url, "Bearer not-the-token-of-this-provider")
        store(stack, records + refused)
        counts = reconcile(stack)
    oracle = State(Knobs())
    lines = by_provider(usage(stack, account))
    assert lines[good]["settledNanoUsd"] == sum(oracle.cost_of(r.provider_request_id) for r in records)
    assert (lines[good]["pendingNanoUsd"], lines[good]["requests"]) == (0, 40)
    # A 401 from the cost API changes nothing: still pending at the estimate.
    assert (lines[wrong_token]["settledNanoUsd"], lines[wrong_token]["pendingNanoUsd"]) == (0, 21_000)
    assert counts["pending"] >= 3
    assert "not-the-token-of-this-provider" not in stack.logs() and "sekrit-billing-token" not in stack.logs()


def test_garbage_from_a_cost_api_leaves_exact_totals_and_pending_entries(stack) -> None:
    account, provider = unique("user"), unique("junk")
    kinds = [*VALID, *GARBAGE, "missing-cost", "left-out"]
    records = {kind: record(account, provider, estimate=2_000 + i) for i, kind in enumerate(kinds)}
    names = {r.provider_request_id: kind for kind, r in records.items()}

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        return 200, garbage_answer(ids, names)

    with serving_in_thread(CostApiStub(answer)) as stub, stack.admin() as admin:
        register_provider(admin, provider, stub.url, "Bearer junk-token-for-a-junk-api")
        store(stack, list(records.values()))
        reconcile(stack)
        reconcile(stack)  # asking again changes nothing
    report = usage(stack, account)
    assert report["settledNanoUsd"] == sum(VALID.values())
    assert report["pendingNanoUsd"] == sum(r.estimated_nano_usd for k, r in records.items() if k not in VALID)
    assert report["requests"] == len(kinds)
    logs = stack.logs()
    for kind in [*GARBAGE, "missing-cost"]:
        assert records[kind].provider_request_id in logs, kind  # each rejected entry is logged by id
    assert "junk-token-for-a-junk-api" not in logs


def _expected_cost(provider_request_id: str) -> int:
    return 10_000 + sum(provider_request_id.encode()) * 7


def test_sigkill_in_the_middle_of_reconciliation_settles_every_cost_exactly_once(make_stack) -> None:
    sb = make_stack(
        SWITCHBOARD_RECONCILE_INTERVAL_SECONDS="0.3",
        SWITCHBOARD_RECONCILE_BATCH_SIZE="20",
        SWITCHBOARD_RECONCILE_CONCURRENCY="2",
        SWITCHBOARD_COST_API_TIMEOUT_SECONDS="2",  # the killed Billing's claims run out 7 s later
    )
    account, provider, total = unique("user"), unique("kill"), 1_000
    records = [record(account, provider, estimate=3_000) for _ in range(total)]
    answered: list[str] = []
    resumed = threading.Event()  # after a quarter of the ids, answers wait until Billing was killed

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        if len(answered) >= total // 4:
            await asyncio.to_thread(resumed.wait, DEADLINE_SECONDS)
        answered.extend(ids)
        return 200, orjson.dumps({"requests": [{"requestId": i, "costNanoUsd": _expected_cost(i)} for i in ids]})

    with serving_in_thread(CostApiStub(answer)) as stub:
        with sb.admin() as admin:
            register_provider(admin, provider, stub.url, "Bearer kill-token-for-a-dying-api")
        store(sb, records)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(answered) < total // 4:  # the background passes are well under way
            assert time.monotonic() < deadline, f"only {len(answered)} ids asked"
            time.sleep(0.01)
        billing = next(c for c in sb.stack.children if c.name == "billing")
        os.kill(billing.process.pid, signal.SIGKILL)
        billing.process.wait(timeout=10)
        asked_before_kill = len(answered)
        sb.stack.children.remove(billing)
        sb.stack.start("billing", billing.argv, billing.ready)
        sb.stack.wait_ready()
        resumed.set()
        while (report := usage(sb, account))["pendingNanoUsd"]:
            assert time.monotonic() < deadline, report
            reconcile(sb)
    assert asked_before_kill < total  # the kill did land in the middle of the run
    assert report["requests"] == total
    assert report["settledNanoUsd"] == sum(_expected_cost(r.provider_request_id) for r in records)
    assert report["unpriced"] == []


def _user_with_token(admin, name: str) -> str:
    assert admin.post("/admin/v1/users", json={"name": name}).status_code == 200
    answer = admin.post(f"/admin/v1/users/{name}/tokens", json={"name": "billing-test"})
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def test_users_see_their_own_usage_and_org_admins_their_orgs(stack) -> None:
    alice, bob, org = unique("alice"), unique("bob"), unique("acme")
    with stack.admin() as admin:
        alice_token, bob_token = _user_with_token(admin, alice), _user_with_token(admin, bob)
        assert admin.post("/admin/v1/orgs", json={"name": org}).status_code == 200
        for user, role in ((alice, "admin"), (bob, "write")):
            answer = admin.put(f"/admin/v1/orgs/{org}/members/{user}", json={"role": role})
            assert answer.status_code == 200, answer.text
    store(stack, [record(alice, estimate=11), record(org, estimate=22), record(org, estimate=33)])

    with stack.http(alice_token) as http:
        own = http.get("/v1/billing/usage", params={"account": alice})
        assert (own.status_code, own.json()["pendingNanoUsd"]) == (200, 11)
        of_org = http.get("/v1/billing/usage", params={"account": org})
        assert (of_org.status_code, of_org.json()["pendingNanoUsd"]) == (200, 55)
        assert http.get("/v1/billing/usage", params={"account": bob}).status_code == 403
        answer = http.put(f"/v1/billing/accounts/{org}/limit", json={"limitNanoUsd": 1_000})
        assert (answer.status_code, answer.json()["limitNanoUsd"]) == (200, 1_000)
        assert (
            http.put(f"/admin/v1/billing/accounts/{org}/credits", json={"includedCreditsNanoUsd": 9}).status_code == 403
        )
    with stack.http(bob_token) as http:
        denied = http.get("/v1/billing/usage", params={"account": org})
        assert denied.status_code == 403
        assert denied.json()["error"]["type"] == "permission_error"
        assert http.put(f"/v1/billing/accounts/{org}/limit", json={"limitNanoUsd": 1}).status_code == 403
        assert http.get(f"/v1/billing/accounts/{org}").status_code == 403
        answer = http.put(f"/v1/billing/accounts/{bob}/limit", json={"limitNanoUsd": 5})
        assert (answer.status_code, answer.json()["limitNanoUsd"]) == (200, 5)
    with stack.http("sb-not-a-real-token") as http:
        assert http.get("/v1/billing/usage", params={"account": bob}).status_code == 401


def test_a_revoked_token_is_refused(stack) -> None:
    user = unique("carol")
    with stack.admin() as admin:
        token = _user_with_token(admin, user)
        with stack.http(token) as http:
            assert http.get(f"/v1/billing/accounts/{user}").status_code == 200
            assert admin.delete(f"/admin/v1/users/{user}/tokens/billing-test").status_code == 200
            deadline = time.monotonic() + DEADLINE_SECONDS  # the cache keeps answers at most 1 s
            while (status := http.get(f"/v1/billing/accounts/{user}").status_code) == 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    assert status == 401
