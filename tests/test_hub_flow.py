"""The hub clients' provider flow against Switchboard: what huggingface_hub and
@huggingface/inference ask the hub before an inference call (GET /api/models/{id} with
expand), in the hub's shape, then the call itself through Switchboard with the real
huggingface_hub InferenceClient (provider="<id>" and provider="auto"); and mapping-time
refusal of the tasks Switchboard does not serve."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from helpers.clients import http_client
from helpers.hub import HUB_CALLS, check_hub_answers, wav_bytes
from helpers.registry import error_of, ok, unique
from helpers.waiting import eventually
from huggingface_hub import InferenceClient, constants
from huggingface_hub.inference import _providers
from huggingface_hub.inference._providers import hf_inference
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.providers import DEFAULT_REQUEST_ID_HEADER
from services.common.tasks import SERVED_TASKS
from services.demo import reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, free_port, http_ok
from services.registry.domain.validation import KNOWN_TASKS

pytestmark = pytest.mark.slow

PROVIDER = "together"  # a provider huggingface_hub knows by name: its helpers are chosen by it
OTHER = "fireworks-ai"
HF_INFERENCE = "hf-inference"  # huggingface_hub's provider for every hub task: hub model id as provider model
# Every hub task but chat; huggingface_hub 2.4 has no hf-inference text_to_video (sent as its post would).
HUB_TASKS = [*HUB_CALLS, "text-to-image"]
VIDEO = "text-to-video"
MESSAGES = [{"role": "user", "content": "say hello"}]


@dataclass
class Hub:
    base_url: str
    admin_token: str
    token: str  # a write member of the providers' org
    user: str  # the token's user
    outsider: str  # a user of no org
    data_dir: Path
    models: dict[str, str] = field(default_factory=dict)
    mappings: dict[str, str] = field(default_factory=dict)

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http_client(base_url=self.base_url, headers=headers, timeout=30)


def _post(client: httpx.Client, path: str, body: dict) -> dict:
    return ok(client.post(path, json=body))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The reference provider, for this module only: its URL and API key."""
    port, api_key = free_port(), secrets.token_urlsafe(16)
    provider_url = f"http://127.0.0.1:{port}"
    processes = Stack(tmp_path_factory.mktemp("reference"), dict(os.environ))
    try:
        processes.start(
            "reference_provider",
            reference_provider_argv(port),
            http_ok(f"{provider_url}/health"),
            env=reference_provider_secrets(api_key, secrets.token_urlsafe(16)),
        )
        processes.wait_ready()
        yield provider_url, api_key
    finally:
        processes.stop()


@pytest.fixture(scope="module")
def hub(stack, reference: tuple[str, str]) -> Iterator[Hub]:
    """On the session's shared stack (no other module uses the provider ids huggingface_hub knows):
    the reference provider behind "together" and "fireworks-ai", a chat model and an image model
    mapped live, and a chat model mapped by "fireworks-ai" in staging only."""
    running = stack
    provider_url, api_key = reference
    org, ns = unique("org"), unique("ns")
    models = {"chat": f"{ns}/chat", "image": f"{ns}/image", "embed": f"{ns}/embed"}
    with running.admin() as admin:
        _post(admin, "/admin/v1/orgs", {"name": org})
        user, outsider = unique("user"), unique("user")
        for name in (user, outsider):
            _post(admin, "/admin/v1/users", {"name": name})
        ok(admin.put(f"/admin/v1/orgs/{org}/members/{user}", json={"role": "write"}))
        token = _post(admin, f"/admin/v1/users/{user}/tokens", {"name": "main"})["token"]
        outsider_token = _post(admin, f"/admin/v1/users/{outsider}/tokens", {"name": "main"})["token"]
        for provider in (PROVIDER, OTHER, HF_INFERENCE):
            provider_body = {
                "id": provider,
                "org": org,
                "baseUrl": provider_url,
                "apiKey": api_key,
                "tasks": ["conversational", "text-to-image"],
                "requestIdHeader": DEFAULT_REQUEST_ID_HEADER,
            }
            _post(admin, "/admin/v1/providers", provider_body)
        catalog = [
            {"id": models["chat"], "pipelineTag": "text-generation", "tags": ["conversational", "llama"]},
            {"id": models["image"], "pipelineTag": "text-to-image", "tags": ["diffusers"]},
            {"id": models["embed"], "pipelineTag": "feature-extraction", "tags": ["sentence-transformers"]},
            # one model per hub task, named after it (the reference provider reads the task from the model id)
            *({"id": f"{ns}/{task}", "pipelineTag": task, "tags": [task]} for task in HUB_TASKS),
        ]
        _post(admin, "/admin/v1/models:batchUpsert", {"models": catalog})
    hub = Hub(running.base_url, running.admin_token, token, user, outsider_token, running.stack.data_dir, models)
    with hub.http(token) as http:
        for name, task, provider_model, provider, status in (
            ("chat", "conversational", "reference-chat", PROVIDER, "live"),
            ("image", "text-to-image", "reference-image", PROVIDER, "live"),
            ("chat-other", "conversational", "reference-chat", OTHER, "staging"),
        ):
            body = {"task": task, "hfModel": models[name.split("-")[0]], "providerModel": provider_model}
            created = _post(http, f"/api/partners/{provider}/models", {**body, "status": status})
            hub.mappings[name] = created["_id"]
        for task in HUB_TASKS:
            model = models[task] = f"{ns}/{task}"
            body = {"task": task, "hfModel": model, "providerModel": model, "status": "live"}
            _post(http, f"/api/partners/{HF_INFERENCE}/models", body)
    yield hub


@pytest.fixture
def hub_endpoint(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub pointed at Switchboard: the hub (HF_ENDPOINT) and the inference proxy
    (constants.INFERENCE_PROXY_TEMPLATE, and the conversational auto-router's base)."""
    monkeypatch.setattr(constants, "ENDPOINT", hub.base_url)
    monkeypatch.setattr(constants, "INFERENCE_PROXY_TEMPLATE", hub.base_url + "/{provider}")
    monkeypatch.setattr(_providers.CONVERSATIONAL_AUTO_ROUTER, "base_url", hub.base_url)
    for helper in _providers.PROVIDERS[HF_INFERENCE].values():  # its helpers read the proxy once, on import
        monkeypatch.setattr(helper, "base_url", f"{hub.base_url}/{HF_INFERENCE}")
    hf_inference._check_supported_task.cache_clear()


# --- GET /api/models/{id}: the hub's JSON ----------------------------------------------------------


def test_model_info_with_the_provider_mapping_is_the_hubs_shape(hub: Hub) -> None:
    chat = hub.models["chat"]
    with hub.http() as http:
        answer = ok(http.get(f"/api/models/{chat}", params={"expand": "inferenceProviderMapping"}))
    assert answer == {
        "_id": chat,
        "id": chat,
        "inferenceProviderMapping": {
            PROVIDER: {
                "status": "live",
                "providerId": "reference-chat",
                "task": "conversational",
                "type": "single-model",
            }
        },
    }


def test_staging_mappings_show_to_members_of_the_providers_org_only(hub: Hub) -> None:
    chat = hub.models["chat"]
    params = {"expand": "inferenceProviderMapping"}
    with hub.http(hub.token) as http:
        member = ok(http.get(f"/api/models/{chat}", params=params))["inferenceProviderMapping"]
    with hub.http(hub.outsider) as http:
        outsider = ok(http.get(f"/api/models/{chat}", params=params))["inferenceProviderMapping"]
    assert set(member) == {PROVIDER, OTHER} and member[OTHER]["status"] == "staging"
    assert list(outsider) == [PROVIDER]


def test_the_javascript_clients_array_parameters_and_the_slash_escaped(hub: Hub) -> None:
    """@huggingface/inference asks expand[]=...; SDKs may send the id's slash as %2F."""
    image = hub.models["image"]
    escaped = image.replace("/", "%2F")
    with hub.http() as http:
        answer = ok(http.get(f"/api/models/{escaped}?expand%5B%5D=pipeline_tag&expand[]=inferenceProviderMapping"))
    assert answer["pipeline_tag"] == "text-to-image"
    assert answer["inferenceProviderMapping"][PROVIDER]["task"] == "text-to-image"
    assert set(answer) == {"_id", "id", "pipeline_tag", "inferenceProviderMapping"}


def test_model_info_without_expand_has_the_hubs_default_properties(hub: Hub) -> None:
    embed = hub.models["embed"]
    with hub.http() as http:
        answer = ok(http.get(f"/api/models/{embed}"))
    assert answer["id"] == answer["modelId"] == embed
    assert answer["pipeline_tag"] == "feature-extraction" and answer["tags"] == ["sentence-transformers"]
    assert answer["author"] == embed.split("/")[0] and answer["private"] is False
    assert "inferenceProviderMapping" not in answer


def test_model_info_refusals(hub: Hub) -> None:
    with hub.http() as http:
        assert "catalog" in error_of(http.get("/api/models/nobody/nothing"), 404)["message"]
        bad = error_of(http.get(f"/api/models/{hub.models['chat']}", params={"expand": "everything"}), 400)
        assert bad["param"] == "expand" and "inferenceProviderMapping" in bad["message"]
        assert error_of(http.get(f"/api/models/{hub.models['chat']}", params={"other": "1"}), 400)
    with hub.http("hf_not-a-token") as http:
        error_of(http.get(f"/api/models/{hub.models['chat']}"), 401)


def test_tokens_look_like_the_hubs_so_its_clients_route_through_switchboard(hub: Hub) -> None:
    assert hub.token.startswith("hf_")


# --- the real huggingface_hub client --------------------------------------------------------------


def test_inference_client_with_a_provider_chats_through_switchboard(hub: Hub, hub_endpoint) -> None:
    client = InferenceClient(provider=PROVIDER, api_key=hub.token, timeout=30)
    answer = client.chat_completion(MESSAGES, model=hub.models["chat"], max_tokens=16)
    assert answer.choices[0].message.content


def test_inference_client_with_auto_chats_through_switchboard(hub: Hub, hub_endpoint) -> None:
    client = InferenceClient(provider="auto", api_key=hub.token, timeout=30)
    answer = client.chat_completion(MESSAGES, model=hub.models["chat"], max_tokens=16)
    assert answer.choices[0].message.content


@pytest.mark.parametrize("provider", [HF_INFERENCE, "auto"])
def test_inference_client_serves_every_hub_task_through_switchboard(hub: Hub, hub_endpoint, provider: str) -> None:
    """hf-inference is huggingface_hub's provider of every hub task; "auto" picks the first provider
    of the model's inferenceProviderMapping (hf-inference here) and calls it the same way."""
    client = InferenceClient(provider=provider, api_key=hub.token, timeout=60)
    answers = {
        task: HUB_CALLS[task](InferenceClient(model=hub.models[task], provider=provider, api_key=hub.token, timeout=60))
        for task in HUB_CALLS
        if task != VIDEO
    }
    with hub.http(hub.token) as http:  # the hub's task request at the provider's route, as the client posts
        video = http.post(f"/{HF_INFERENCE}/models/{hub.models[VIDEO]}", json={"inputs": "a cat playing"})
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4", video.text[:300]
    check_hub_answers({**answers, VIDEO: video.content})
    assert client.text_to_image("a cat", model=hub.models["text-to-image"]).size[0] > 0


def test_inference_client_refuses_a_provider_that_does_not_map_the_model(hub: Hub, hub_endpoint) -> None:
    client = InferenceClient(provider="fireworks-ai", api_key=hub.outsider, timeout=30)
    with pytest.raises(ValueError, match="not supported by provider"):
        client.chat_completion(MESSAGES, model=hub.models["chat"], max_tokens=16)


# --- mapping-time refusal ---------------------------------------------------------------------------


def _model_for(admin: httpx.Client, task: str) -> str:
    """A catalog model a mapping of this task fits (a conversational-tagged LLM for chat)."""
    model_id = f"{unique('ns')}/{task}"
    pipeline = "text-generation" if task == "conversational" else task
    _post(
        admin,
        "/admin/v1/models:batchUpsert",
        {"models": [{"id": model_id, "pipelineTag": pipeline, "tags": ["conversational"]}]},
    )
    return model_id


@pytest.mark.parametrize("task", sorted(KNOWN_TASKS - set(SERVED_TASKS)))
def test_a_task_switchboard_does_not_serve_cannot_be_mapped(hub: Hub, task: str) -> None:
    with hub.http(hub.admin_token) as admin:
        model_id = _model_for(admin, task)
    with hub.http(hub.token) as http:
        body = {"task": task, "hfModel": model_id, "providerModel": "p", "status": "live"}
        error = error_of(http.post(f"/api/partners/{PROVIDER}/models", json=body), 400)
    assert error["param"] == "task" and error["code"] == "task_not_served"
    assert task in error["message"] and all(served in error["message"] for served in SERVED_TASKS)


@pytest.mark.parametrize("task", list(SERVED_TASKS))
def test_every_served_task_can_be_mapped(hub: Hub, task: str) -> None:
    with hub.http(hub.admin_token) as admin:
        model_id = _model_for(admin, task)
    with hub.http(hub.token) as http:
        body = {"task": task, "hfModel": model_id, "providerModel": f"p-{task}"}
        created = ok(http.post(f"/api/partners/{OTHER}/models", json=body))
        assert created["task"] == task and created["status"] == "staging"
        listing = ok(http.get(f"/api/partners/{OTHER}/models"))
        assert listing[task][model_id]["_id"] == created["_id"]


# --- prices per unit ---------------------------------------------------------------------------------


def test_partners_declare_prices_per_unit_that_v1_models_shows_and_the_router_charges(hub: Hub) -> None:
    """Seconds of audio priced by unitNanoUsd, images by imageNanoUsd: /v1/models shows each with its
    unit, and a transcription's estimate is its seconds at that price."""
    asr, image = hub.models["automatic-speech-recognition"], hub.models["image"]
    audio_prices = {"prices": [{"providerModel": asr, "unitNanoUsd": "100000"}]}
    image_prices = {"prices": [{"providerModel": "reference-image", "imageNanoUsd": "2500000"}]}
    with hub.http(hub.outsider) as http:
        error_of(http.put(f"/api/partners/{HF_INFERENCE}/prices", json=audio_prices), 403)
    with hub.http(hub.token) as http:
        stored = ok(http.put(f"/api/partners/{HF_INFERENCE}/prices", json=audio_prices))
        assert stored["prices"][0]["unitNanoUsd"] == "100000"
        ok(http.put(f"/api/partners/{PROVIDER}/prices", json=image_prices))
        bad = {"prices": [{"providerModel": asr, "unitNanoUsd": "-1"}]}
        assert error_of(http.put(f"/api/partners/{HF_INFERENCE}/prices", json=bad), 400)["param"].endswith(
            "unit_nano_usd"
        )

        def unit_price(model: str, provider: str) -> dict | None:
            entries = ok(http.get(f"/v1/models/{model}"))["providers"]
            return next(p for p in entries if p["provider"] == provider).get("unit_price")

        seconds = {"task": "automatic-speech-recognition", "unit": "audio_second", "nano_usd": "100000", "usd": 0.0001}
        assert eventually(lambda: unit_price(asr, HF_INFERENCE)) == seconds
        images = {"task": "text-to-image", "unit": "image", "nano_usd": "2500000", "usd": 0.0025}
        assert eventually(lambda: unit_price(image, PROVIDER)) == images
        before = asr_usage(http, hub.user)
        answer = http.post(
            f"/{HF_INFERENCE}/models/{asr}", content=wav_bytes(2.0), headers={"Content-Type": "audio/wav"}
        )
        assert answer.status_code == 200, answer.text
        after = eventually(lambda: (line := asr_usage(http, hub.user))["requests"] == before["requests"] + 1 and line)
    assert int(after["units"]) == int(before["units"]) + 2  # seconds of audio
    assert int(after["pendingNanoUsdExact"]) == int(before["pendingNanoUsdExact"]) + 2 * 100_000


def asr_usage(http: httpx.Client, user: str) -> dict:
    """The user's transcriptions this month: the by-task line of the usage report."""
    lines = ok(http.get("/v1/billing/usage", params={"account": user}))["byTask"]
    empty = {"requests": 0, "units": "0", "pendingNanoUsdExact": "0"}
    return next((line for line in lines if line["task"] == "automatic-speech-recognition"), empty)


def test_a_stored_mapping_of_an_unserved_task_is_listed_as_error_and_can_only_be_deleted(hub: Hub) -> None:
    """A mapping stored by an older version (written here as another replica would, with its change
    notice): the listing says why it is not routed, the hub's model info leaves it out, and a status
    change is refused; deleting it works."""
    model, mapping_id = f"{unique('ns')}/captioner", secrets.token_hex(12)
    with hub.http(hub.admin_token) as admin:
        _post(admin, "/admin/v1/models:batchUpsert", {"models": [{"id": model, "pipelineTag": "image-to-text"}]})
    with sqlite3.connect(hub.data_dir / "registry.db") as db:
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM mappings").fetchone()[0]
        db.execute(
            "INSERT INTO mappings (id, seq, provider, type, task, hf_model, tags_key, provider_model, status,"
            " adapter_type, create_time, status_reason)"
            " VALUES (?, ?, ?, 'model', 'image-to-text', ?, '', 'cap', 'live', '', ?, '')",
            (mapping_id, seq, PROVIDER, model, datetime.now(UTC).isoformat(" ")),
        )
        db.execute(
            "INSERT INTO changes (origin, kind, key, create_time) VALUES ('older-replica', ?, ?, ?)",
            (internal_pb.CHANGE_KIND_MAPPING, PROVIDER, datetime.now(UTC).isoformat(" ")),
        )
    with hub.http(hub.token) as http:

        def listed() -> dict | None:
            return ok(http.get(f"/api/partners/{PROVIDER}/models")).get("image-to-text", {}).get(model)

        entry = eventually(listed)
        assert entry["status"] == "error" and "not served by Switchboard" in entry["statusReason"]
        info = ok(http.get(f"/api/models/{model}", params={"expand": "inferenceProviderMapping"}))
        assert info["inferenceProviderMapping"] == {}
        path = f"/api/partners/{PROVIDER}/models/{mapping_id}"
        refused = error_of(http.put(f"{path}/status", json={"status": "live"}), 400)
        assert refused["code"] == "task_not_served"
        assert http.delete(path).status_code == 200
        assert eventually(lambda: listed() is None)
