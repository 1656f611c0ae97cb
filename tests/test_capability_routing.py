"""Capability-aware routing through real Envoy: a request with `tools`, a `json_schema`
`response_format`, a long prompt or a `max_price` goes only to provider models that fit it
(unknown support fits, after known support, unless `provider.require_parameters`), and
when none does the 4xx names every provider considered with every reason it was left out.

The stack opens a provider's breaker at its first failure (and keeps it open for the whole
run), so a test opens one with a single failing request. A mapping's `error` status (which
health probes set) is written as the probes would: the row and its change record, which the
Registry applies like another replica's write.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2
from google.rpc import error_details_pb2, status_pb2
from helpers.registry import unique
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, create_engine
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.common.errors import DETAILS_TRAILER
from services.demo import AdminApi, reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, free_port, http_ok
from services.registry.storage import queries
from services.registry.storage.tables import ChangeRow

PROVIDER_KEY = "ref-key-" + uuid.uuid4().hex
MESSAGES = [{"role": "user", "content": "say hello"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "place", "schema": {"type": "object"}}}
SHORT_CONTEXT, LONG_CONTEXT = 8, 1_000_000  # tokens: every request body is longer / shorter
CHEAP, DEAR = 100, 5_000  # nano-USD per input token: 0.1 and 5 USD per million
CEILING = {"input": 1.0}  # USD per million input tokens
DEADLINE_SECONDS = 15


@dataclass
class Lab:
    """A stack, one reference provider process behind every provider, and a caller who is no
    member of the providers' org (staging mappings are not theirs to use)."""

    running: object
    api: AdminApi
    provider_url: str
    org: str
    token: str

    def provider(self, failing: bool = False, input_price: int | None = None) -> str:
        provider = unique("p")
        url = f"{self.provider_url}/knobs/fail=500" if failing else self.provider_url
        self.api.ensure_provider(
            {"id": provider, "org": self.org, "base_url": url, "api_key": PROVIDER_KEY, "tasks": ["conversational"]}
        )
        if input_price is not None:
            prices = [{"provider_model": f"{provider}-model", "input_token_nano_usd": input_price}]
            self.api.call("PUT", f"/admin/v1/providers/{provider}/prices", {"prices": prices})
        return provider

    def model(self) -> str:
        model = f"{self.org}/{unique('m')}"
        entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        self.api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
        return model

    def map(self, provider: str, model: str, status: str = "live", **capabilities: object) -> str:
        body = {"task": "conversational", "hfModel": model, "providerModel": f"{provider}-model", **capabilities}
        mapping_id = self.api.call("POST", f"/api/partners/{provider}/models", {**body, "status": "staging"})["_id"]
        if status == "live":
            self.api.call("PUT", f"/api/partners/{provider}/models/{mapping_id}/status", {"status": "live"})
        elif status != "staging":
            self.set_status(provider, mapping_id, status)
        return mapping_id

    def set_status(self, provider: str, mapping_id: str, status: str) -> None:
        """The status written as health probes write it, then waited for in the partners listing."""
        engine = create_engine(f"sqlite:///{self.running.stack.data_dir / 'registry.db'}")
        with Session(engine) as session:
            queries.set_mapping_status(session, mapping_id, status)
            queries.commit_change(
                session, ChangeRow(origin="probes", kind=internal_pb.CHANGE_KIND_MAPPING, key=provider)
            )
        engine.dispose()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while status not in orjson.dumps(self.api.call("GET", f"/api/partners/{provider}/models")).decode():
            assert time.monotonic() < deadline, "the Registry did not apply the status change"
            time.sleep(0.05)

    def open_breaker(self, provider: str) -> None:
        """One failed request opens a (failing) provider's breaker in this stack."""
        model = self.model()
        self.map(provider, model)
        answer = self.chat(model)
        assert answer.status_code == 502, answer.text

    def chat(self, model: str, **extra: object) -> httpx.Response:
        with self.running.http(self.token) as http:
            return http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, **extra})

    def grpc_error_info(self, model: str, **extra: object) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo]:
        """The same request over gRPC through Envoy: its status and ErrorInfo."""
        body = {"model": model, "messages": MESSAGES, **extra}
        request = router_pb.CreateChatCompletionRequest(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body))
        )
        with self.running.channel("envoy") as channel:
            stub = router_grpc.RouterServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                list(stub.CreateChatCompletion(request, metadata=[("authorization", f"Bearer {self.token}")]))
        status = status_pb2.Status.FromString(dict(raised.value.trailing_metadata())[DETAILS_TRAILER])
        info = error_details_pb2.ErrorInfo()
        assert any(detail.Unpack(info) for detail in status.details)
        return raised.value.code(), info


@pytest.fixture(scope="module")
def lab(make_stack, tmp_path_factory) -> Iterator[Lab]:
    running = make_stack(SWITCHBOARD_BREAKER_FAILURES="1", SWITCHBOARD_BREAKER_COOLDOWN_SECONDS="86400")
    processes = Stack(tmp_path_factory.mktemp("providers"), dict(os.environ))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secrets = reference_provider_secrets(api_key=PROVIDER_KEY)
    processes.start("reference_provider", reference_provider_argv(port), http_ok(f"{url}/health"), env=secrets)
    try:
        processes.wait_ready()
        api = AdminApi(running.base_url, running.admin_token)
        org, caller = unique("org"), unique("caller")
        api.call("POST", "/admin/v1/orgs", {"name": org})
        api.call("POST", "/admin/v1/users", {"name": caller})
        yield Lab(running, api, url, org, api.new_token(caller))
    finally:
        processes.stop()


def error(answer: httpx.Response, status: int, code: str) -> str:
    """The message of an OpenAI-shaped error with this status and code."""
    assert answer.status_code == status, answer.text
    body = answer.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == code, body
    return body["message"]


def served_by(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return answer.headers["x-inference-provider"]


# --- capabilities, one at a time ----------------------------------------------------------------


def test_a_tools_request_skips_a_provider_model_without_tool_support_and_says_so_when_none_is_left(lab) -> None:
    model = lab.model()
    without, declared_nothing, with_tools = lab.provider(), lab.provider(), lab.provider()
    lab.map(without, model, supportsTools=False)
    lab.map(declared_nothing, model)
    lab.map(with_tools, model, supportsTools=True)
    assert served_by(lab.chat(model, provider=f"{without} {declared_nothing} {with_tools}")) == without  # no tools
    answer = lab.chat(model, tools=[TOOL], provider=f"{without} {declared_nothing} {with_tools}")
    assert served_by(answer) == with_tools  # known support first, then unknown
    assert answer.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert served_by(lab.chat(model, tools=[TOOL], provider=f"{without} {declared_nothing}")) == declared_nothing
    strict = {"only": [without, declared_nothing], "require_parameters": True}
    message = error(lab.chat(model, tools=[TOOL], provider=strict), 400, "no_provider_fits")
    assert f"{without}: no tool support" in message
    assert f"{declared_nothing}: tool support not declared (provider.require_parameters)" in message
    assert served_by(lab.chat(model, tools=[], provider=without)) == without  # an empty list asks for nothing


def test_a_mapping_made_as_the_partner_documentation_shows_serves_tools_unless_parameters_are_required(lab) -> None:
    model = lab.model()
    provider = lab.provider()
    lab.map(provider, model)  # {"task", "hfModel", "providerModel"}, then PUT .../status live: no capability fields
    answer = lab.chat(model, tools=[TOOL])
    assert served_by(answer) == provider
    assert answer.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    message = error(lab.chat(model, tools=[TOOL], provider={"require_parameters": True}), 400, "no_provider_fits")
    assert f"{provider}: tool support not declared (provider.require_parameters)" in message


def test_the_provider_object_orders_filters_and_holds_fallbacks_through_envoy(lab) -> None:
    model = lab.model()
    failing, first, second = lab.provider(failing=True), lab.provider(), lab.provider()
    for provider in (failing, first, second):
        lab.map(provider, model)
    assert served_by(lab.chat(model, provider={"order": [second, first]})) == second
    assert served_by(lab.chat(model, provider={"order": [failing, first]})) == first  # fell back
    assert served_by(lab.chat(model, provider={"only": [first], "sort": "latency"})) == first
    assert served_by(lab.chat(model, provider={"order": [second], "ignore": [failing]})) == second
    alone = lab.chat(model, provider={"order": [failing, first], "allow_fallbacks": False})
    message = error(alone, 503, "providers_unavailable")  # its breaker opened at the fallback above
    assert f"{failing}: skipped" in message and f"{first}: not the first fitting provider" in message
    message = error(lab.chat(f"{model}:{first}", provider={"order": [second]}), 400, "conflicting_provider_selection")
    assert f"the model suffix :{first}" in message and "provider.order" in message
    message = error(lab.chat(model, max_price={"input": 1}, provider={"max_price": {"prompt": 1}}), 400,
                    "conflicting_provider_selection")  # fmt: skip
    assert "max_price conflicts with provider.max_price" in message
    assert error(lab.chat(model, provider={"order": [first], "zdr": True}), 400, "invalid_parameter")
    everyone = [failing, first, second]
    message = error(lab.chat(model, provider={"ignore": everyone}), 404, "model_not_available")
    assert all(f"{p}: ignored (provider.ignore)" in message for p in everyone)


def test_a_declaration_changed_later_reaches_the_routers_cached_resolution(lab) -> None:
    model = lab.model()
    provider = lab.provider()
    mapping_id = lab.map(provider, model, supportsTools=False)
    assert error(lab.chat(model, tools=[TOOL]), 400, "no_provider_fits")  # the Router caches this resolution
    lab.api.call("PATCH", f"/api/partners/{provider}/models/{mapping_id}", {"supportsTools": True})
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (answer := lab.chat(model, tools=[TOOL])).status_code != 200:  # the change notice drops it
        assert answer.status_code == 400 and time.monotonic() < deadline, answer.text
        time.sleep(0.05)
    assert served_by(answer) == provider


def test_a_json_schema_request_goes_only_where_structured_output_is_supported(lab) -> None:
    model = lab.model()
    plain, structured = lab.provider(), lab.provider()
    lab.map(plain, model, supportsStructuredOutput=False, supportsTools=True)
    lab.map(structured, model, supportsStructuredOutput=True)
    answer = lab.chat(model, response_format=SCHEMA)
    assert served_by(answer) == structured and orjson.loads(answer.json()["choices"][0]["message"]["content"]) == {}
    assert served_by(lab.chat(model, response_format={"type": "json_object"}, provider=plain)) == plain
    assert served_by(lab.chat(model, response_format=SCHEMA, tools=[TOOL])) == structured  # tools unknown
    strict = {"require_parameters": True}
    message = error(lab.chat(model, response_format=SCHEMA, tools=[TOOL], provider=strict), 400, "no_provider_fits")
    assert f"{plain}: no structured output" in message and f"{structured}: tool support not declared" in message


def test_a_prompt_longer_than_a_context_skips_that_provider_model(lab) -> None:
    model = lab.model()
    short, roomy, unknown = lab.provider(), lab.provider(), lab.provider()
    lab.map(short, model, contextLength=50)
    lab.map(roomy, model, contextLength=LONG_CONTEXT)
    lab.map(unknown, model)
    assert served_by(lab.chat(model, provider=short)) == short  # ~40 tokens: fits in 50
    long_messages = [{"role": "user", "content": "word " * 400}]  # the body / 4: over 500 tokens
    assert served_by(lab.chat(model, messages=long_messages, provider=f"{short} {roomy}")) == roomy
    assert served_by(lab.chat(model, messages=long_messages, provider=f"{short} {unknown}")) == unknown
    message = error(lab.chat(model, messages=long_messages, provider=short), 400, "no_provider_fits")
    assert f"{short}: context of 50 tokens, prompt of about 5" in message


def test_max_price_skips_dearer_and_unpriced_provider_models_and_is_not_sent_on(lab) -> None:
    model = lab.model()
    cheap, dear, unpriced = lab.provider(input_price=CHEAP), lab.provider(input_price=DEAR), lab.provider()
    for provider in (dear, unpriced, cheap):
        lab.map(provider, model)
    assert served_by(lab.chat(model, max_price=CEILING, provider=f"{dear} {unpriced} {cheap}")) == cheap
    sent = httpx.get(f"{lab.provider_url}/debug/last-request", timeout=30).json()["body"]
    assert "max_price" not in sent and sent["model"] == f"{cheap}-model"
    message = error(lab.chat(model, max_price={"input": 0.01}), 400, "no_provider_fits")
    assert f"{cheap}: price over max_price: input 0.1 > 0.01 USD per million tokens" in message
    assert f"{unpriced}: no price known to hold to max_price" in message
    for bad in ({"input": -1}, {"tokens": 1}, {}, "1", {"input": "1"}):
        assert error(lab.chat(model, max_price=bad), 400, "invalid_parameter")


def test_a_mapping_in_error_leaves_routing_for_everyone_and_the_404_says_so(lab) -> None:
    model = lab.model()
    broken, staged = lab.provider(), lab.provider()
    lab.map(broken, model, status="error", supportsTools=True)
    lab.map(staged, model, status="staging")
    message = error(lab.chat(model), 404, "model_not_available")
    assert f"{broken}: failing its health probes (no reason given)" in message and f"{staged}: staging only" in message
    code, info = lab.grpc_error_info(model)
    assert code == grpc.StatusCode.NOT_FOUND and info.reason == "MODEL_NOT_AVAILABLE"
    assert dict(info.metadata) == {f"excluded_{broken}": "error", f"excluded_{staged}": "staging"}


def test_the_error_details_over_grpc_name_every_provider_with_its_reason_codes(lab) -> None:
    model = lab.model()
    staged, no_tools, opened = lab.provider(), lab.provider(), lab.provider(failing=True)
    lab.open_breaker(opened)
    lab.map(staged, model, status="staging", supportsTools=True)
    lab.map(no_tools, model, supportsTools=False, contextLength=SHORT_CONTEXT)
    lab.map(opened, model, supportsTools=False)
    code, info = lab.grpc_error_info(model, tools=[TOOL])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "NO_PROVIDER_FITS"
    assert dict(info.metadata) == {
        f"excluded_{staged}": "staging",
        f"excluded_{no_tools}": "no_tools,context_too_short",
        f"excluded_{opened}": "no_tools,breaker_open",
    }


def test_when_every_fitting_provider_fails_the_answer_also_names_those_left_out(lab) -> None:
    model = lab.model()
    failing, without = lab.provider(failing=True), lab.provider()
    lab.map(failing, model, supportsTools=True)
    lab.map(without, model, supportsTools=False)
    message = error(lab.chat(model, tools=[TOOL]), 502, "upstream_error")
    assert message.endswith(f"every provider failed: {failing}: HTTP 500; left out: {without}: no tool support")


def test_models_listing_shows_declared_capabilities_and_leaves_out_unknown_ones(lab) -> None:
    model = lab.model()
    declared, unknown = lab.provider(), lab.provider()
    lab.map(declared, model, supportsTools=True, supportsStructuredOutput=False, contextLength=32_768)
    lab.map(unknown, model)
    with lab.running.http(lab.token) as http:
        listed = {p["provider"]: p for p in http.get(f"/v1/models/{model}").json()["providers"]}
        in_list = next(m for m in http.get("/v1/models").json()["data"] if m["id"] == model)
    assert {p["provider"]: p for p in in_list["providers"]} == listed
    capabilities = ("supports_tools", "supports_structured_output", "context_length")
    assert {key: listed[declared].get(key) for key in capabilities} == {
        "supports_tools": True,
        "supports_structured_output": False,
        "context_length": 32_768,
    }
    assert not set(capabilities) & set(listed[unknown])


def test_the_per_provider_route_holds_its_mapping_to_the_same_rules(lab) -> None:
    model = lab.model()
    provider = lab.provider()
    lab.map(provider, model, supportsTools=False)
    with lab.running.http(lab.token) as http:
        path = f"/{provider}/v1/chat/completions"
        plain = http.post(path, json={"model": f"{provider}-model", "messages": MESSAGES})
        with_tools = http.post(path, json={"model": f"{provider}-model", "messages": MESSAGES, "tools": [TOOL]})
    assert served_by(plain) == provider
    assert f"{provider}: no tool support" in error(with_tools, 400, "no_provider_fits")


# --- the exclusion list is complete -------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One provider of a generated model: its mapping's status and capabilities, its price, its breaker."""

    status: str
    tools: bool | None
    structured: bool | None
    context: int | None
    price: int | None
    breaker_open: bool
    named: bool  # in the request's `provider` field, when the request names providers


@dataclass(frozen=True)
class Ask:
    """What a generated request needs."""

    tools: bool
    schema: bool
    ceiling: bool
    names_providers: bool
    require_parameters: bool  # sent in a provider object: unknown support counts as none


SPECS = st.builds(
    Spec,
    status=st.sampled_from(["live", "live", "staging", "error"]),
    tools=st.sampled_from([None, True, False]),
    structured=st.sampled_from([None, True, False]),
    context=st.sampled_from([None, SHORT_CONTEXT, LONG_CONTEXT]),
    price=st.sampled_from([None, CHEAP, DEAR]),
    breaker_open=st.booleans(),
    named=st.booleans(),
)
ASKS = st.builds(
    Ask, tools=st.booleans(), schema=st.booleans(), ceiling=st.booleans(), names_providers=st.booleans(),
    require_parameters=st.booleans(),
)  # fmt: skip


def misfits(spec: Spec, ask: Ask) -> list[str]:
    """The reason codes a live provider model fails the request by, in the documented order:
    known lack of a capability, or unknown support under require_parameters."""
    reasons = []
    if ask.tools and (spec.tools is False or (spec.tools is None and ask.require_parameters)):
        reasons.append("no_tools")
    if ask.schema and (spec.structured is False or (spec.structured is None and ask.require_parameters)):
        reasons.append("no_structured_output")
    if spec.context == SHORT_CONTEXT:
        reasons.append("context_too_short")
    if ask.ceiling and (spec.price is None or spec.price > CEILING["input"] * 1000):
        reasons.append("over_price_ceiling")
    return reasons


def expected_listing(providers: dict[str, Spec], ask: Ask) -> dict[str, str]:
    listing = {}
    for provider, spec in providers.items():
        if spec.status != "live":
            reasons = [spec.status]
        else:
            reasons = misfits(spec, ask) + (["breaker_open"] if spec.breaker_open else [])
        listing[f"excluded_{provider}"] = ",".join(reasons)
    return listing


def build(lab: Lab, specs: list[Spec]) -> tuple[str, dict[str, Spec]]:
    """A model served by one new provider per spec, breakers opened first (they are per provider)."""
    model = lab.model()
    providers = {}
    for spec in specs:
        provider = lab.provider(failing=spec.breaker_open, input_price=spec.price)
        if spec.breaker_open:
            lab.open_breaker(provider)
        capabilities = {"supportsTools": spec.tools, "supportsStructuredOutput": spec.structured,
                        "contextLength": spec.context}  # fmt: skip
        lab.map(provider, model, spec.status, **{k: v for k, v in capabilities.items() if v is not None})
        providers[provider] = spec
    return model, providers


@settings(max_examples=20)  # each example registers up to 4 providers on the stack and waits for the Router
@given(specs=st.lists(SPECS, min_size=1, max_size=4), ask=ASKS)
def test_every_provider_is_listed_with_exactly_its_reasons_or_the_one_chosen_fits(lab, specs, ask) -> None:
    model, served = build(lab, specs)
    named = [p for p, s in served.items() if s.named] if ask.names_providers else []
    providers = {p: served[p] for p in named} if named else served  # the providers considered
    extra = {
        **({"tools": [TOOL]} if ask.tools else {}),
        **({"response_format": SCHEMA} if ask.schema else {}),
        **({"max_price": CEILING} if ask.ceiling else {}),
        **({"provider": " ".join(named)} if named else {}),
        **({"provider": {"only": named, "require_parameters": True}} if ask.require_parameters else {}),
    }
    answer = lab.chat(model, **extra)
    live = {p: s for p, s in providers.items() if s.status == "live"}
    fitting = {p for p, s in live.items() if not misfits(s, ask)}
    if not live:
        expected_code, status, reason = grpc.StatusCode.NOT_FOUND, 404, "MODEL_NOT_AVAILABLE"
    elif not fitting:
        expected_code, status, reason = grpc.StatusCode.INVALID_ARGUMENT, 400, "NO_PROVIDER_FITS"
    elif all(providers[p].breaker_open for p in fitting):  # fits, but failing: not the caller's fault
        event("every fitting provider's breaker is open")
        expected_code, status, reason = grpc.StatusCode.UNAVAILABLE, 503, "PROVIDERS_UNAVAILABLE"
    else:
        event("served")
        assert served_by(answer) in {p for p in fitting if not providers[p].breaker_open}
        return
    event(f"{reason}, {len(providers)} providers")
    message = error(answer, status, reason.lower())
    assert all(message.count(f"{provider}:") == 1 for provider in providers), message
    code, info = lab.grpc_error_info(model, **extra)
    assert (code, info.reason) == (expected_code, reason)
    left_out = {p: s for p, s in providers.items() if p not in fitting}  # the tried are named by the 503 itself
    assert dict(info.metadata) == expected_listing(left_out, ask)
