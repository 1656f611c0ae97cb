"""Numbers from providers are bounded before they are believed (issue 24, finding 1), through the
real stack: a provider reports whatever usage the request's last message says (hypothesis draws
valid, absurd and invalid counts), for unary and streamed answers, on a priced model without a
cost API (so every record stays pending at its estimate). What the ledger records is the report
when the request could have produced it, else the documented "no usage" fallback; the usage
reports always answer 200; the account's month total equals its ledger recounted."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers.upstream import JsonHandler, serving
from helpers.waiting import eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.pricing import INT64_MAX
from services.demo import AdminApi
from services.router.usage_bounds import MAX_CONTEXT_TOKENS

pytestmark = pytest.mark.slow

PRICE = {"providerModel": "upstream-model", "requestNanoUsd": 1_000, "inputTokenNanoUsd": 10, "outputTokenNanoUsd": 20}
IMAGE_PRICE = {"providerModel": "upstream-image", "imageNanoUsd": 1_000_000}
MAX_TOKENS = 50
CONTEXT = 4_000  # the mapping's context length
WORDS = ("one", " two", " three")


class UsageEcho(JsonHandler):
    """Answers well, reporting as usage the JSON object the last message holds."""

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/images/generations"):  # as many images as the prompt says
            images = [{"b64_json": "iVBORw0KGgo="}] * int(request["prompt"])
            self.send(200, json.dumps({"created": 1, "data": images}).encode())
            return
        usage = json.loads(request["messages"][-1]["content"])
        answer = {"id": "c1", "object": "chat.completion", "model": "upstream-model"}
        if not request.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            self.send(200, json.dumps({**answer, "choices": [choice], "usage": usage}).encode())
            return
        chunk = {**answer, "object": "chat.completion.chunk"}
        events = [{**chunk, "choices": [{"index": 0, "delta": {"content": w}}]} for w in WORDS]
        events.append({**chunk, "choices": [], "usage": usage})
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send(200, body, "text/event-stream")


@contextmanager
def usage_world(sb) -> Iterator[tuple[object, str, str, str]]:
    """(stack, caller's token, caller, model) with a priced provider model of known context, and
    a priced image model (`model` + "-image")."""
    with serving(UsageEcho) as url:
        api = AdminApi(sb.base_url, sb.admin_token)
        tag = uuid.uuid4().hex[:8]
        org, user, model, provider = f"org-{tag}", f"user-{tag}", f"org-{tag}/chat", f"echo-{tag}"
        api.ensure_member(org, user)
        entries = [{"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]},
                   {"id": f"{model}-image", "pipeline_tag": "text-to-image", "tags": ["text-to-image"]}]  # fmt: skip
        api.call("POST", "/admin/v1/models:batchUpsert", {"models": entries})
        api.ensure_provider({"id": provider, "org": org, "base_url": url, "api_key": "sk-" + uuid.uuid4().hex,
                             "tasks": ["conversational", "text-to-image"]})  # fmt: skip
        api.call("PUT", f"/admin/v1/providers/{provider}/prices", {"prices": [PRICE, IMAGE_PRICE]})
        mappings = [{"task": "conversational", "hfModel": model, "providerModel": "upstream-model", "status": "live",
                     "contextLength": CONTEXT},
                    {"task": "text-to-image", "hfModel": f"{model}-image", "providerModel": "upstream-image",
                     "status": "live"}]  # fmt: skip
        api.add_mappings(provider, mappings)
        yield sb, api.new_token(user), user, model


@pytest.fixture(scope="module")
def world(stack) -> Iterator[tuple[object, str, str, str]]:
    """On the session's shared stack: the world's names are its own."""
    with usage_world(stack) as built:
        yield built


@pytest.fixture(scope="module")
def pg_world(postgres_stack) -> Iterator[tuple[object, str, str, str]]:
    """The same world on the worker's stack whose databases are PostgreSQL (tests/conftest.py)."""
    with usage_world(postgres_stack) as built:
        yield built


COUNT = st.one_of(
    st.integers(0, MAX_TOKENS),  # believable
    st.integers(CONTEXT + 1, 2**70),  # past the context, past int64
    st.sampled_from([INT64_MAX, 2**63, 2**62 + 1, MAX_CONTEXT_TOKENS + 1, -1, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),  # 1e30, 3.0, -0.5
    st.sampled_from(["12", "1e30", "", True, [], {}]),
)


def expected(usage: dict, stream: bool, body_bytes: int) -> tuple[int, int, int]:
    """(input tokens, output tokens, estimate) as docs/money.md says the ledger records them."""
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    whole = [v for v in (prompt, completion) if isinstance(v, int) and not isinstance(v, bool)]
    if len(whole) == 2 and 0 <= prompt <= CONTEXT and 0 <= completion <= MAX_TOKENS:
        input_tokens, output_tokens = prompt, completion
    elif stream:  # the no-usage fallback of a stream: request bytes / 4, the content events sent
        input_tokens, output_tokens = body_bytes // 4 + 1, len(WORDS)
    else:  # of a unary answer: the reservation's estimate, no tokens
        return 0, 0, 1_000 + 10 * (body_bytes // 4 + 1) + 20 * MAX_TOKENS
    return input_tokens, output_tokens, 1_000 + 10 * input_tokens + 20 * output_tokens


def ledger_row(sb, request_id: str) -> tuple[int, int, int] | None:
    """(input tokens, output tokens, estimate) of a final (not provisional) record."""
    query = (
        "SELECT input_tokens, output_tokens, estimated_nano_usd FROM ledger WHERE request_id = ? AND NOT provisional"
    )
    with sqlite3.connect(f"file:{sb.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
        return db.execute(query, (request_id,)).fetchone()


def recount(sb, account: str) -> int:
    query = "SELECT estimated_nano_usd, cost_nano_usd, state FROM ledger WHERE account = ?"
    with sqlite3.connect(f"file:{sb.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
        return sum(cost if state == "settled" else estimate for estimate, cost, state in db.execute(query, (account,)))


def reports_answer(sb, account: str) -> dict:
    """The usage reports (never a 5xx) and the account, read as its owner's operator."""
    with sb.admin() as admin:
        for path, params in (("/v1/billing/usage", {"account": account}),
                             (f"/v1/billing/accounts/{account}/dailyUsage", {"days": 90})):  # fmt: skip
            answer = admin.get(path, params=params)
            assert answer.status_code == 200, answer.text
        answer = admin.get(f"/v1/billing/accounts/{account}")
        assert answer.status_code == 200, answer.text
        return answer.json()


@settings(max_examples=40, derandomize=True, suppress_health_check=list(HealthCheck))
@given(prompt=COUNT, completion=COUNT, stream=st.booleans())
def test_usage_is_believed_only_when_the_request_could_have_produced_it(world, prompt, completion, stream) -> None:
    sb, token, user, model = world
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    body = {"model": model, "max_tokens": MAX_TOKENS, "stream": stream,
            "messages": [{"role": "user", "content": json.dumps(usage)}]}  # fmt: skip
    data = json.dumps(body).encode()
    with sb.http(token) as http:
        answer = http.post("/v1/chat/completions", content=data, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text

    request_id = answer.headers["x-request-id"]
    eventually(lambda: ledger_row(sb, request_id) is not None, "the record")
    assert ledger_row(sb, request_id) == expected(usage, stream, len(data))
    account = reports_answer(sb, user)
    assert int(account["spentNanoUsdExact"]) == recount(sb, user)


def test_absurd_usage_on_many_records_leaves_the_reports_and_the_total_whole(world) -> None:
    """Finding 1's case: several answers reporting near 2^63 tokens, on a provider without a cost
    API: the books hold bounded estimates, the reports answer, the month total is the recount."""
    sb, token, user, model = world
    absurd = {"prompt_tokens": 1, "completion_tokens": INT64_MAX - 1}
    body = {"model": model, "messages": [{"role": "user", "content": json.dumps(absurd)}]}
    with sb.http(token) as http:
        ids = [http.post("/v1/chat/completions", json=body).headers["x-request-id"] for _ in range(3)]

    eventually(lambda: all(ledger_row(sb, i) for i in ids), "the records")
    assert all(ledger_row(sb, i)[2] < 10**9 for i in ids)  # the fallback estimate, not $9.2 billion
    account = reports_answer(sb, user)
    assert int(account["spentNanoUsdExact"]) == recount(sb, user)


@settings(max_examples=8, derandomize=True, suppress_health_check=list(HealthCheck))
@given(answered=st.integers(1, 60), asked=st.integers(1, 10))
def test_images_are_billed_at_most_as_many_as_asked_for(world, answered: int, asked: int) -> None:
    sb, token, _, model = world
    with sb.http(token) as http:
        answer = http.post(
            "/v1/images/generations", json={"model": f"{model}-image", "prompt": str(answered), "n": asked}
        )
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    eventually(lambda: ledger_row(sb, request_id) is not None, "the record")
    assert ledger_row(sb, request_id)[2] == 1_000_000 * min(answered, asked)


def test_absurd_usage_leaves_the_reports_and_the_total_whole_on_postgres(pg_world) -> None:
    """Absurd and believable reports mixed, on PostgreSQL: the reports answer, and the running month
    total equals what the usage report sums from the ledger rows."""
    sb, token, user, model = pg_world
    counts = [(1, INT64_MAX), (2**63, 1), (3, 7), ("1e30", -1)]
    reports = [{"prompt_tokens": prompt, "completion_tokens": completion} for prompt, completion in counts]
    with sb.http(token) as http:
        for usage in reports * 2:
            body = {"model": model, "messages": [{"role": "user", "content": json.dumps(usage)}]}
            assert http.post("/v1/chat/completions", json=body).status_code == 200

    def month() -> dict:
        with sb.admin() as admin:
            answer = admin.get("/v1/billing/usage", params={"account": user})
        assert answer.status_code == 200, answer.text
        return answer.json()

    eventually(lambda: month().get("requests") == len(reports) * 2, "every record")
    report = month()
    account = reports_answer(sb, user)
    assert int(account["spentNanoUsdExact"]) == int(report["settledNanoUsdExact"]) + int(report["pendingNanoUsdExact"])
    assert int(account["spentNanoUsdExact"]) < 10**9  # the fallback's estimates, not $9.2 billion each


@settings(max_examples=30, derandomize=True, suppress_health_check=list(HealthCheck))
@given(year=st.integers(0, 9999), month=st.integers(0, 13))
def test_a_usage_report_of_any_period_answers_200_or_400(world, year: int, month: int) -> None:
    sb, _, user, _ = world
    for period in (f"{year:04d}-{month:02d}", "9999-12", "0000-01"):
        with sb.admin() as admin:
            answer = admin.get("/v1/billing/usage", params={"account": user, "period": period})
        assert answer.status_code in (200, 400), (period, answer.text)
        if answer.status_code == 400:
            assert answer.json()["error"]["code"] == "invalid_period"
