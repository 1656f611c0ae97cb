"""Secrets never leave, through real Envoy: a provider that echoes its API key and
billing authorization everywhere (every field of its error bodies, its answers, its
stream — each secret split over consecutive events —, its headers, its images, its audio and its media
types, its hub-format task answers, its cost API;
plain, percent-encoded, base64 and base64url at shifted alignments, hex in either case, JSON
escapes) never gets either into an answer on any route (ROUTES: one line per route), a
conformance report, a health page, a log line or any byte of any file in the data directory
(WAL files included), and every file there is private. Short secrets are refused. The demo's
processes carry no secret in their argv."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import orjson
import pytest
from aiohttp import web
from helpers.secrets import assert_gone, json_escaped, recoverable

from services.demo import AdminApi
from services.launcher import free_port

API_KEY = "sk-echo-" + uuid.uuid4().hex
CREDENTIAL = "bill-echo-" + uuid.uuid4().hex
AUTHORIZATION = f"Bearer {CREDENTIAL}"
SECRETS = (API_KEY, AUTHORIZATION, CREDENTIAL)
ENCODINGS: dict[str, Callable[[str], str]] = {
    "plain": lambda s: s,
    "url": lambda s: quote(s, safe=""),
    "plus": quote_plus,
    "b64": lambda s: base64.b64encode(s.encode()).decode(),
    # the Authorization header echoed: "Bearer " shifts the alignment of the key's base64
    "b64shift": lambda s: base64.b64encode(f"Bearer {s}".encode()).decode(),
    "b64url": lambda s: base64.urlsafe_b64encode(b"x" + s.encode()).decode().rstrip("="),
    "hex": lambda s: s.encode().hex(),
    "HEX": lambda s: ("Bearer " + s).encode().hex().upper(),
    "json": json_escaped,
    "urlb64": lambda s: quote(base64.b64encode(b"xy" + s.encode()).decode(), safe=""),
}
# Provider behaviours: HTTP status and how the secrets are encoded ("text": not JSON); "leaky"
# answers 200 with an image that carries the key.
ERROR_MODES = ["400-plain", "422-url", "404-plus", "409-b64", "418-plain", "413-text", "400-b64shift", "422-hex",
               "404-HEX", "409-json", "400-b64url", "422-urlb64"]  # fmt: skip
OK_MODES = ["ok", "leaky"]
# Speech in the leaky mode, by the voice asked for: the key in the answer's media type, or in its audio.
KEY_IN_TYPE, KEY_IN_AUDIO = "alloy", "echo"
DEADLINE_SECONDS = 60
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really").decode()
LEAKY_PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\ntEXt" + API_KEY.encode() + b"IEND").decode()


def split(text: str, parts: int = 3) -> list[str]:
    """The text cut in `parts` pieces (a secret split over consecutive stream events)."""
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def echoes(encode: Callable[[str], str]) -> dict:
    """Every secret in every field an OpenAI error has, and nested ones."""
    key, authorization, credential = map(encode, SECRETS)
    return {
        "error": {
            "message": f"bad key {key}; auth {authorization}",
            "type": credential,
            "param": key,
            "code": authorization,
            "details": {key: [authorization, {"credential": credential}]},
        }
    }


def echo_headers() -> dict[str, str]:
    headers = {f"X-Echo-{name}-{i}": encode(s) for name, encode in ENCODINGS.items() for i, s in enumerate(SECRETS)}
    request_id = "-".join([uuid.uuid4().hex, *(encode(API_KEY) for encode in ENCODINGS.values())])
    return {**headers, "Inference-Id": request_id, "WWW-Authenticate": AUTHORIZATION}


def chunk(content: str, **extra: object) -> bytes:
    event = {"id": "c1", "object": "chat.completion.chunk", "model": "m", **extra,
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}  # fmt: skip
    return b"data: " + orjson.dumps(event) + b"\n\n"


def echoed_text() -> str:
    return " ".join(encode(s) for encode in ENCODINGS.values() for s in SECRETS)


async def inference(request: web.Request) -> web.StreamResponse:
    mode, route = request.match_info["mode"], request.match_info.get("route", "hub")
    if mode not in OK_MODES:
        status, encoding = mode.split("-")
        if encoding == "text":
            return web.Response(status=int(status), text=f"<html>{echoed_text()}</html>", headers=echo_headers())
        return web.json_response(echoes(ENCODINGS[encoding]), status=int(status), headers=echo_headers())
    if route == "embeddings":
        inputs = (await request.json())["input"]
        vectors = [{"object": "embedding", "index": i, "embedding": [0.5, 0.25]} for i in range(len(inputs))]
        answer = {"object": "list", "data": vectors, "model": echoed_text(),
                  "usage": {"prompt_tokens": 3, "total_tokens": 3}}  # fmt: skip
        return web.json_response(answer, headers=echo_headers())
    if route == "hub":  # text-classification in the hub's format
        return web.json_response([{"label": echoed_text(), "score": 0.9}], headers=echo_headers())
    if route == "audio/speech":
        voice = (await request.json())["voice"]
        audio = b"RIFF" + (API_KEY.encode() if mode == "leaky" and voice == KEY_IN_AUDIO else b"-") * 64
        media_type = f"audio/x-{API_KEY}" if mode == "leaky" and voice == KEY_IN_TYPE else "audio/wav"
        return web.Response(body=audio, headers={**echo_headers(), "Content-Type": media_type})
    if route == "images/generations":
        image = LEAKY_PNG_B64 if mode == "leaky" else PNG_B64
        answer = {"created": 1, "data": [{"b64_json": image, "revised_prompt": echoed_text()}]}
        return web.json_response(answer, headers=echo_headers())
    if not (await request.json()).get("stream"):
        message = {"role": "assistant", "content": echoed_text(), API_KEY: AUTHORIZATION}
        answer = {"id": "c1", "object": "chat.completion", "model": "m", "echo": list(SECRETS),
                  "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}}  # fmt: skip
        return web.json_response(answer, headers=echo_headers())
    response = web.StreamResponse(headers={**echo_headers(), "Content-Type": "text/event-stream"})
    await response.prepare(request)
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    # every secret in every encoding, each split over three consecutive events' content
    pieces = [piece for encode in ENCODINGS.values() for s in SECRETS for piece in [" ", *split(encode(s))]]
    lines = [f": {echoed_text()}\n\n".encode(), chunk(echoed_text(), echo=API_KEY),
             *(chunk(piece) for piece in pieces),
             f"data: not json {echoed_text()}\n\n".encode(), chunk("", usage=usage), b"data: [DONE]\n\n"]  # fmt: skip
    for line in lines:
        await response.write(line)
    return response


async def costs(request: web.Request) -> web.Response:
    """Prices every id asked, and echoes the secrets in entries it knows are wrong."""
    asked = (await request.json())["requestIds"]
    entries: list[object] = [{"requestId": rid, "costNanoUsd": 1000} for rid in asked]
    for encode in ENCODINGS.values():
        entries += [encode(AUTHORIZATION), {"requestId": encode(API_KEY)}, {"requestId": asked[0], encode(API_KEY): 1}]
    return web.json_response({"requests": entries, "note": echoed_text()}, headers=echo_headers())


@contextmanager
def echoing_upstream() -> Iterator[str]:
    """The echoing provider (aiohttp on its own loop and thread); yields its base URL."""
    app = web.Application()
    app.router.add_post("/{mode}/v1/{route:chat/completions|images/generations|embeddings|audio/speech}", inference)
    app.router.add_post("/{mode}/models/{model}", inference)
    app.router.add_post("/costs", costs)
    loop, runner, port = asyncio.new_event_loop(), web.AppRunner(app), free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def register(api: AdminApi, org: str, upstream: str, mode: str) -> dict[str, str]:
    """A provider playing `mode`, serving a chat and an image model of its own: the names of the
    provider, its models and its chat mapping."""
    provider = f"echo-{mode}-{uuid.uuid4().hex[:6]}"
    api.ensure_provider({
        "id": provider, "org": org, "base_url": f"{upstream}/{mode}", "api_key": API_KEY,
        "tasks": ["conversational", "text-to-image", "feature-extraction", "text-to-speech", "text-classification"],
        "billing_url": f"{upstream}/costs",
        "billing_authorization": AUTHORIZATION,
    })  # fmt: skip
    chat, image, embed = f"{org}/chat-{provider}", f"{org}/image-{provider}", f"{org}/embed-{provider}"
    speech, classes = f"{org}/speech-{provider}", f"{org}/classes-{provider}"
    catalog = [{"id": chat, "pipeline_tag": "text-generation", "tags": ["conversational"]},
               {"id": image, "pipeline_tag": "text-to-image", "tags": ["text-to-image"]},
               {"id": embed, "pipeline_tag": "feature-extraction"},
               {"id": speech, "pipeline_tag": "text-to-speech"},
               {"id": classes, "pipeline_tag": "text-classification"}]  # fmt: skip
    api.call("POST", "/admin/v1/models:batchUpsert", {"models": catalog})
    served = (
        ("conversational", chat, "chat"),
        ("text-to-image", image, "image"),
        ("feature-extraction", embed, "embed"),
        ("text-to-speech", speech, "speech"),
        ("text-classification", classes, "classes"),
    )
    mappings = [
        api.call("POST", f"/api/partners/{provider}/models", {"task": task, "hfModel": model,
                 "providerModel": f"upstream-{kind}", "status": "live"})["_id"]
        for task, model, kind in served
    ]  # fmt: skip
    return {"{provider}": provider, "{chat}": chat, "{image}": image, "{embed}": embed, "{speech}": speech,
            "{classes}": classes, "{mapping}": mappings[0]}  # fmt: skip


HI = [{"role": "user", "content": "hi"}]
# Every inference route, one line each: (path, body), "{provider}", "{chat}" and "{image}" standing
# for the provider and its hub models (the per-provider routes take the provider's model ids). A new
# route is one more line here (and a handler in the echoing upstream for its provider path).
ROUTES: list[tuple[str, dict]] = [
    ("/v1/chat/completions", {"model": "{chat}", "messages": HI}),
    ("/v1/chat/completions", {"model": "{chat}", "messages": HI, "stream": True}),
    ("/v1/images/generations", {"model": "{image}", "prompt": "a cat"}),
    ("/v1/images/generate", {"model": "{image}", "prompt": "a cat"}),
    ("/models/{image}", {"inputs": "a cat"}),
    ("/{provider}/v1/chat/completions", {"model": "upstream-chat", "messages": HI}),
    ("/{provider}/v1/chat/completions", {"model": "upstream-chat", "messages": HI, "stream": True}),
    ("/{provider}/v1/images/generations", {"model": "upstream-image", "prompt": "a cat"}),
    ("/v1/embeddings", {"model": "{embed}", "input": ["a", "b"]}),
    ("/v1/responses", {"model": "{chat}", "input": "hi"}),
    ("/v1/responses", {"model": "{chat}", "input": "hi", "stream": True}),
    ("/v1/messages", {"model": "{chat}", "max_tokens": 16, "messages": HI}),
    ("/v1/messages", {"model": "{chat}", "max_tokens": 16, "messages": HI, "stream": True}),
    ("/v1/completions", {"model": "{chat}", "prompt": "hi"}),
    ("/v1/audio/speech", {"model": "{speech}", "input": "hi", "voice": KEY_IN_TYPE}),
    ("/v1/audio/speech", {"model": "{speech}", "input": "hi", "voice": KEY_IN_AUDIO}),
    ("/models/{classes}", {"inputs": "hi"}),
]
# The leaky mode's answers refused (502) rather than passed on: a decoded image, audio whose type
# or bytes carry the key; its other answers are redacted.
LEAKY_REFUSED = {"/models/{image}", "/v1/audio/speech"}
# What partners and operators read of a provider's answers, after the calls: the conformance
# report (a check run first) and the Router's health page (recent errors, redacted).
READS = [
    ("POST", "/api/partners/{provider}/models/{mapping}:check"),
    ("GET", "/api/partners/{provider}/models/{mapping}/conformanceReport"),
    ("GET", "/api/partners/{provider}/health"),
]
CHECKED_MODES = ["ok", "leaky", "400-b64shift", "413-text"]  # a conformance check takes a while


def filled(template: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        template = template.replace(name, value)
    return template


def shown(response: httpx.Response) -> str:
    """All a caller sees of an answer."""
    return response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert_gone(secret, text)
        assert not recoverable(secret, text), secret


@pytest.fixture(scope="module")
def echoed(make_stack):
    """A stack after every route met every echoing behaviour, and a reconciliation."""
    with echoing_upstream() as upstream:
        sb = make_stack(SWITCHBOARD_RECONCILE_INTERVAL_SECONDS="3600")
        api = AdminApi(sb.base_url, sb.admin_token)
        org, user = f"org-{uuid.uuid4().hex[:6]}", f"user-{uuid.uuid4().hex[:6]}"
        api.ensure_member(org, user)
        token = api.new_token(user)
        answers: dict[tuple[str, int], httpx.Response] = {}
        reads: list[httpx.Response] = []
        with sb.http(token) as http, sb.admin() as admin:
            for mode in [*ERROR_MODES, *OK_MODES]:
                names = register(api, org, upstream, mode)
                for index, (path, body) in enumerate(ROUTES):
                    call = {k: filled(v, names) if isinstance(v, str) else v for k, v in body.items()}
                    answers[(mode, index)] = http.post(filled(path, names), json=call)
                for method, path in READS if mode in CHECKED_MODES else READS[2:]:
                    reads.append(admin.request(method, filled(path, names), json={} if method == "POST" else None))
        billed = [mode for (mode, _), answer in answers.items() if answer.status_code == 200]
        # one request per provider stays pending: its cost API answers it twice (once with an echo)
        yield sb, answers, reconcile_until_settled(sb, len(billed) - len(set(billed))), reads


def reconcile_until_settled(sb, settled: int) -> list[httpx.Response]:
    """Reconciles until `settled` requests were (the Router's ledger records reach Billing
    in batches); the answers."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    answers: list[httpx.Response] = []
    with sb.admin() as admin:
        while sum(a.json().get("settled", 0) for a in answers if a.status_code == 200) < settled:
            assert time.monotonic() < deadline, [a.text for a in answers]
            answers.append(admin.post("/admin/v1/billing:reconcile", json={}, timeout=120))
            time.sleep(0.2)
    return answers


def test_no_answer_carries_a_secret(echoed) -> None:
    _, answers, reconciled, _ = echoed
    assert len(answers) == len(ROUTES) * (len(ERROR_MODES) + len(OK_MODES))
    for (mode, index), response in answers.items():
        path, stream = ROUTES[index][0], bool(ROUTES[index][1].get("stream"))
        assert_no_secret(shown(response))
        if mode == "leaky" and path in LEAKY_REFUSED:  # refused, never redacted
            assert response.status_code == 502, (path, response.text)
            assert "carried a secret" in response.text or ROUTES[index][1].get("voice") == KEY_IN_TYPE, response.text
        elif mode in OK_MODES:
            assert response.status_code == 200, (path, response.text)
        else:
            status = int(mode.split("-")[0])
            assert response.status_code == (status if status != 418 else 502), (mode, path, stream, response.text)
            shape = {"message", "type"} if path.endswith("/messages") else {"message", "type", "param", "code"}
            assert set(response.json()["error"]) >= shape
    ok_stream = answers[("ok", ROUTES.index(("/v1/chat/completions", {**ROUTES[0][1], "stream": True})))]
    assert "[redacted]" in ok_stream.text and ok_stream.text.rstrip().endswith("data: [DONE]")
    # every ok answer billed; one is left pending: the cost API answers it twice (once with an echo)
    leaky_billed = sum(1 for path, _ in ROUTES if path not in LEAKY_REFUSED)
    assert sum(answer.json().get("settled", 0) for answer in reconciled) == (len(ROUTES) - 1) + (leaky_billed - 1)
    for answer in reconciled:
        assert answer.status_code == 200, answer.text
        assert_no_secret(shown(answer))


def test_no_report_or_health_page_carries_a_secret(echoed) -> None:
    _, _, _, reads = echoed
    assert len(reads) == len(CHECKED_MODES) * len(READS) + (len(ERROR_MODES) + len(OK_MODES) - len(CHECKED_MODES))
    for read in reads:
        assert read.status_code == 200, read.text
        assert_no_secret(shown(read))
    reports = [read.json() for read in reads if "checks" in read.json()]
    assert len(reports) == 2 * len(CHECKED_MODES) and any("[redacted]" in str(report) for report in reports)


def test_no_log_line_or_file_byte_carries_a_secret_and_every_file_is_private(echoed) -> None:
    sb, _, _, _ = echoed
    data_dir: Path = sb.stack.data_dir
    assert "cost for a request id never asked" in sb.logs()  # the echoes were logged, redacted
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    seen = set()
    for directory, subdirectories, files in os.walk(data_dir):
        for name in subdirectories:
            assert stat.S_IMODE((Path(directory) / name).stat().st_mode) == 0o700, (directory, name)
        for name in files:
            path = Path(directory) / name
            seen.add(name)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert_no_secret(path.read_bytes().decode("latin-1"))
    assert {"registry.db", "registry.db-wal", "registry.db-shm", "billing.db", "billing.db-wal", "secrets.key"} <= seen


def test_urls_with_credentials_are_refused_without_echoing_them(echoed) -> None:
    sb, _, _, _ = echoed
    password = "pw-" + uuid.uuid4().hex
    org, provider = f"org-{uuid.uuid4().hex[:6]}", f"creds-{uuid.uuid4().hex[:6]}"
    with sb.admin() as admin:
        assert admin.post("/admin/v1/orgs", json={"name": org}).status_code == 200
        body = {"id": provider, "org": org, "baseUrl": f"https://user:{password}@p.example"}
        creating = admin.post("/admin/v1/providers", json=body)
        assert admin.post("/admin/v1/providers", json={**body, "baseUrl": "https://p.example"}).status_code == 200
        updating = admin.patch(f"/admin/v1/providers/{provider}", json={"billingUrl": f"http://{password}@p.example"})
        # a base URL is shown to every caller: a key in its query (?key=...) or fragment would be too
        in_query = admin.patch(
            f"/admin/v1/providers/{provider}", json={"baseUrl": f"https://p.example/v1?key={password}"}
        )
        in_fragment = admin.patch(
            f"/admin/v1/providers/{provider}", json={"baseUrl": f"https://p.example/v1#{password}"}
        )
        refused = ((creating, "baseUrl"), (updating, "billingUrl"), (in_query, "baseUrl"), (in_fragment, "baseUrl"))
        for answer, field in refused:
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] == field
            assert password not in shown(answer)
        assert password not in admin.get("/v1/providers").text
    assert password not in sb.logs()


def test_the_demo_puts_no_secret_on_any_command_line(shared_demo) -> None:
    """The session's demo stack: started as `switchboard up --demo` starts it."""
    stack, _, admin_token, _ = shared_demo
    provider = next(child for child in stack.children if child.name == "reference_provider")
    secrets = [
        provider.env["REFERENCE_PROVIDER_API_KEY"],
        provider.env["REFERENCE_PROVIDER_BILLING_TOKEN"],
        admin_token,
        stack.env["SWITCHBOARD_SERVICE_CREDENTIAL"],
    ]
    assert all(len(secret) >= 16 for secret in secrets)
    assert {child.name for child in stack.children} >= {
        "registry",
        "billing",
        "router",
        "envoy",
        "reference_provider",
    }
    for child in stack.children:
        argv = Path(f"/proc/{child.process.pid}/cmdline").read_bytes().decode()
        for secret in secrets:
            assert secret not in argv, child.name


@pytest.mark.parametrize("field", ["apiKey", "billingAuthorization"])
def test_short_secrets_are_refused_naming_the_field(echoed, field: str) -> None:
    sb, _, _, _ = echoed
    org, provider = f"org-{uuid.uuid4().hex[:6]}", f"short-{uuid.uuid4().hex[:6]}"
    with sb.admin() as admin:
        assert admin.post("/admin/v1/orgs", json={"name": org}).status_code == 200
        body = {"id": provider, "org": org, "baseUrl": "https://p.example"}
        for short in ("k", "1", "fifteen-chars-1", "Bearer short-credential"[:20]):
            answer = admin.post("/admin/v1/providers", json={**body, field: short})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] == field and "16 characters" in answer.text
        assert admin.post("/admin/v1/providers", json={**body, field: "sixteen-chars-ok"}).status_code == 200
        updating = admin.patch(f"/admin/v1/providers/{provider}", json={field: "Bearer short"})
        assert updating.status_code == 400 and updating.json()["error"]["param"] == field, updating.text
