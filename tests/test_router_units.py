"""The Router's pure parts: selection rules, circuit breaker, measurements, SSE rewriting, ledger spool."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
from pathlib import Path

import grpc
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.errors import ApiError
from services.common.pricing import Price
from services.common.secrets import Redactor
from services.launcher import free_port
from services.router import selection
from services.router import server as router_server
from services.router import spool as spool_module
from services.router.anonymous import Bucket, client_address
from services.router.breaker import Breakers
from services.router.config import RouterSettings
from services.router.directory import ProviderEntry
from services.router.measurements import Measurements
from services.router.spool import Spool
from services.router.upstream import DONE, Usage, provider_error, sse_event
from services.router.usage_bounds import MAX_CONTEXT_TOKENS, believable, believed_images


def entry(name: str, rank: int = 0, prices: dict[str, Price] | None = None) -> ProviderEntry:
    headers = {"Authorization": "Bearer sk-secret-1"}
    return ProviderEntry(
        name, f"http://{name}", headers, "Inference-Id", ("conversational",), rank, prices or {},
        redactor=Redactor(["sk-secret-1"]),
    )  # fmt: skip


KNOWN = {name: entry(name, rank) for rank, name in enumerate(["alpha", "beta", "gamma"])}


def routes(*names: str) -> list[selection.Route]:
    return [selection.Route(KNOWN[n], f"{n}-model") for n in names]


def test_policy_and_provider_suffixes_are_parsed_off_hub_model_ids() -> None:
    assert selection.parse_model("org/m", None, KNOWN) == selection.Selection("org/m")
    assert selection.parse_model("org/m:cheapest", None, KNOWN) == selection.Selection("org/m", (), "cheapest")
    assert selection.parse_model("org/m:beta", None, KNOWN) == selection.Selection("org/m", ("beta",))
    assert selection.parse_model("org/m:", None, KNOWN) == selection.Selection("org/m:")
    with pytest.raises(ApiError) as unknown:  # no model id has a colon: the suffix names a provider
        selection.parse_model("org/m:v2", None, KNOWN)
    assert (unknown.value.http_status, unknown.value.code, unknown.value.param) == (400, "unknown_provider", "model")
    assert selection.parse_model("org/m", "gamma  alpha", KNOWN).providers == ("gamma", "alpha")


def test_unknown_provider_ids_are_a_400_naming_them() -> None:
    with pytest.raises(ApiError) as error:
        selection.parse_providers("alpha nope zap", KNOWN)
    assert error.value.http_status == 400 and "nope, zap" in error.value.message and error.value.param == "provider"


def test_requested_providers_keep_the_callers_order_and_say_why_when_none_serves() -> None:
    chosen = selection.pick_requested(routes("alpha", "beta"), ("beta", "alpha"), [], "org/m")
    assert [r.provider.id for r in chosen] == ["beta", "alpha"]
    staging = internal_pb.Exclusion(provider="gamma", reason="staging only", status="staging")
    considered = selection.considered_exclusions([staging], ("gamma", "beta"), routes("alpha"))
    with pytest.raises(ApiError) as error:
        selection.pick_requested(routes("alpha"), ("gamma", "beta"), considered, "org/m")
    assert error.value.http_status == 404 and "gamma: staging only" in error.value.message
    assert "beta: no mapping for this model" in error.value.message
    assert error.value.metadata == {"excluded_gamma": "staging", "excluded_beta": "not_served"}


def test_fastest_ranks_measured_by_throughput_then_unmeasured_by_default_rank() -> None:
    measured = {("gamma", "gamma-model"): (50.0, 100.0), ("beta", "beta-model"): (80.0, 300.0)}
    ordered = selection.order_routes(
        routes("alpha", "beta", "gamma"), "fastest", "conversational", lambda p, m: measured.get((p, m))
    )
    assert [r.provider.id for r in ordered] == ["beta", "gamma", "alpha"]


def test_cheapest_and_preferred_orders() -> None:
    priced = {
        "alpha": entry("alpha", 0, {"alpha-model": Price(input_token_nano_usd=50)}),
        "beta": entry("beta", 1, {"beta-model": Price(input_token_nano_usd=10)}),
        "gamma": entry("gamma", 2),
    }
    candidates = [selection.Route(priced[n], f"{n}-model") for n in ("alpha", "beta", "gamma")]
    cheapest = selection.order_routes(candidates, "cheapest", "conversational", lambda *_: None)
    assert [r.provider.id for r in cheapest] == ["beta", "alpha", "gamma"]
    preferred = selection.order_routes(routes("alpha", "beta", "gamma"), "preferred", "x", lambda *_: None, ["gamma"])
    assert [r.provider.id for r in preferred] == ["gamma", "alpha", "beta"]


def test_a_tag_filter_candidate_carries_the_adapter_weights_url() -> None:
    candidate = internal_pb.Candidate(provider="alpha", provider_model="base", status="live")
    candidate.adapter.CopyFrom(
        internal_pb.Adapter(type="lora", model="u/lora", weights_path="w.safetensors", base_provider_model="base-v1")
    )
    (route,) = selection.routes_of([candidate], KNOWN, "https://hub.test/")
    assert route.provider_model == "base-v1"
    assert route.lora_path == "https://hub.test/u/lora/resolve/main/w.safetensors"


def test_no_candidate_explains_why() -> None:
    missing = selection.explain_no_candidate(internal_pb.ResolveModelResponse(model_found=False), "a/b", "x")
    assert missing.http_status == 404 and missing.code == "model_not_found"
    staging = internal_pb.ResolveModelResponse(model_found=True)
    staging.exclusions.add(provider="alpha", reason="staging only")
    assert "alpha: staging only" in selection.explain_no_candidate(staging, "a/b", "x").message


def test_breaker_opens_after_consecutive_failures_then_lets_one_probe_through() -> None:
    now = [0.0]
    breakers = Breakers(threshold=2, cooldown=10, clock=lambda: now[0])
    breakers.failed("alpha")
    assert breakers.allow("alpha")
    breakers.failed("alpha")
    assert not breakers.allow("alpha")
    now[0] = 11
    assert breakers.allow("alpha") and not breakers.allow("alpha")  # one probe only
    breakers.failed("alpha")
    assert not breakers.allow("alpha")
    now[0] = 22
    assert breakers.allow("alpha")
    breakers.succeeded("alpha")
    assert breakers.allow("alpha") and breakers.allow("alpha")


def test_measurements_are_moving_averages() -> None:
    measurements = Measurements()
    assert measurements.ranking("alpha", "m") is None
    measurements.observe("alpha", "m", 0.1, 100, 1.0)
    measurements.observe("alpha", "m", 0.2, 200, 1.0)
    stats = measurements.get("alpha", "m")
    assert stats is not None and 100 < stats.tokens_per_second < 200 and 100 < stats.ttft_ms < 200


def test_sse_events_get_the_hub_model_id_and_report_usage() -> None:
    usage = Usage()
    line = b'data: {"model":"provider-m","choices":[{"delta":{}}],"usage":{"prompt_tokens":3,"completion_tokens":7}}'
    event = sse_event(line, "org/m", usage, hide_usage=False)
    assert event.endswith(b"\n\n") and orjson.loads(event[6:])["model"] == "org/m"
    assert (usage.input_tokens, usage.output_tokens, usage.chunks, usage.reported) == (3, 7, 1, True)
    assert sse_event(b"data: [DONE]", "org/m", usage, hide_usage=False) is DONE
    assert sse_event(b": keep-alive", "org/m", usage, hide_usage=False) == b": keep-alive\n"


def test_usage_the_caller_did_not_ask_for_is_counted_but_not_passed_on() -> None:
    usage = Usage()
    usage_only = b'data: {"model":"p","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":5}}'
    assert sse_event(usage_only, "org/m", usage, hide_usage=True) == b""
    assert (usage.input_tokens, usage.output_tokens, usage.chunks) == (2, 5, 0)
    content = b'data: {"model":"p","choices":[{"delta":{"content":"x"}}],"usage":null}'
    assert "usage" not in orjson.loads(sse_event(content, "org/m", usage, hide_usage=True)[6:])
    shown = orjson.loads(sse_event(usage_only, "org/m", Usage(), hide_usage=False)[6:])
    assert shown["usage"] == {"prompt_tokens": 2, "completion_tokens": 5}


@given(value=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63), st.floats(), st.booleans(), st.text()))
def test_a_count_that_is_no_int64_makes_the_reported_usage_invalid(value) -> None:
    usage = Usage()
    usage.take({"usage": {"prompt_tokens": 3, "completion_tokens": value}})
    assert usage.reported and usage.invalid


@given(
    prompt=st.integers(0, 2**63 - 1),
    completion=st.integers(0, 2**63 - 1),
    max_tokens=st.one_of(st.none(), st.integers(1, 10**6)),
    n=st.integers(1, 8),
    context=st.one_of(st.none(), st.integers(1, 10**6)),
)
def test_usage_is_believed_within_what_the_request_could_produce(prompt, completion, max_tokens, n, context) -> None:
    payload = {"n": n, **({"max_tokens": max_tokens} if max_tokens else {})}
    candidate = internal_pb.Candidate(**({"context_length": context} if context else {}))
    usage = Usage(input_tokens=prompt, output_tokens=completion, reported=True)
    window = context or MAX_CONTEXT_TOKENS
    most_output = min(max_tokens or window, window) * n
    assert believable(usage, payload, candidate, "p") == (prompt <= window and completion <= most_output)


def test_provider_errors_keep_their_status_and_message_but_never_credentials_problems() -> None:
    route = selection.Route(KNOWN["alpha"], "m")
    body = orjson.dumps({"error": {"message": "bad temperature", "param": "temperature", "code": "bad"}})
    error = provider_error(route, 422, body)
    assert (error.http_status, error.param) == (422, "temperature") and "bad temperature" in error.message
    assert (error.grpc_code, error.reason, error.code) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNPROCESSABLE_ENTITY",
        "bad",
    )
    conflict = provider_error(route, 409, b"{}")
    assert (conflict.grpc_code, conflict.http_status, conflict.code) == (grpc.StatusCode.ABORTED, 409, "conflict")
    assert provider_error(route, 401, b"{}").http_status == 502
    echoed = provider_error(route, 400, orjson.dumps({"error": {"message": "bad key sk-secret-1"}}))
    assert echoed.message == "provider alpha: bad key [redacted]"


async def test_ledger_keeps_records_spooled_while_billing_is_unreachable(tmp_path) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        ledger = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 2, send_timeout=0.2)
        ledger.load_spool()
        for i in range(5):
            ledger.record(billing_pb.LedgerRecord(request_id=f"r{i}", provider="alpha"))
        await ledger.spool_pending()
        assert not await ledger.send_spooled()
    files = sorted(tmp_path.glob("*.batch"))
    assert len(files) == 3
    ids = [r.request_id for f in files for r in billing_pb.RecordRequestsRequest.FromString(f.read_bytes()).records]
    assert ids == [f"r{i}" for i in range(5)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        restarted = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 2)
        restarted.load_spool()  # a new process picks up what the last one could not send
        assert [path for path, _ in restarted._spooled] == files


async def test_ledger_records_survive_a_router_crash_before_their_flush(tmp_path) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        crashed = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 100)
        crashed.load_spool()
        for i in range(3):
            crashed.record(billing_pb.LedgerRecord(request_id=f"c{i}", provider="alpha"))
        # the process dies here: no flush, no close; only the journal holds the records
        restarted = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 100)
        restarted.load_spool()
        assert [r.request_id for r in restarted.pending] == ["c0", "c1", "c2"]
        restarted.record(billing_pb.LedgerRecord(request_id="c3", provider="alpha"))
        await restarted.spool_pending()
    batches = [billing_pb.RecordRequestsRequest.FromString(f.read_bytes()) for f in sorted(tmp_path.glob("*.batch"))]
    assert [r.request_id for b in batches for r in b.records] == ["c0", "c1", "c2", "c3"]
    assert list(tmp_path.glob("*.sealed")) == []


async def test_a_record_made_while_the_spool_closes_is_spooled_too(tmp_path) -> None:
    loop = asyncio.get_running_loop()

    class RecordedDuringClose(Spool):
        """Its first spool file's write lets a stream end meanwhile (its record made on the loop)."""

        late = True

        def _write(self, batch: billing_pb.RecordRequestsRequest) -> Path:
            if self.late:
                self.late = False

                async def record_late() -> None:
                    self.record(billing_pb.LedgerRecord(request_id="late", provider="alpha"))

                asyncio.run_coroutine_threadsafe(record_late(), loop).result(10)
            return super()._write(batch)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        spool = RecordedDuringClose(billing_grpc.LedgerServiceStub(channel), tmp_path, 100, send_timeout=0.2)
        spool.load_spool()
        spool.record(billing_pb.LedgerRecord(request_id="first", provider="alpha"))
        await spool.close()  # Billing unreachable: everything stays spooled
    batches = [billing_pb.RecordRequestsRequest.FromString(f.read_bytes()) for f in sorted(tmp_path.glob("*.batch"))]
    assert [r.request_id for b in batches for r in b.records] == ["first", "late"]


async def test_journals_of_several_crashes_are_resent_oldest_first(tmp_path) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        for i in range(3):  # each run records one request, then dies before its flush
            crashed = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 100)
            crashed.load_spool()
            crashed.record(billing_pb.LedgerRecord(request_id=f"c{i}", provider="alpha"))
        restarted = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 100)
        restarted.load_spool()
        assert [r.request_id for r in restarted.pending] == ["c0", "c1", "c2"]


class _Ledger(billing_grpc.LedgerServiceServicer):
    """Billing's ledger as the spool sees it: stores each call's request ids, or refuses a call
    holding any of the refused ids ("*": every call)."""

    def __init__(self, refused: frozenset[str]) -> None:
        self.calls: list[list[str]] = []
        self.refused = refused

    async def RecordRequests(self, request, context):
        ids = [r.request_id for r in request.records]
        if "*" in self.refused or self.refused.intersection(ids):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")
        self.calls.append(ids)
        return billing_pb.RecordRequestsResponse(stored_count=len(request.records))


def _ids(first: int, last: int) -> list[str]:
    return [f"r{i}" for i in range(first, last + 1)]


@pytest.mark.parametrize(
    ("refused", "calls", "rejected"),
    [
        (frozenset(), [_ids(0, 4), _ids(5, 7), _ids(8, 10)], 0),  # 2+2+1 fit one call; 3+3 do not
        (frozenset("*"), [], 5),  # every file of a refused call is kept aside, none dropped
        # a refused merged call is resent file by file: only the file Billing refuses is kept aside
        (frozenset({"r4"}), [_ids(0, 1), _ids(2, 3), _ids(5, 7), _ids(8, 10)], 1),
    ],
)
async def test_spooled_batches_go_to_billing_merged_up_to_a_batch_oldest_first(
    tmp_path, refused: frozenset[str], calls: list[list[str]], rejected: int
) -> None:
    ledger, server = _Ledger(refused), grpc.aio.server()
    billing_grpc.add_LedgerServiceServicer_to_server(ledger, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            spool = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 5)
            spool.load_spool()
            ids = iter(range(100))
            for size in (2, 2, 1, 3, 3):  # spool files of these many records, one flush each
                for _ in range(size):
                    spool.record(billing_pb.LedgerRecord(request_id=f"r{next(ids)}"))
                await spool.spool_pending()
            assert len(list(tmp_path.glob("*.batch"))) == 5
            assert await spool.send_spooled()
    finally:
        await server.stop(None)
    assert ledger.calls == calls
    assert len(list(tmp_path.glob("*.rejected"))) == rejected
    assert list(tmp_path.glob("*.batch")) == []


@pytest.mark.parametrize("failure", ["error", "short"])
async def test_a_journal_write_that_fails_loses_no_record(tmp_path, monkeypatch, failure: str) -> None:
    """A full disk: the record is queued all the same (spooled at the next flush), no frame follows a
    torn one, and a restart reads every whole record the journal holds."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        spool = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 100)
        spool.load_spool()
        spool.record(billing_pb.LedgerRecord(request_id="whole"))
        write = os.write

        def full_disk(fd: int, data: bytes) -> int:
            if failure == "error":
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(fd, data[: len(data) // 2])

        monkeypatch.setattr(spool_module.os, "write", full_disk)
        spool.record(billing_pb.LedgerRecord(request_id="torn"))
        monkeypatch.setattr(spool_module.os, "write", write)
        spool.record(billing_pb.LedgerRecord(request_id="after"))
        assert [r.request_id for r in spool.pending] == ["whole", "torn", "after"]
        await spool.spool_pending()
        batches = [billing_pb.RecordRequestsRequest.FromString(f.read_bytes()) for f in tmp_path.glob("*.batch")]
        assert sorted(r.request_id for b in batches for r in b.records) == ["after", "torn", "whole"]
        restarted = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 100)
        restarted.load_spool()  # the journal's whole records again: Billing stores a request id once
        assert [r.request_id for r in restarted.pending] == ["whole"]


async def test_a_batch_billing_rejected_is_sent_again_later_while_records_flow(tmp_path, monkeypatch) -> None:
    """E.g. an older Billing, during an upgrade, that does not know a record's unit yet: once a newer
    one answers, the batch kept aside is stored without waiting for the Router's next start."""
    monkeypatch.setattr(spool_module, "REJECTED_RESEND_SECONDS", 0.0)
    ledger, server = _Ledger(frozenset("*")), grpc.aio.server()
    billing_grpc.add_LedgerServiceServicer_to_server(ledger, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            spool = Spool(billing_grpc.LedgerServiceStub(channel), tmp_path, 5, send_interval=0.0)
            spool.load_spool()
            spool.record(billing_pb.LedgerRecord(request_id="r0"))
            await spool._flush()
            assert len(list(tmp_path.glob("*.rejected"))) == 1
            ledger.refused = frozenset()  # the newer Billing
            spool.record(billing_pb.LedgerRecord(request_id="r1"))
            await spool._flush()
    finally:
        await server.stop(None)
    assert sorted(id_ for call in ledger.calls for id_ in call) == ["r0", "r1"]
    assert list(tmp_path.glob("*.rejected")) == list(tmp_path.glob("*.batch")) == []


@given(forged=st.lists(st.ip_addresses().map(str), max_size=3), peer=st.ip_addresses(v=4).map(str))
def test_an_anonymous_client_is_the_address_envoy_appended_last(forged: list[str], peer: str) -> None:
    assert client_address(", ".join([*forged, peer]), "ipv4:10.9.9.9:4000") == peer
    assert client_address("", f"ipv4:{peer}:4000") == peer


@given(claimed=st.text(max_size=20).filter(lambda text: "," not in text))
def test_a_forwarded_entry_that_is_no_address_counts_as_the_peer(claimed: str) -> None:
    """Envoy's entry is always an address: any other text was sent by a caller reaching the Router itself."""
    try:
        ipaddress.ip_address(claimed.strip())
    except ValueError:
        assert client_address(claimed, "ipv4:10.9.9.9:4000") == "10.9.9.9"


def test_an_ipv6_client_counts_as_its_64() -> None:
    assert (
        client_address("2001:db8:1:2:3:4:5:6", "") == client_address("2001:db8:1:2:ffff::1", "") == "2001:db8:1:2::/64"
    )
    assert client_address("", "ipv6:[2001:db8::7]:443") == "2001:db8::/64"


def test_a_bucket_refills_with_time_and_says_how_long_to_wait() -> None:
    bucket = Bucket(capacity=10, period=60)
    assert [bucket.take(4, 0.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(12.0)]  # 2 left, 4 wanted: 2 more
    assert bucket.take(4, 12.0) == 0.0


@given(answered=st.integers(0, 10_000), asked=st.one_of(st.none(), st.integers(1, 10)))
def test_images_are_billed_at_most_as_many_as_asked_for(answered: int, asked: int | None) -> None:
    payload = {} if asked is None else {"n": asked}
    assert believed_images(answered, payload, "p") == min(answered, asked or 1)


@given(st.integers(min_value=1, max_value=100_000))
def test_a_price_exactly_at_max_price_passes(nano_usd_per_token: int) -> None:
    """max_price is in USD per million tokens; a price at it (as floats write it) is not over it."""
    ceiling = selection.PriceCeiling(input=nano_usd_per_token / 1000, output=nano_usd_per_token / 1000)
    price = Price(input_token_nano_usd=nano_usd_per_token, output_token_nano_usd=nano_usd_per_token)
    assert ceiling.passed_by(price) == ""
    assert ceiling.passed_by(Price(input_token_nano_usd=nano_usd_per_token + 1)) != ""


async def test_a_router_whose_spool_directory_cannot_be_made_fails_its_start(tmp_path: Path) -> None:
    """It must not serve answers it could not bill: the spool is loaded before the server starts."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    settings = RouterSettings(
        data_dir=blocked, port=free_port(), service_credential="c" * 32,
        registry_address="127.0.0.1:9", billing_address="127.0.0.1:9",
    )  # fmt: skip
    with pytest.raises(NotADirectoryError):  # at once, not a server that would have served (TimeoutError)
        await asyncio.wait_for(router_server.serve(settings), 10)
