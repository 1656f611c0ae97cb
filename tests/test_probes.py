"""Health probes on a real stack, through Envoy: a provider that starts failing has its live
mapping turned to error after N probes (the partners listing and /v1/models say so with the
reason), it leaves routing while the next provider serves, and it returns to live when its
probes pass again. Waits are on conditions, with deadlines."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from helpers.registry import ALL_SECRETS, assert_no_secret, error_of, ok
from helpers.waiting import eventually

from services.demo import AdminApi, reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, free_port, http_ok

PROVIDER_KEY = "ref-key-" + uuid.uuid4().hex


@dataclass
class World:
    stack: object
    urls: list[str]
    providers: list[str]
    model: str
    token: str

    def entry(self, provider: str) -> dict:
        with self.stack.http(self.token) as http:
            return ok(http.get(f"/api/partners/{provider}/models"))["conversational"][self.model]

    def listed(self) -> dict[str, dict]:
        with self.stack.http(self.token) as http:
            return {p["provider"]: p for p in ok(http.get(f"/v1/models/{self.model}"))["providers"]}

    def chat(self, **extra: object) -> httpx.Response:
        body = {"model": self.model, "messages": [{"role": "user", "content": "hello"}], **extra}
        with self.stack.http(self.token) as http:
            return http.post("/v1/chat/completions", json=body)


@pytest.fixture(scope="module")
def world(make_stack, tmp_path_factory) -> Iterator[World]:
    ALL_SECRETS.append(PROVIDER_KEY)
    stack = make_stack(
        SWITCHBOARD_PROBES_ENABLED="true",
        SWITCHBOARD_PROBE_INTERVAL_SECONDS="0.2",
        SWITCHBOARD_PROBE_FAILURE_THRESHOLD="2",
        SWITCHBOARD_PROBE_TIMEOUT_SECONDS="5",
    )
    processes = Stack(tmp_path_factory.mktemp("providers"), dict(os.environ))
    urls = []
    for name in ("first", "second"):
        url = f"http://127.0.0.1:{free_port()}"
        secrets = reference_provider_secrets(api_key=PROVIDER_KEY)
        argv = reference_provider_argv(int(url.rsplit(":", 1)[1]))
        processes.start(f"reference_{name}", argv, http_ok(f"{url}/health"), env=secrets)
        urls.append(url)
    try:
        processes.wait_ready()
        api = AdminApi(stack.base_url, stack.admin_token)
        suffix = uuid.uuid4().hex[:8]
        org, user = f"org-{suffix}", f"user-{suffix}"
        api.ensure_member(org, user)
        model = f"{org}/chat"
        api.call(
            "POST",
            "/admin/v1/models:batchUpsert",
            {"models": [{"id": model, "pipelineTag": "text-generation", "tags": ["conversational"]}]},
        )
        providers = []
        for rank, url in enumerate(urls):
            provider = f"p{rank}-{suffix}"
            api.ensure_provider(
                {"id": provider, "org": org, "baseUrl": url, "apiKey": PROVIDER_KEY, "tasks": ["conversational"],
                 "defaultRank": rank}
            )  # fmt: skip
            body = {"task": "conversational", "hfModel": model, "providerModel": "m", "status": "live"}
            api.call("POST", f"/api/partners/{provider}/models", body)
            providers.append(provider)
        yield World(stack, urls, providers, model, api.new_token(user))
    finally:
        processes.stop()


def set_failing(url: str, failing: bool) -> None:
    answer = httpx.post(
        f"{url}/debug/knobs", json={"fail_rate": 1.0 if failing else 0.0, "fail_status": 503}, timeout=30
    )
    assert answer.status_code == 200, answer.text


def test_a_failing_provider_goes_error_leaves_routing_and_comes_back(world) -> None:
    first, second = world.providers
    assert world.entry(first)["status"] == "live"
    set_failing(world.urls[0], True)
    try:
        entry = eventually(lambda: (e := world.entry(first))["status"] == "error" and e)
        assert entry["statusReason"] == "HTTP 503"
        # The Routers learn it from the Registry's change feed, a moment later.
        listed = eventually(lambda: (found := world.listed())[first]["status"] == "error" and found)
        assert (listed[first]["status"], listed[first]["status_reason"]) == ("error", "HTTP 503")
        assert listed[second]["status"] == "live" and "status_reason" not in listed[second]
        served = world.chat()
        assert served.status_code == 200 and served.headers["x-inference-provider"] == second
        refused = error_of(world.chat(provider=first), 404)
        assert refused["code"] == "model_not_available"
        assert f"{first}: failing its health probes (HTTP 503)" in refused["message"]
        assert_no_secret(str(listed) + str(entry))
        with world.stack.http(world.token) as http:
            only_errors = ok(http.get(f"/api/partners/{first}/models", params={"status": "error"}))
        assert list(only_errors["conversational"]) == [world.model]

        set_failing(world.urls[1], True)  # now no provider is left: the 404 names each and why
        eventually(lambda: world.entry(second)["status"] == "error")
        eventually(lambda: world.listed()[second]["status"] == "error")
        nobody = error_of(world.chat(), 404)
        assert nobody["code"] == "model_not_available"
        for provider in (first, second):
            assert f"{provider}: failing its health probes (HTTP 503)" in nobody["message"]
    finally:
        set_failing(world.urls[0], False)
        set_failing(world.urls[1], False)
    eventually(lambda: world.entry(second)["status"] == "live")
    back = eventually(lambda: (e := world.entry(first))["status"] == "live" and e)
    assert "statusReason" not in back
    listed = eventually(lambda: (found := world.listed())[first]["status"] == "live" and found)
    assert "status_reason" not in listed[first]
    answer = world.chat(provider=first)
    assert answer.status_code == 200 and answer.headers["x-inference-provider"] == first


@pytest.mark.parametrize("task", ["feature-extraction", "automatic-speech-recognition", "image-classification"])
def test_a_mapping_of_any_served_task_is_probed_with_its_tasks_sample(world, task: str) -> None:
    """Probed with the conformance check's sample of its task: error while its provider fails,
    live again once the sample is answered as the Router accepts it."""
    first = world.providers[0]
    model = f"{world.model.split('/')[0]}/{task}"
    api = AdminApi(world.stack.base_url, world.stack.admin_token)
    api.call("POST", "/admin/v1/models:batchUpsert", {"models": [{"id": model, "pipelineTag": task, "tags": [task]}]})
    api.call(
        "POST",
        f"/api/partners/{first}/models",
        {"task": task, "hfModel": model, "providerModel": f"reference-{task}", "status": "live"},
    )

    def entry() -> dict:
        with world.stack.http(world.token) as http:
            return ok(http.get(f"/api/partners/{first}/models"))[task][model]

    set_failing(world.urls[0], True)
    try:
        failing = eventually(lambda: (e := entry())["status"] == "error" and e)
        assert failing["statusReason"] == "HTTP 503"
    finally:
        set_failing(world.urls[0], False)
    back = eventually(lambda: (e := entry())["status"] == "live" and e)
    assert "statusReason" not in back
