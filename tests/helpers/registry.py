"""Helpers for the Registry tests: a provider with its org, users of each role and a catalog."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import httpx

from services.cli import main


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Every provider secret the tests registered: no answer checked by ok() or
# error_of(), and no log of the stack, may ever contain one.
ALL_SECRETS: list[str] = []


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in ALL_SECRETS if secret in text]
    assert not leaked, "a provider secret was echoed"


def ok(answer: httpx.Response, status: int = 200) -> dict:
    assert_no_secret(answer.text + str(answer.headers))
    assert answer.status_code == status, answer.text
    return answer.json()


def error_of(answer: httpx.Response, status: int) -> dict:
    """The OpenAI-shaped error of an answer with this status."""
    assert_no_secret(answer.text + str(answer.headers))
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@dataclass
class World:
    """One provider, its org, a writer, a reader, an org admin and an outsider, and some models."""

    provider: str
    org: str
    tokens: dict[str, str] = field(default_factory=dict)  # role name -> token
    users: dict[str, str] = field(default_factory=dict)  # role name -> user name
    models: dict[str, str] = field(default_factory=dict)  # short name -> hub model id
    secrets: list[str] = field(default_factory=list)


def create_user(admin: httpx.Client, org: str | None, role: str | None) -> tuple[str, str]:
    """A new user (member of org with role, when given) and a token of theirs."""
    user = unique("user")
    ok(admin.post("/admin/v1/users", json={"name": user}))
    if org and role:
        ok(admin.put(f"/admin/v1/orgs/{org}/members/{user}", json={"role": role}))
    token = ok(admin.post(f"/admin/v1/users/{user}/tokens", json={"name": "main"}))["token"]
    return user, token


def build_world(admin: httpx.Client) -> World:
    org = unique("org")
    ok(admin.post("/admin/v1/orgs", json={"name": org}))
    provider = unique("prov")
    api_key = "sk-secret-" + uuid.uuid4().hex
    billing_authorization = "Bearer billing-secret-" + uuid.uuid4().hex
    ALL_SECRETS.extend([api_key, billing_authorization])  # before the call that sends them
    ok(
        admin.post(
            "/admin/v1/providers",
            json={
                "id": provider,
                "org": org,
                "baseUrl": "http://127.0.0.1:9/",
                "apiKey": api_key,
                "tasks": ["conversational", "text-to-image"],
                "billingUrl": "http://127.0.0.1:9/costs",
                "billingAuthorization": billing_authorization,
            },
        )
    )
    world = World(provider=provider, org=org, secrets=[api_key, billing_authorization])
    for name, role in (("writer", "write"), ("reader", "read"), ("orgadmin", "admin"), ("outsider", None)):
        world.users[name], world.tokens[name] = create_user(admin, org if role else None, role)
    ns = unique("ns")
    world.models = {
        "chat": f"{ns}/chat",
        "plain": f"{ns}/plain-llm",
        "vlm": f"{ns}/vlm",
        "image": f"{ns}/image",
        "lora": f"{ns}/lora",
        "lora2": f"{ns}/lora-two",
    }
    base = f"base_model:adapter:{ns}/image"
    models = [
        {"id": world.models["chat"], "pipelineTag": "text-generation", "tags": ["conversational", "llama"]},
        {"id": world.models["plain"], "pipelineTag": "text-generation", "tags": ["llama"]},
        {"id": world.models["vlm"], "pipelineTag": "image-text-to-text", "tags": ["conversational"]},
        {"id": world.models["image"], "pipelineTag": "text-to-image", "tags": ["diffusers"]},
        {
            "id": world.models["lora"],
            "pipelineTag": "text-to-image",
            "tags": ["lora", base, "style"],
            "adapterWeightsPath": "lora.safetensors",
        },
        {"id": world.models["lora2"], "pipelineTag": "text-to-image", "tags": ["lora", base]},
    ]
    assert ok(admin.post("/admin/v1/models:batchUpsert", json={"models": models}))["upsertedCount"] == len(models)
    world.models["base_tag"] = base
    return world


SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def cli(stack, *argv: str, check: bool = True, process: bool = False) -> subprocess.CompletedProcess:
    """`switchboard <argv> --url <stack>` with the stack's admin token: what it printed and its exit
    status. It runs in this process through the command's main() (a fresh Python process costs
    about a second of CPU); with `process`, as the installed command, a process of its own."""
    args = [*argv, "--url", stack.base_url]
    environment = {"SWITCHBOARD_ADMIN_TOKEN": stack.admin_token}
    if process:
        env = {**os.environ, **environment}
        result = subprocess.run([SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=120)
    else:
        result = _in_process(args, environment)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _in_process(args: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    """services.cli.main(args) with its output captured and its SystemExit read as the
    interpreter reads it at exit (None: 0; a number: itself; a message: printed to stderr, 1)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code: object = None
    with mock.patch.dict(os.environ, environment), redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code
    if code is not None and not isinstance(code, int):
        print(code, file=stderr)
        code = 1
    return subprocess.CompletedProcess(["switchboard", *args], code or 0, stdout.getvalue(), stderr.getvalue())
