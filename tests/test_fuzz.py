"""Fuzzers against the live stack (real Envoy, services and the demo's reference
provider): Schemathesis holds every REST operation to gen/openapi.json, and a
Hypothesis test throws hostile OpenAI bodies at the inference routes.

Both are derandomized with a bounded number of examples, so a run is
repeatable; docs/development.md "The OpenAPI document and the fuzzers" states the numbers.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from helpers.clients import http_client
from helpers.stacks import NEVER_USED_UP_BUDGETS, Stacks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, Response
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup, as_reported_failure
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.hypothesis import canonical_form_cache, canonical_strategy_cache
from schemathesis.generation.hypothesis.builder import MissingPathParameters

# What `schema.parametrize()` calls per operation at collection (Schemathesis 4.32.5, pinned)
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.python._constants.orchestrator import make_constants_value_source
from schemathesis.transport.requests import ManagedCookiesSession

from services.common.errors import ANTHROPIC_PATH_REGEX
from services.demo import CHAT_MODEL, IMAGE_MODEL, ORG, PROVIDER, TASK_MODELS, USER, AdminApi
from services.launcher import Stack

pytestmark = pytest.mark.e2e  # starts processes

SNAKE_CASE = r"[a-z][a-z0-9]*(_[a-z0-9]+)*"
MAX_MESSAGE = 1_000  # characters: an error message repeats a short prefix of the input, never all of it


DOCUMENT = Path(__file__).resolve().parent.parent / "gen" / "openapi.json"
PATHS = json.loads(DOCUMENT.read_text())["paths"]
# Every operation of the document, as Schemathesis labels it: read without Schemathesis, for collection.
OPERATIONS = [f"{method.upper()} {path}" for path, methods in PATHS.items() for method in methods]
SCHEMA_EXAMPLES = 8  # per operation, per caller, per generation mode
BODY_EXAMPLES = 150  # per inference route in the hostile-body test
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)

# The hub task routes take raw audio: sent as the bytes Schemathesis makes for a binary body.
schemathesis.serializer.alias("audio/wav", "application/octet-stream")
schema = schemathesis.openapi.from_path(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=SCHEMA_EXAMPLES,
    deterministic=True,
    database="none",
)
# Schemathesis keeps the canonical forms and strategies it builds for schemas in two caches of 128 entries;
# the document's operations need about 270 and 410, so a worker built evicted ones again (a body whose
# patterns repeat up to 100,000 times takes up to a second to canonicalize): about a sixth of generation's
# CPU. A strategy kept draws what the same strategy built again draws: the cases are the same.
for cache in (canonical_form_cache, canonical_strategy_cache):
    cache._maxsize = 1_024
# A method the document does not list gets Envoy's 404 "no such route" (the
# transcoder matches method and path together), not the 405 Schemathesis expects.
schema.config.phases.coverage.unexpected_methods = set()
FUZZ_SETTINGS = settings(
    max_examples=SCHEMA_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Live:
    """The running demo stack and two callers: the operator and a plain user."""

    stack: Stack
    base_url: str
    tokens: dict[str, str]
    # Kept for the module, for tests that send one request each: a request reuses a connection
    # instead of building a client (an SSL context each) and a connection.
    session: ManagedCookiesSession  # Schemathesis' calls, as either caller
    admin: httpx.Client

    def http(self, who: str) -> httpx.Client:
        return client(self.base_url, self.tokens[who])


def client(base_url: str, token: str) -> httpx.Client:
    return http_client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture(scope="module")
def live(stacks: Stacks) -> Iterator[Live]:
    # Past a large-body budget (edge/limits.py) Envoy holds a request for a second before its
    # 429, and Schemathesis' coverage phase sends 33 MB bodies (an array of the longest strings allowed)
    # that the demo's 24 MiB client budget refuses: the fuzz stack has the tests' budgets, never used
    # up. The throttle is tested in tests/test_edge_refusal.py, not here.
    with stacks.demo("fuzz", **NEVER_USED_UP_BUDGETS) as (stack, base_url, admin_token, _), ExitStack() as closing:
        tokens = {"admin": admin_token, "user": AdminApi(base_url, admin_token).new_token(USER, "fuzz")}
        session = closing.enter_context(ManagedCookiesSession())  # drops cookies between requests
        session.trust_env = False  # no proxy or .netrc for the loopback stack: reading them was a per-request cost
        yield Live(stack, base_url, tokens, session, closing.enter_context(client(base_url, admin_token)))


@pytest.fixture(scope="module", autouse=True)
def fewer_collections() -> Iterator[None]:
    """Generating cases allocates millions of short-lived objects: at Python's default threshold (700) the
    collector ran about 2,500 times over the module, a tenth of generation's CPU; at 10,000, a quarter as often."""
    thresholds = gc.get_threshold()
    gc.set_threshold(10_000, *thresholds[1:])
    yield
    gc.set_threshold(*thresholds)


def error_of(response: Response | httpx.Response) -> dict:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def send(case: schemathesis.Case, live: Live, who: str) -> Response:
    authorization = {"Authorization": f"Bearer {live.tokens[who]}"}
    return case.call(base_url=live.base_url, session=live.session, headers=authorization, timeout=60)


def answer_as_the_document_says(case: schemathesis.Case, live: Live, who: str) -> None:
    """Sends one case as `who` and holds the answer to every check."""
    case.validate_response(send(case, live, who), checks=CHECKS)


@FUZZ_SETTINGS
def fuzz_operation(case: schemathesis.Case, live: Live, who: str, sent: list[schemathesis.Case]) -> None:
    sent.append(case)
    answer_as_the_document_says(case, live, who)


def operation_test(label: str) -> Callable[..., None]:
    """The Hypothesis test Schemathesis builds for one operation (its coverage phase's cases, then
    fuzzing), as `schema.parametrize()` builds it, but on the operation's first test rather than at
    collection, where every xdist worker would build all 74 to run a third of them."""
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    feedback = FeedbackSources(constants_value_source=make_constants_value_source(schema))
    test = build_operation_test(
        config=schema.config, operation=operation, test_func=fuzz_operation, given_kwargs={}, feedback=feedback
    )
    if missing := MissingPathParameters.get(test):
        raise missing
    return test


# operation -> every case its first caller's Hypothesis run sent. The run is derandomized (its seed
# is the test function's digest, with no example database) and nothing it draws depends on an answer,
# so the other caller's run would draw the very same cases (compared case by case for both callers):
# the other caller sends these again instead of drawing them anew (once: they are dropped then, with the
# coverage phase's 33 MB bodies). A failed run records nothing.
SENT: dict[str, list[schemathesis.Case]] = {}


@pytest.mark.slow
@pytest.mark.parametrize("who", ["admin", "user"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_answers_as_the_document_says(operation: str, live: Live, who: str) -> None:
    try:
        if operation in SENT:
            for case in SENT.pop(operation):  # then let them go: a worker held every case to the end
                answer_as_the_document_says(case, live, who)
            return
        sent: list[schemathesis.Case] = []
        operation_test(operation)(live=live, who=who, sent=sent)
        SENT[operation] = sent
    except FailureGroup as failures:  # every failed check, as Schemathesis' pytest plugin reports them
        raise as_reported_failure(failures) from None


# Hostile values for the fields the Router reads: numbers past every range
# (1e18, 2**70), wrong types, long and odd strings, NUL, huge provider lists.
HOSTILE_SCALARS = st.one_of(
    st.sampled_from([10**18, 2**70, -(2**70), -1, 0, 1e18, 1e308, -0.0, 0.5, True, False, None]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.sampled_from(["x" * 20_000, "\x00", "é\u202e\U0001f600\x00", "1e18", " ", "", "null"]),
    st.just(" ".join(f"p{i}" for i in range(3_000))),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
CHAT_FIELDS = [
    "model",
    "messages",
    "stream",
    "provider",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "tools",
    "response_format",
    "stream_options",
    "logprobs",
    "top_logprobs",
]
IMAGE_FIELDS = ["model", "prompt", "provider", "n", "size", "response_format"]
EMBEDDING_FIELDS = ["model", "input", "provider", "encoding_format", "dimensions", "max_price"]
SPEECH_FIELDS = ["model", "input", "provider", "voice", "response_format", "speed", "stream_format"]
HUB_PARAMETER_NAMES = st.sampled_from(["candidate_labels", "top_k", "num_frames"])
HUB_PARAMETERS = st.dictionaries(HUB_PARAMETER_NAMES, HOSTILE_SCALARS, max_size=3)


def hub_body(inputs: object) -> st.SearchStrategy[dict]:
    """A hub task request whose inputs and parameters may be hostile."""
    return st.fixed_dictionaries({"inputs": st.one_of(st.just(inputs), HOSTILE_SCALARS), "parameters": HUB_PARAMETERS})


RESPONSES_FIELDS = ["model", "input", "instructions", "stream", "provider", "max_output_tokens", "tools", "tool_choice",
                    "text", "reasoning", "store", "previous_response_id", "temperature", "top_logprobs"]  # fmt: skip
MESSAGES_FIELDS = ["model", "messages", "system", "stream", "provider", "max_tokens", "tools", "tool_choice",
                   "stop_sequences", "temperature", "top_k", "metadata"]  # fmt: skip
COMPLETIONS_FIELDS = ["model", "prompt", "stream", "provider", "max_tokens", "n", "stop", "echo", "best_of", "seed"]


def hostile_body(base: dict, fields: list[str]) -> st.SearchStrategy[dict]:
    """A valid body with some fields replaced by hostile values (or dropped)."""
    changes = st.dictionaries(st.sampled_from(fields), HOSTILE_SCALARS, min_size=1, max_size=4)
    return changes.map(lambda changed: {**base, **changed})


INFERENCE_ROUTES = {
    "/v1/chat/completions": hostile_body(
        {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}, CHAT_FIELDS
    ),
    "/v1/images/generations": hostile_body({"model": IMAGE_MODEL, "prompt": "a cat", "n": 1}, IMAGE_FIELDS),
    f"/models/{IMAGE_MODEL}": st.fixed_dictionaries(
        {
            "inputs": st.one_of(st.just("a cat"), HOSTILE_SCALARS),
            "parameters": st.dictionaries(st.sampled_from(["width", "height", "seed"]), HOSTILE_SCALARS, max_size=3),
        }
    ),
    "/demo/v1/chat/completions": hostile_body(
        {"model": "reference-chat", "messages": [{"role": "user", "content": "hi"}]}, CHAT_FIELDS
    ),
    "/v1/embeddings": hostile_body({"model": TASK_MODELS["feature-extraction"], "input": ["a", "b"]}, EMBEDDING_FIELDS),
    "/v1/audio/speech": hostile_body(
        {"model": TASK_MODELS["text-to-speech"], "input": "hi", "voice": "alloy"}, SPEECH_FIELDS
    ),
    f"/models/{TASK_MODELS['feature-extraction']}": hub_body(["a", "b"]),
    f"/models/{TASK_MODELS['question-answering']}": hub_body({"question": "who?", "context": "Alice"}),
    f"/models/{TASK_MODELS['zero-shot-classification']}": hub_body("a goal"),
    f"/models/{TASK_MODELS['automatic-speech-recognition']}": hub_body("UklGRg=="),
    "/v1/responses": hostile_body({"model": CHAT_MODEL, "input": "hi", "max_output_tokens": 8}, RESPONSES_FIELDS),
    "/v1/messages": hostile_body(
        {"model": CHAT_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}, MESSAGES_FIELDS
    ),
    "/v1/completions": hostile_body({"model": CHAT_MODEL, "prompt": "hi", "max_tokens": 8}, COMPLETIONS_FIELDS),
}


def assert_anthropic_error(answer: httpx.Response) -> None:
    """Anthropic's error shape, on its Messages API route."""
    body = answer.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, answer.text[:300]
    assert re.fullmatch(SNAKE_CASE, body["error"]["type"]), body
    assert len(body["error"]["message"]) < MAX_MESSAGE, body["error"]["message"][:120]


def assert_client_error_or_success(answer: httpx.Response, body: dict) -> None:
    """A 2xx, or a 4xx in OpenAI's error shape (Anthropic's on its route); never a 5xx (the provider is up)."""
    shown = json.dumps(body)[:300]
    assert answer.status_code < 500, f"{answer.status_code} for {shown}: {answer.text[:300]}"
    if answer.status_code < 400:
        return
    if re.fullmatch(ANTHROPIC_PATH_REGEX, answer.request.url.raw_path.decode()):
        assert_anthropic_error(answer)
        return
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, answer.text[:300]
    assert isinstance(error["code"], str) and error["code"].islower(), error
    assert len(error["message"]) < MAX_MESSAGE, f"the message echoes the input: {error['message'][:120]}"


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(INFERENCE_ROUTES))
def test_hostile_inference_bodies_get_4xx_never_5xx(route: str, live: Live) -> None:
    with live.http("user") as http:

        @settings(
            max_examples=BODY_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=INFERENCE_ROUTES[route])
        def check(body: dict) -> None:
            answer = http.post(route, content=json.dumps(body, allow_nan=False))
            assert_client_error_or_success(answer, body)

        check()


# Path parameters Schemathesis does not send: bytes that are not UTF-8 once
# decoded, NUL, dot segments, and ids far past any documented length.
# "long" stays under gRPC's 8 KiB soft metadata limit, past which a service
# rejects at random; "huge" is past its 16 KiB hard limit, rejected always.
HOSTILE_SEGMENTS = {"not_utf8": "%ff", "nul": "%00", "dot_dot": "..", "long": "x" * 4_000, "huge": "x" * 20_000}
OPERATIONS_WITH_PATH_PARAMETERS = sorted(
    (method.upper(), path) for path, methods in PATHS.items() for method in methods if "{" in path
)


def hostile_path(template: str, segment: str) -> str:
    return re.sub(r"\{[^}]+\}", segment, template)


@pytest.mark.slow
@pytest.mark.parametrize("segment", sorted(HOSTILE_SEGMENTS))
@pytest.mark.parametrize(("method", "template"), OPERATIONS_WITH_PATH_PARAMETERS)
def test_hostile_path_parameters_get_openai_shaped_4xx(method: str, template: str, segment: str, live: Live) -> None:
    answer = live.admin.request(method, hostile_path(template, HOSTILE_SEGMENTS[segment]), json={})
    assert answer.status_code < 500, answer.text[:300]
    if answer.status_code >= 400 and re.fullmatch(ANTHROPIC_PATH_REGEX, template):
        assert_anthropic_error(answer)
    elif answer.status_code >= 400:
        error = error_of(answer)
        assert set(error) == {"message", "type", "param", "code"}, answer.text[:300]
        assert re.fullmatch(SNAKE_CASE, error["code"] or ""), error
        assert len(error["message"]) < MAX_MESSAGE, error["message"][:120]


# Real resources of the demo, which random ids rarely hit: their 200 answers
# are held to the document too. (path template, path parameters, query, caller)
REAL_RESOURCES = [
    ("/v1/models", {}, {}, "user"),
    ("/v1/models/{id}", {"id": CHAT_MODEL}, {}, "user"),
    ("/v1/providers", {}, {}, "user"),
    ("/v1/providers/{id}", {"id": PROVIDER}, {}, "user"),
    ("/v1/billing/usage", {}, {"account": USER}, "user"),
    ("/v1/billing/accounts/{account}", {"account": USER}, {}, "user"),
    ("/api/partners/{provider}/models", {"provider": PROVIDER}, {}, "user"),
    ("/api/partners/{provider}/health", {"provider": PROVIDER}, {}, "user"),
    ("/admin/v1/providerHealth", {}, {}, "admin"),
    ("/admin/v1/providers", {}, {}, "admin"),
    ("/admin/v1/providers/{provider}", {"provider": PROVIDER}, {}, "admin"),
    ("/admin/v1/models/{id}", {"id": IMAGE_MODEL}, {}, "admin"),
    ("/admin/v1/users/{user}", {"user": USER}, {}, "admin"),
    ("/admin/v1/orgs/{org}", {"org": ORG}, {}, "admin"),
    ("/admin/v1/modelAliases", {}, {}, "admin"),
    ("/admin/v1/modelAliases/{name}", {"name": "flux"}, {}, "admin"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "parameters", "query", "who"), REAL_RESOURCES)
def test_real_resources_answer_200_as_the_document_says(
    path: str, parameters: dict, query: dict, who: str, live: Live
) -> None:
    case = schema[path]["GET"].Case(path_parameters=parameters, query=query)
    response = send(case, live, who)
    assert response.status_code == 200, response.text[:300]
    case.validate_response(response, checks=list(CHECKS))
