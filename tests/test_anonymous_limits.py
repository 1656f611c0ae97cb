"""Anonymous mode's per-client limits (issue 24, finding 6), through Envoy: clients are told apart
by the address they connect from (127.0.0.x here; a forged x-forwarded-for changes nothing), and
one client holding its calls in flight, asking for absurd reservations or sending too fast is
refused while every other client is served from the shared anonymous account."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers.billing import serving_in_thread
from helpers.clients import http_client
from helpers.money import GOOD, HELD, MockProvider

from services.demo import AdminApi
from services.router.anonymous import AnonymousLimits

pytestmark = pytest.mark.slow

ACCOUNT = "anon-" + uuid.uuid4().hex[:6]
DEFAULTS = AnonymousLimits()
PER_MINUTE = 8  # lowered so a test reaches it quickly
PRICE = {"providerModel": "upstream-model", "requestNanoUsd": 1_000, "inputTokenNanoUsd": 10, "outputTokenNanoUsd": 20}


@pytest.fixture(scope="module")
def world(make_stack) -> Iterator[tuple[object, str, MockProvider]]:
    sb = make_stack(SWITCHBOARD_ANONYMOUS_ACCOUNT=ACCOUNT, SWITCHBOARD_ANONYMOUS_REQUESTS_PER_MINUTE=str(PER_MINUTE))
    with serving_in_thread(MockProvider()) as provider:
        api = AdminApi(sb.base_url, sb.admin_token)
        tag = uuid.uuid4().hex[:8]
        org, model, provider_id = f"org-{tag}", f"org-{tag}/chat", f"p1-{tag}"
        api.call("POST", "/admin/v1/orgs", {"name": org})
        entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
        api.ensure_provider({"id": provider_id, "org": org, "base_url": f"{provider.url}/{tag}/p1",
                             "api_key": "sk-mock-0123456789", "tasks": ["conversational"]})  # fmt: skip
        api.call("PUT", f"/admin/v1/providers/{provider_id}/prices", {"prices": [PRICE]})
        api.add_mappings(provider_id, [{"task": "conversational", "hfModel": model,
                                        "providerModel": "upstream-model", "status": "live"}])  # fmt: skip
        api.fund_anonymous(ACCOUNT)
        try:
            yield sb, model, provider
        finally:
            provider.release.set()


def client(sb, host: str, **headers: str) -> httpx.Client:
    """A tokenless client connecting from `host` (any 127.0.0.0/8 address reaches Envoy's)."""
    transport = httpx.HTTPTransport(local_address=host)
    return http_client(base_url=sb.base_url, transport=transport, timeout=60, headers=headers)


def chat(model: str, behaviour: str = GOOD, **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": behaviour}], **extra}


def test_a_client_holding_its_calls_in_flight_blocks_only_itself(world) -> None:
    sb, model, provider = world
    provider.release.clear()
    hog = [client(sb, "127.0.0.2", **{"x-forwarded-for": f"10.0.0.{n}"}) for n in range(DEFAULTS.max_concurrent + 1)]
    streams = [h.stream("POST", "/v1/chat/completions", json=chat(model, HELD, stream=True)) for h in hog]
    held = [s.__enter__() for s in streams[: DEFAULTS.max_concurrent]]
    try:
        assert [answer.status_code for answer in held] == [200] * DEFAULTS.max_concurrent
        refused = hog[-1].post("/v1/chat/completions", json=chat(model))  # another forged address: same client
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded", refused.text
        with client(sb, "127.0.0.3") as other:
            assert other.post("/v1/chat/completions", json=chat(model)).status_code == 200
    finally:
        provider.release.set()
        for stream in streams[: DEFAULTS.max_concurrent]:
            stream.__exit__(None, None, None)
        for h in hog:
            h.close()


@pytest.mark.parametrize(
    ("host", "max_tokens"), [("127.0.1.1", 1_000_000), ("127.0.1.2", 999_999), ("127.0.1.3", 999_950)]
)
def test_an_absurd_reservation_is_refused_and_blocks_no_one(world, host: str, max_tokens: int) -> None:
    """Past the per-call cap (20,000,000 nano-USD: 1,000,000 output tokens at 20 nano-USD here)."""
    sb, model, _ = world
    with client(sb, host) as greedy, client(sb, "127.0.0.5") as other:
        body = chat(model, max_tokens=max_tokens)
        # At most as many at once as a client may have in flight: more would be refused for that (a 429)
        # whenever the Router awaits something between admitting a call and refusing its reservation.
        with ThreadPoolExecutor(DEFAULTS.max_concurrent) as pool:
            answers = list(pool.map(lambda _: greedy.post("/v1/chat/completions", json=body), range(4)))
        for answer in answers:
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert (error["code"], error["param"]) == ("anonymous_reservation_too_large", "max_tokens")
        assert other.post("/v1/chat/completions", json=chat(model, max_tokens=100)).status_code == 200


def test_a_fast_client_is_slowed_down_and_others_are_served(world) -> None:
    sb, model, _ = world
    with client(sb, "127.0.0.6") as fast, client(sb, "127.0.0.7") as other:
        served = [fast.post("/v1/chat/completions", json=chat(model)) for _ in range(PER_MINUTE)]
        assert [a.status_code for a in served] == [200] * PER_MINUTE
        # The bucket refills a call every 60/PER_MINUTE s: a machine slow enough to take that long over
        # the calls above has refilled one or two, served before the bucket is empty and refuses.
        for _ in range(PER_MINUTE):
            answer = fast.post("/v1/chat/completions", json=chat(model))
            if answer.status_code != 200:
                break
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1, answer.text
        assert other.post("/v1/chat/completions", json=chat(model)).status_code == 200


def test_a_client_spends_at_most_its_hourly_share(world) -> None:
    """Each call reserves its estimate from the client's hour: a client sending large (allowed)
    requests reaches its share, another client is still served."""
    sb, model, _ = world
    max_tokens = DEFAULTS.max_reservation_nano_usd // 20 - 100  # just under the per-call cap
    with client(sb, "127.0.0.8") as spender, client(sb, "127.0.0.9") as other:
        answers = [spender.post("/v1/chat/completions", json=chat(model, max_tokens=max_tokens)) for _ in range(7)]
        statuses = [a.status_code for a in answers]
        share = DEFAULTS.per_hour_nano_usd // DEFAULTS.max_reservation_nano_usd  # calls of about the cap an hour
        assert statuses[:share] == [200] * share and 429 in statuses[share:], statuses
        assert other.post("/v1/chat/completions", json=chat(model)).status_code == 200
