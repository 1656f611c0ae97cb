"""The ledger on the real stack: idempotent batched ingestion over gRPC,
reservations racing a spending limit, usage and accounts over REST."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from helpers.billing import record, unique
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc


def ledger_stub(channel: grpc.Channel) -> billing_grpc.LedgerServiceStub:
    return billing_grpc.LedgerServiceStub(channel)


def usage(stack, account: str, period: str | None = None) -> dict:
    with stack.admin() as http:
        answer = http.get("/v1/billing/usage", params={"account": account, **({"period": period} if period else {})})
    assert answer.status_code == 200, answer.text
    return answer.json()


def set_account(stack, account: str, *, credits: int = 0, limit: int = 0) -> None:
    with stack.admin() as http:
        answer = http.put(f"/admin/v1/billing/accounts/{account}/credits", json={"includedCreditsNanoUsd": credits})
        assert answer.status_code == 200, answer.text
        answer = http.put(f"/v1/billing/accounts/{account}/limit", json={"limitNanoUsd": limit})
        assert answer.status_code == 200, answer.text


def test_records_are_stored_once_and_unpriced_without_provider_id(stack) -> None:
    account = unique("user")
    priced = [record(account, estimate=100 * (i + 1)) for i in range(5)]
    without_id = record(account, provider_request_id="", estimate=0)
    batch = [*priced, without_id, priced[0]]  # a duplicate inside the batch
    with stack.channel("billing") as channel:
        first = ledger_stub(channel).RecordRequests(billing_pb.RecordRequestsRequest(records=batch), timeout=10)
        again = ledger_stub(channel).RecordRequests(billing_pb.RecordRequestsRequest(records=batch), timeout=10)
    assert (first.stored_count, again.stored_count) == (6, 0)
    report = usage(stack, account)
    assert report["requests"] == 6
    assert report["settledNanoUsd"] == 0
    (unpriced,) = report["unpriced"]
    assert unpriced["requestId"] == without_id.request_id
    assert "request id" in unpriced["reason"]
    assert unpriced["estimatedNanoUsd"] > 0  # a zero estimate gets the task's default: never charged zero
    assert report["pendingNanoUsd"] == 1500 + unpriced["estimatedNanoUsd"]
    assert report["byModel"][0]["model"] == "org/model"
    assert report["byProvider"][0]["provider"] == "prov"


def test_batches_over_ten_thousand_are_refused_and_a_record_without_id_never_sinks_its_batch(stack) -> None:
    account = unique("user")
    with stack.channel("billing") as channel:
        stub = ledger_stub(channel)
        too_many = [record(account) for _ in range(10_001)]
        with pytest.raises(grpc.RpcError) as error:
            stub.RecordRequests(billing_pb.RecordRequestsRequest(records=too_many), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        no_id = record(account)
        no_id.request_id = ""
        kept = stub.RecordRequests(billing_pb.RecordRequestsRequest(records=[record(account), no_id]), timeout=10)
        assert kept.stored_count == 1
        full = stub.RecordRequests(billing_pb.RecordRequestsRequest(records=too_many[:10_000]), timeout=30)
    assert full.stored_count == 10_000
    assert '"ledger records without a request id skipped"' in stack.logs()


async def test_fifty_concurrent_reservations_race_a_spending_limit(stack) -> None:
    """Credits 2,000 + limit 8,500 with an estimate of 1,000 each: exactly 10 of 50 pass."""
    account, estimate = unique("user"), 1_000
    set_account(stack, account, credits=2_000, limit=8_500)
    async with stack.aio_channel("billing") as channel:
        stub = billing_grpc.LedgerServiceStub(channel)
        ids = [unique("req") for _ in range(50)]
        answers = await asyncio.gather(
            *(
                stub.ReserveSpend(
                    billing_pb.ReserveSpendRequest(request_id=i, account=account, estimated_nano_usd=estimate),
                    timeout=30,
                )
                for i in ids
            )
        )
        granted = [i for i, a in zip(ids, answers, strict=True) if a.granted]
        assert len(granted) == 10  # 10 * 1,000 <= 10,500 < 11 * 1,000: never over the budget
        assert all(a.remaining_nano_usd >= 0 for a in answers)
        assert min(a.remaining_nano_usd for a in answers if a.granted) == 500

        # The served requests replace their reservations by pending entries; two were never served.
        served = [record(account, estimate=estimate) for _ in granted[:8]]
        for entry, request_id in zip(served, granted, strict=False):
            entry.request_id = request_id
        await stub.RecordRequests(billing_pb.RecordRequestsRequest(records=served), timeout=10)
        for request_id in granted[8:]:
            await stub.ReleaseReservation(billing_pb.ReleaseReservationRequest(request_id=request_id), timeout=10)
        more = await stub.ReserveSpend(
            billing_pb.ReserveSpendRequest(request_id=unique("req"), account=account, estimated_nano_usd=2_500),
            timeout=10,
        )
        refused = await stub.ReserveSpend(
            billing_pb.ReserveSpendRequest(request_id=unique("req"), account=account, estimated_nano_usd=1),
            timeout=10,
        )
    assert (more.granted, more.remaining_nano_usd) == (True, 0)
    assert (refused.granted, refused.remaining_nano_usd) == (False, 0)
    with stack.admin() as http:
        state = http.get(f"/v1/billing/accounts/{account}").json()
    assert state == {
        "account": account,
        "includedCreditsNanoUsd": 2000,
        "limitNanoUsd": 8500,
        "spentNanoUsd": 8000,
        "reservedNanoUsd": 2500,
        "includedCreditsNanoUsdExact": "2000",
        "limitNanoUsdExact": "8500",
        "spentNanoUsdExact": "8000",
        "reservedNanoUsdExact": "2500",
    }


def test_accounts_without_limit_are_unlimited(stack) -> None:
    account = unique("user")
    with stack.channel("billing") as channel:
        answer = ledger_stub(channel).ReserveSpend(
            billing_pb.ReserveSpendRequest(request_id=unique("req"), account=account, estimated_nano_usd=10**15),
            timeout=10,
        )
    assert (answer.granted, answer.remaining_nano_usd) == (True, -1)


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "26-01", "2026-01-01", "abcd-ef"])
def test_bad_period_is_a_400(stack, period: str) -> None:
    with stack.admin() as http:
        answer = http.get("/v1/billing/usage", params={"account": "someone", "period": period})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "period"


def test_usage_of_another_month_is_empty(stack) -> None:
    report = usage(stack, unique("user"), "2020-02")
    assert report["period"] == "2020-02"
    assert report["requests"] == 0
    assert report["byModel"] == []


def test_billing_calls_need_a_token_and_admin_calls_the_admin_token(stack) -> None:
    with stack.http() as http:
        assert http.get("/v1/billing/usage", params={"account": "x"}).status_code == 401
        assert http.get("/v1/billing/accounts/x").status_code == 401
    with stack.http("not-the-admin-token") as http:  # an unknown token: 401, as on every route
        assert http.post("/admin/v1/billing:reconcile", json={}).status_code == 401
        answer = http.put("/admin/v1/billing/accounts/x/credits", json={"includedCreditsNanoUsd": 5})
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "authentication_error"
    with stack.admin() as http:
        answer = http.put("/v1/billing/accounts/x/limit", json={"limitNanoUsd": -1})
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "limitNanoUsd"


def test_usage_over_grpc_through_envoy(stack) -> None:
    account = unique("user")
    with stack.channel("billing") as channel:
        ledger_stub(channel).RecordRequests(
            billing_pb.RecordRequestsRequest(records=[record(account, estimate=42)]), timeout=10
        )
    with stack.channel("envoy") as channel:
        report = billing_grpc.BillingServiceStub(channel).GetUsage(
            billing_pb.GetUsageRequest(account=account),
            metadata=[("authorization", f"Bearer {stack.admin_token}")],
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as error:
            billing_grpc.BillingServiceStub(channel).GetUsage(billing_pb.GetUsageRequest(account=account), timeout=10)
    assert (report.requests, report.pending_nano_usd, report.by_model[0].model) == (1, 42, "org/model")
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
