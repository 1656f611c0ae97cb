"""One answer per question (issue 23): a request whose resolution the Router has not cached
makes one Registry call, whose answer carries the providers it names (no provider table read
beside it), and a change of one of those providers reaches the next request. Counted by the
Router's own metric of its Registry calls, through the real stack."""

from __future__ import annotations

import json
import secrets
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from upstream_helpers import JsonHandler, serving

from services.demo import AdminApi

pytestmark = pytest.mark.slow
CALLS = "switchboard_router_registry_calls_total"
DEADLINE_SECONDS = 30.0


class Answering(JsonHandler):
    """A provider that answers every chat with the path it was called on as the content."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = {"role": "assistant", "content": self.path}
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "upstream-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self.send(200, json.dumps(body).encode())


class Counted:
    """Chat requests of one caller, each with the Registry calls the Router made for it."""

    def __init__(self, stack, token: str) -> None:
        self.stack, self.token = stack, token
        self.metrics = stack.stack.metrics["router"]

    def calls(self) -> dict[str, float]:
        text = httpx.get(self.metrics, timeout=10).text
        return {
            sample.labels["method"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == CALLS
        }

    def chat(self, model: str) -> tuple[httpx.Response, dict[str, float]]:
        """The answer, and the Registry calls by method made while it was made."""
        before = self.calls()
        with self.stack.http(self.token) as http:
            answer = http.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
            )
        after = self.calls()
        return answer, {method: n - before.get(method, 0) for method, n in after.items() if n > before.get(method, 0)}


@pytest.fixture(scope="module")
def upstream():
    with serving(Answering) as url:
        yield url


def test_a_cold_request_asks_the_registry_once_and_a_provider_change_reaches_the_next(stack, upstream) -> None:
    api, name = AdminApi(stack.base_url, stack.admin_token), uuid.uuid4().hex[:8]
    org, user, provider, model = f"org-{name}", f"user-{name}", f"p-{name}", f"org-{name}/chat"
    api.ensure_member(org, user)
    counted = Counted(stack, api.new_token(user))
    api.ensure_provider(
        {"id": provider, "org": org, "base_url": f"{upstream}/first", "api_key": secrets.token_hex(16),
         "tasks": ["conversational"]}
    )  # fmt: skip
    api.call("PUT", f"/admin/v1/providers/{provider}/prices", {"prices": [{"provider_model": "upstream-model"}]})
    entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
    api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
    mapping = {"task": "conversational", "hfModel": model, "providerModel": "upstream-model", "status": "live"}
    api.call("POST", f"/api/partners/{provider}/models", mapping)

    # The caller known to the Router (every notice of the writes above arrived: none drops it again).
    deadline = time.monotonic() + DEADLINE_SECONDS
    while "AuthenticateToken" in counted.chat(f"org-{name}/nothing")[1]:
        assert time.monotonic() < deadline, "the Router keeps asking who the caller is"

    answer, calls = counted.chat(model)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "/first/v1/chat/completions"
    assert calls == {"ResolveModel": 1}  # one answer: the candidates and the provider to call them on
    answer, calls = counted.chat(model)
    assert answer.status_code == 200 and calls == {}  # cached

    api.call("PATCH", f"/admin/v1/providers/{provider}", {"base_url": f"{upstream}/second"})
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (content := answer.json()["choices"][0]["message"]["content"]) == "/first/v1/chat/completions":
        assert time.monotonic() < deadline, "the provider's change never reached a request"
        answer, calls = counted.chat(model)
        assert answer.status_code == 200, answer.text
    assert content == "/second/v1/chat/completions"
    assert calls == {"ResolveModel": 1}  # the change dropped the resolution that carried the provider
