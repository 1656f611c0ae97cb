"""`switchboard up --demo` end to end, and the Router's behaviour when Billing goes away.

A private stack (the launcher's start_stack + the demo hook), because these
tests stop and restart Billing and change the demo account's limit.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from helpers.clients import http_client
from helpers.stacks import Stacks
from helpers.waiting import eventually
from PIL import Image

from services.demo import CHAT_MODEL, IMAGE_MODEL, LORA_MODEL, USER, AdminApi, start_demo
from services.launcher import Stack

pytestmark = pytest.mark.e2e  # starts processes

CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hello!"}]}


@dataclass
class Demo:
    stack: Stack
    base_url: str
    token: str
    lines: str

    def http(self) -> httpx.Client:
        return http_client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


@pytest.fixture(scope="module")
def demo(stacks: Stacks) -> Iterator[Demo]:
    with stacks.demo("demo") as (stack, base_url, _, lines):
        token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
        yield Demo(stack, base_url, token, lines)


def test_the_printed_demo_token_gets_a_chat_answer_a_stream_and_an_image(demo) -> None:
    assert "curl" in demo.lines and demo.token in demo.lines
    with demo.http() as http:
        answer = http.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200 and answer.headers["x-inference-provider"] == "demo"
        assert answer.json()["model"] == CHAT_MODEL and "Hello!" in answer.json()["choices"][0]["message"]["content"]
        with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = [line for line in stream.iter_lines() if line]
        assert events[-1] == "data: [DONE]" and len(events) > 3
        for model in (IMAGE_MODEL, LORA_MODEL):
            image = http.post(
                "/v1/images/generations", json={"model": model, "prompt": "a cat", "response_format": "b64_json"}
            )
            assert image.status_code == 200, image.text
            png = base64.b64decode(image.json()["data"][0]["b64_json"])
            assert Image.open(io.BytesIO(png)).format == "PNG"


def test_the_demo_hook_is_idempotent_on_a_running_stack(demo) -> None:
    admin_token = (demo.stack.data_dir / "admin-token").read_text().strip()
    lines = start_demo(demo.stack, demo.base_url, admin_token)
    token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
    answer = httpx.post(
        f"{demo.base_url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert answer.status_code == 200


def usage_requests(demo: Demo) -> int:
    with demo.http() as http:
        answer = http.get("/v1/billing/usage", params={"account": USER})
        return answer.json()["requests"] if answer.status_code == 200 else -1


def spool_is_empty(spool: Path) -> bool:
    """Every record the Router journaled has been acknowledged by Billing."""
    journal = spool / "journal.log"
    unsent = [*spool.glob("*.batch"), *spool.glob("*.sealed")]
    return not unsent and (not journal.exists() or journal.stat().st_size == 0)


def stop_service(demo: Demo, name: str) -> int:
    """Stops one service of the stack; returns its port."""
    child = next(c for c in demo.stack.children if c.name == name)
    child.process.terminate()
    child.process.wait(timeout=30)
    demo.stack.children.remove(child)
    return int(demo.stack.addresses[name].rsplit(":", 1)[1])


def start_service(demo: Demo, name: str, port: int, *options: str) -> None:
    demo.stack.start_service(name, port, *options)
    demo.stack.wait_ready()


def test_answers_keep_flowing_and_no_record_is_lost_while_billing_is_down(demo) -> None:
    spool = Path(demo.stack.data_dir) / "router-ledger-spool"
    assert eventually(lambda: spool_is_empty(spool))  # earlier tests' records have reached Billing
    before = eventually(lambda: (count,) if (count := usage_requests(demo)) >= 0 else None)[0]
    port = stop_service(demo, "billing")
    with demo.http() as http:
        for _ in range(3):
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert eventually(lambda: list(spool.glob("*.batch")), seconds=30)
    start_service(demo, "billing", port, "--registry-address", demo.stack.addresses["registry"])
    # the Router's send backoff may have grown while Billing was down: allow for its longest step
    assert eventually(lambda: usage_requests(demo) >= before + 3, seconds=120) and usage_requests(demo) == before + 3
    assert eventually(lambda: not list(spool.glob("*.batch")), seconds=30)


def test_the_router_follows_a_restarted_registry(demo) -> None:
    admin = AdminApi(demo.base_url, (demo.stack.data_dir / "admin-token").read_text().strip())
    name = f"restart-{uuid.uuid4().hex[:6]}"
    token = admin.new_token(USER, name)

    def chat_status() -> int:
        answer = httpx.post(
            f"{demo.base_url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        return answer.status_code

    assert chat_status() == 200
    start_service(demo, "registry", stop_service(demo, "registry"))
    assert eventually(lambda: chat_status() == 200, seconds=30)
    admin.call("DELETE", f"/admin/v1/users/{USER}/tokens/{name}")
    assert eventually(lambda: chat_status() == 401, seconds=30)  # the change feed is followed again


def test_a_reached_spending_limit_is_a_402_insufficient_quota(demo) -> None:
    with demo.http() as http:
        limit = http.put(f"/v1/billing/accounts/{USER}/limit", json={"limitNanoUsd": "1"})
        assert limit.status_code == 200, limit.text
        refused = eventually(
            lambda: (r := http.post("/v1/chat/completions", json=CHAT)).status_code == 402 and r, seconds=30
        )
        assert refused and orjson.loads(refused.content)["error"]["code"] == "insufficient_quota"
