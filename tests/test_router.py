"""The Router through real Envoy with the official clients, against reference providers.

Each test registers its own providers and models (unique names) in the shared
stack; one reference provider process plays every provider, its per-URL knobs
(/knobs/fail=503/...) making some of them fail in the way a test needs.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import openai
import orjson
import pytest
from google.api import httpbody_pb2
from helpers.waiting import eventually
from huggingface_hub import InferenceClient
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.common.providers import PROVIDER_METADATA_KEY
from services.demo import AdminApi, reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, free_port, http_ok

PROVIDER_KEY = "ref-key-" + uuid.uuid4().hex
MESSAGES = [{"role": "user", "content": "say hello"}]


@dataclass
class World:
    """A namespace of users, providers and models in the shared stack."""

    stack: object
    api: AdminApi
    provider_url: str
    org: str
    user: str
    token: str

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def provider(self, url: str | None = None, rank: int = 0, org: str | None = None) -> str:
        provider_id = self.unique("p")
        self.api.ensure_provider(
            {
                "id": provider_id,
                "org": org or self.org,
                "base_url": url or self.provider_url,
                "api_key": PROVIDER_KEY,
                "tasks": ["conversational", "text-to-image"],
                "request_id_header": "Inference-Id",
                "default_rank": rank,
            }
        )
        return provider_id

    def model(self, pipeline_tag: str = "text-generation", **extra: object) -> str:
        model_id = f"{self.org}/{self.unique('m')}"
        tags = ["conversational"] if pipeline_tag == "text-generation" else []
        self.api.call(
            "POST",
            "/admin/v1/models:batchUpsert",
            {"models": [{"id": model_id, "pipeline_tag": pipeline_tag, "tags": tags, **extra}]},
        )
        return model_id

    def map(
        self, provider: str, model: str, provider_model: str = "", status: str = "live", task: str = "conversational"
    ) -> str:
        body = {
            "task": task,
            "hfModel": model,
            "providerModel": provider_model or f"{provider}-model",
            "status": status,
            "supportsTools": True,  # as the reference provider does (capability-aware routing)
            "supportsStructuredOutput": True,
        }
        return self.api.call("POST", f"/api/partners/{provider}/models", body)["_id"]

    def chat_model(self, *provider_urls: str) -> tuple[str, list[str]]:
        """A chat model served by one provider per URL, tried in that order."""
        model = self.model()
        providers = [self.provider(url, rank) for rank, url in enumerate(provider_urls)]
        for provider in providers:
            self.map(provider, model)
        return model, providers

    def knobs(self, spec: str) -> str:
        return f"{self.provider_url}/knobs/{spec}"

    def openai(self, token: str | None = None, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.stack.base_url}/v1", api_key=token or self.token, max_retries=0, default_headers=headers
        )

    def last_request(self) -> dict:
        return httpx.get(f"{self.provider_url}/debug/last-request", timeout=30).json()


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory) -> Iterator[World]:
    processes = Stack(tmp_path_factory.mktemp("providers"), dict(os.environ))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secrets = reference_provider_secrets(api_key=PROVIDER_KEY)
    processes.start("reference_provider", reference_provider_argv(port), http_ok(f"{url}/health"), env=secrets)
    try:
        processes.wait_ready()
        api = AdminApi(stack.base_url, stack.admin_token)
        suffix = uuid.uuid4().hex[:8]
        org, user = f"org-{suffix}", f"user-{suffix}"
        api.ensure_member(org, user)
        yield World(stack, api, url, org, user, api.new_token(user))
    finally:
        processes.stop()


# --- chat -------------------------------------------------------------------------------------


def test_chat_passes_every_field_through_and_answers_with_the_hub_model_id(world) -> None:
    model, (provider,) = world.chat_model(world.provider_url)
    raw = world.openai().chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello parts"}]}],
        seed=7,
        stop=["zzz"],
        logit_bias={"42": 1},
        max_completion_tokens=50,
        metadata={"k": "v"},
        extra_body={"provider": provider, "custom_field": {"nested": [1, 2]}},
    )
    completion = raw.parse()
    assert completion.model == model and "hello parts" in completion.choices[0].message.content
    assert raw.headers["x-inference-provider"] == provider
    assert uuid.UUID(raw.headers["x-request-id"]) and uuid.UUID(raw.headers["inference-id"])
    sent = world.last_request()["body"]
    assert sent["model"] == f"{provider}-model" and "provider" not in sent
    assert sent["custom_field"] == {"nested": [1, 2]} and sent["seed"] == 7 and sent["logit_bias"] == {"42": 1}
    assert sent["metadata"] == {"k": "v"} and sent["messages"][0]["content"][0]["text"] == "hello parts"


def test_chat_stream_passes_chunks_and_usage_with_headers(world) -> None:
    model, (provider,) = world.chat_model(world.provider_url)
    raw = world.openai().chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-inference-provider"] == provider and raw.headers["inference-id"]
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "say hello" in text and all(c.model == model for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.split())


def test_chat_tools_and_response_format(world) -> None:
    model, _ = world.chat_model(world.provider_url)
    client = world.openai()
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }
    answer = client.chat.completions.create(
        model=model, messages=MESSAGES, tools=[tool], tool_choice="auto", parallel_tool_calls=False
    )
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    assert world.last_request()["body"]["parallel_tool_calls"] is False
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    formatted = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )
    assert orjson.loads(formatted.choices[0].message.content) == {"city": "reference"}


def test_hf_inference_client_chat_completion(world) -> None:
    model, _ = world.chat_model(world.provider_url)
    client = InferenceClient(base_url=f"{world.stack.base_url}/v1", api_key=world.token)
    answer = client.chat_completion(messages=MESSAGES, model=model, max_tokens=20)
    assert answer.model == model and "say hello" in answer.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat_completion(messages=MESSAGES, model=model, stream=True)
    )
    assert "say hello" in streamed


# --- images -----------------------------------------------------------------------------------


def image_world(world) -> tuple[str, str, str]:
    base = world.model("text-to-image")
    lora = world.model(
        "text-to-image", tags=["lora", f"base_model:adapter:{base}"], adapter_weights_path="w.safetensors"
    )
    provider = world.provider()
    world.map(provider, base, "base-image", task="text-to-image")
    tags = ["lora", f"base_model:adapter:{base}"]
    body = {
        "type": "tag-filter",
        "task": "text-to-image",
        "tags": tags,
        "providerModel": "base-image",
        "adapterType": "lora",
        "status": "live",
    }
    world.api.call("POST", f"/api/partners/{provider}/models", body)
    return base, lora, provider


def test_images_as_url_and_b64_json(world) -> None:
    from PIL import Image

    base, _, provider = image_world(world)
    client = world.openai()
    by_url = client.images.with_raw_response.generate(
        model=base, prompt="a lighthouse", response_format="url", size="256x256"
    )
    assert by_url.headers["x-inference-provider"] == provider
    png = httpx.get(by_url.parse().data[0].url, timeout=30).content
    assert Image.open(io.BytesIO(png)).size == (256, 256)
    b64 = client.images.generate(model=base, prompt="a lighthouse", response_format="b64_json", n=2)
    assert len(b64.data) == 2 and Image.open(io.BytesIO(base64.b64decode(b64.data[0].b64_json))).format == "PNG"
    seed_path = httpx.post(
        f"{world.stack.base_url}/v1/images/generate",
        headers={"Authorization": f"Bearer {world.token}"},
        json={"model": base, "prompt": "x", "provider": provider, "response_format": "url"},
        timeout=30,
    )
    assert seed_path.status_code == 200 and seed_path.json()["data"][0]["url"]


def test_a_lora_goes_to_the_tag_filters_model_with_its_weights(world) -> None:
    _, lora, _ = image_world(world)
    world.openai().images.generate(model=lora, prompt="pixel cat", response_format="b64_json")
    sent = world.last_request()["body"]
    assert sent["model"] == "base-image"
    assert sent["loras"] == [{"path": f"https://huggingface.co/{lora}/resolve/main/w.safetensors", "scale": 1}]


def test_hf_inference_client_text_to_image(world) -> None:
    base, _, _ = image_world(world)
    client = InferenceClient(base_url=f"{world.stack.base_url}/models/{base}", api_key=world.token)
    image = client.text_to_image("a mountain", width=48, height=40, seed=3)
    assert image.size == (48, 40)
    assert world.last_request()["body"]["seed"] == 3


# --- errors -----------------------------------------------------------------------------------


def test_error_classes_of_the_openai_client(world) -> None:
    model, _ = world.chat_model(world.provider_url)
    with pytest.raises(openai.AuthenticationError):
        world.openai("not-a-token").chat.completions.create(model=model, messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError):
        world.openai(**{"X-HF-Bill-To": "someone-elses-org"}).chat.completions.create(model=model, messages=MESSAGES)
    with pytest.raises(openai.NotFoundError) as missing:
        world.openai().chat.completions.create(model=f"{world.org}/does-not-exist", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as unknown:
        world.openai().chat.completions.create(model=model, messages=MESSAGES, extra_body={"provider": "nope1 nope2"})
    assert "nope1, nope2" in unknown.value.message
    limited, _ = world.chat_model(world.knobs("fail=429"))
    with pytest.raises(openai.RateLimitError):
        world.openai().chat.completions.create(model=limited, messages=MESSAGES)
    broken, _ = world.chat_model(world.knobs("fail=500"))
    with pytest.raises(openai.APIStatusError) as failed:
        world.openai().chat.completions.create(model=broken, messages=MESSAGES)
    assert failed.value.status_code == 502 and failed.value.code == "upstream_error"


def test_billing_an_org_the_caller_belongs_to(world) -> None:
    model, _ = world.chat_model(world.provider_url)
    answer = world.openai(**{"X-HF-Bill-To": world.org}).chat.completions.create(model=model, messages=MESSAGES)
    assert answer.choices[0].message.content


def test_a_model_nobody_serves_for_the_caller_is_a_404_saying_why(world) -> None:
    model = world.model()
    outsider_org = world.unique("org")
    world.api.call("POST", "/admin/v1/orgs", {"name": outsider_org})
    provider = world.provider(org=outsider_org)
    world.map(provider, model, status="staging")
    with pytest.raises(openai.NotFoundError) as error:
        world.openai().chat.completions.create(model=model, messages=MESSAGES)
    assert "staging" in error.value.message
    with pytest.raises(openai.NotFoundError) as wrong_task:
        world.openai().images.generate(model=model, prompt="x")
    assert model in wrong_task.value.message


# --- selection --------------------------------------------------------------------------------


def test_provider_list_suffixes_and_per_provider_routes(world) -> None:
    model, (first, second) = world.chat_model(world.provider_url, world.provider_url)
    client = world.openai()

    def served_by(**kwargs: object) -> str:
        return client.chat.completions.with_raw_response.create(messages=MESSAGES, **kwargs).headers[
            "x-inference-provider"
        ]

    assert served_by(model=model) == first
    assert served_by(model=f"{model}:{second}") == second
    assert served_by(model=model, extra_body={"provider": f"{second} {first}"}) == second
    assert served_by(model=f"{model}:cheapest") in (first, second)
    assert served_by(model=f"{model}:preferred") in (first, second)
    per_provider = openai.OpenAI(base_url=f"{world.stack.base_url}/{second}/v1", api_key=world.token, max_retries=0)
    raw = per_provider.chat.completions.with_raw_response.create(model=f"{second}-model", messages=MESSAGES)
    assert raw.headers["x-inference-provider"] == second and raw.parse().model == f"{second}-model"
    with pytest.raises(openai.BadRequestError) as unsupported:
        per_provider.chat.completions.create(model="other-model", messages=MESSAGES)
    assert f"not supported by provider {second}" in unsupported.value.message


def test_preferred_follows_the_callers_own_order(world) -> None:
    model, (first, second) = world.chat_model(world.provider_url, world.provider_url)
    user = world.unique("pref")
    world.api.ensure_member(world.org, user)
    token = world.api.new_token(user)
    AdminApi(world.stack.base_url, token).call(
        "PUT", "/v1/settings/provider-preferences", {"providers": [second, first]}
    )
    raw = world.openai(token).chat.completions.with_raw_response.create(model=f"{model}:preferred", messages=MESSAGES)
    assert raw.headers["x-inference-provider"] == second


def test_cheapest_follows_the_price_table(world) -> None:
    model, (first, second) = world.chat_model(world.provider_url, world.provider_url)
    for provider, price in ((first, 500), (second, 5)):
        body = {"prices": [{"provider_model": f"{provider}-model", "input_token_nano_usd": price}]}
        world.api.call("PUT", f"/admin/v1/providers/{provider}/prices", body)

    def served_by() -> str:
        raw = world.openai().chat.completions.with_raw_response.create(model=f"{model}:cheapest", messages=MESSAGES)
        return raw.headers["x-inference-provider"]

    # The price change reaches the Router through the change feed: within a second by design, 30 s on a busy machine.
    eventually(lambda: served_by() == second, "the cheaper provider to serve", seconds=30)


# --- failover ---------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["refused", "fail=429", "fail=500", "fail=501", "fail=502", "fail=503", "fail=504"])
def test_failover_to_the_next_provider(world, failure: str) -> None:
    first_url = f"http://127.0.0.1:{free_port()}" if failure == "refused" else world.knobs(failure)
    model, (_first, second) = world.chat_model(first_url, world.provider_url)
    raw = world.openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    assert raw.headers["x-inference-provider"] == second and raw.parse().model == model
    streamed = world.openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES, stream=True)
    assert streamed.headers["x-inference-provider"] == second
    assert "say hello" in "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)


def test_failover_on_timeout_within_the_callers_deadline(world) -> None:
    model, (_, second) = world.chat_model(world.knobs("latency=20000"), world.provider_url)
    with grpc.insecure_channel(world.stack.address("envoy")) as channel:
        stub = router_grpc.RouterServiceStub(channel)
        body = httpbody_pb2.HttpBody(
            content_type="application/json", data=orjson.dumps({"model": model, "messages": MESSAGES})
        )
        request = router_pb.CreateChatCompletionRequest(body=body)
        # The first provider gets half the deadline; the second's half must hold a busy machine's stalls.
        call = stub.CreateChatCompletion(request, timeout=8, metadata=[("authorization", f"Bearer {world.token}")])
        answers = list(call)
        assert dict(call.initial_metadata())[PROVIDER_METADATA_KEY] == second
    assert orjson.loads(answers[0].data)["model"] == model


def test_deadline_passing_is_a_deadline_error(world) -> None:
    model, _ = world.chat_model(world.knobs("latency=20000"))
    with grpc.insecure_channel(world.stack.address("envoy")) as channel:
        stub = router_grpc.RouterServiceStub(channel)
        body = httpbody_pb2.HttpBody(data=orjson.dumps({"model": model, "messages": MESSAGES}))
        with pytest.raises(grpc.RpcError) as error:
            list(stub.CreateChatCompletion(router_pb.CreateChatCompletionRequest(body=body), timeout=1,
                                           metadata=[("authorization", f"Bearer {world.token}")]))  # fmt: skip
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_provider_400_is_returned_without_trying_others(world) -> None:
    model, (first, _second) = world.chat_model(world.knobs("fail=400"), world.knobs("fail=503"))
    with pytest.raises(openai.BadRequestError) as error:
        world.openai().chat.completions.create(model=model, messages=MESSAGES)
    assert first in error.value.message
    assert error.value.response.headers["x-inference-provider"] == first
    assert world.last_request()["path"].startswith("/knobs/fail=400/")  # the second one was never asked


def test_a_stream_broken_after_its_first_chunk_ends_with_an_error_event(world) -> None:
    model, (first, _) = world.chat_model(world.knobs("cut=2"), world.provider_url)
    body = {"model": model, "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{world.stack.base_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {world.token}"}, timeout=30) as response:  # fmt: skip
        assert response.headers["x-inference-provider"] == first
        events = [line for line in response.iter_lines() if line]
    assert len(events) >= 3 and events[-1] == "data: [DONE]"  # at least the first chunk got through
    assert orjson.loads(events[0][6:])["model"] == model
    assert orjson.loads(events[-2][6:])["error"]["code"] == "stream_interrupted"
    with pytest.raises(openai.APIError):
        list(world.openai().chat.completions.create(model=model, messages=MESSAGES, stream=True))


def test_circuit_breaker_skips_a_provider_that_keeps_failing(world) -> None:
    model, (_failing,) = world.chat_model(world.knobs("fail=500"))
    messages = []
    for _ in range(6):
        with pytest.raises(openai.APIStatusError) as error:
            world.openai().chat.completions.create(model=model, messages=MESSAGES)
        messages.append(error.value.message)
    assert "HTTP 500" in messages[0]
    assert "circuit open" in messages[-1] and error.value.status_code == 503


# --- catalog and identity ---------------------------------------------------------------------


def test_models_and_providers_listings(world) -> None:
    model, (provider,) = world.chat_model(world.provider_url)
    world.api.call(
        "PUT",
        f"/admin/v1/providers/{provider}/prices",
        {"prices": [{"provider_model": f"{provider}-model", "input_token_nano_usd": 2000}]},
    )
    world.openai().chat.completions.create(model=model, messages=MESSAGES)
    listed = {m.id for m in world.openai().models.list()}
    assert model in listed
    with world.stack.http(world.token) as http:
        one = http.get(f"/v1/models/{model}").json()
        assert one["id"] == model and one["object"] == "model"
        (served,) = one["providers"]
        assert (served["provider"], served["status"]) == (provider, "live")
        assert served["pricing"] == {"input": 2.0, "output": 0.0}
        assert served["first_token_latency_ms"] > 0
        providers = http.get("/v1/providers").json()
        assert {"id": provider, "url": world.provider_url, "tasks": ["conversational", "text-to-image"]} in providers
        described = http.get(f"/v1/providers/{provider}").json()
        assert described["models"] == [model] and "tools" in described["params"]
        assert http.get(f"/v1/providers/{world.unique('nope')}").status_code == 404


def test_a_revoked_token_stops_working_and_a_new_one_works_at_once(world) -> None:
    model, _ = world.chat_model(world.provider_url)
    name = world.unique("tok")
    token = world.api.new_token(world.user, name)
    world.openai(token).chat.completions.create(model=model, messages=MESSAGES)
    world.api.call("DELETE", f"/admin/v1/users/{world.user}/tokens/{name}")

    def refused() -> bool:
        try:
            world.openai(token).chat.completions.create(model=model, messages=MESSAGES)
        except openai.AuthenticationError:
            return True
        return False

    # The design pushes a revocation within a second; 30 s only bounds a failure on a busy machine.
    eventually(refused, "the revoked token's refusal", seconds=30)
    with pytest.raises(openai.AuthenticationError):
        world.openai(token).chat.completions.create(model=model, messages=MESSAGES)


def _server_timing(headers: httpx.Headers) -> dict[str, float]:
    """Server-Timing's metrics by name: their durations in ms."""
    metrics = [part.strip().split(";dur=") for part in headers["server-timing"].split(",")]
    return {name: float(duration) for name, duration in metrics}


def test_every_inference_answer_carries_server_timing(world) -> None:
    model, _ = world.chat_model(world.provider_url)
    url, auth = f"{world.stack.base_url}/v1/chat/completions", {"Authorization": f"Bearer {world.token}"}
    answers = [httpx.post(url, headers=auth, json={"model": model, "messages": MESSAGES, "stream": stream}, timeout=30)
               for stream in (False, True)]  # fmt: skip
    base, _, _ = image_world(world)
    images = {"model": base, "prompt": "a lighthouse", "response_format": "url", "size": "256x256"}
    answers.append(httpx.post(f"{world.stack.base_url}/v1/images/generations", headers=auth, json=images, timeout=30))
    assert [a.status_code for a in answers] == [200, 200, 200]
    for answer in answers:
        timing = _server_timing(answer.headers)
        assert set(timing) == {"router", "upstream"} and timing["upstream"] > 0 and timing["router"] >= 0
    broken, _ = world.chat_model(world.knobs("fail=500"))
    missing = f"{world.org}/does-not-exist"
    for bad_model, status in ((broken, 502), (missing, 404)):
        error = httpx.post(url, headers=auth, json={"model": bad_model, "messages": MESSAGES}, timeout=30)
        assert error.status_code == status and set(_server_timing(error.headers)) == {"router", "upstream"}
