"""The conformance check of one provider model mapping.

It calls the provider the way the Router does (services/common/provider_api.py) and
reports each check as "pass", "fail" or "skipped", with what was expected and what came
back: chat unary and streamed (SSE framing, [DONE], usage), a forced tool call, a
json_schema response_format, images as url and b64_json (text-to-image mappings), a sample
request of any other served task (services/registry/domain/task_checks.py), the request id header
(present, unique per request), the cost API (valid non-negative integers for exactly the
ids asked, with the configured authorization), an error in OpenAI's shape for a bad
request, and time to first token and throughput.

A hostile provider cannot hang or exhaust the check: every call runs under a timeout
(bounded by the caller's deadline), answers and streams are read up to a cap, and
everything the provider sent back is redacted of its secrets and truncated before it
reaches the report.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from google.protobuf import json_format
from sqlmodel import Session
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import registry_service_pb2 as registry_pb

from services.common.costs import InvalidCostAnswer, parse_cost_answer
from services.common.errors import ApiError, Code, not_found
from services.common.provider_api import (
    CHAT_PATH,
    IMAGES_PATH,
    MAX_ERROR_BODY_BYTES,
    AttemptFailed,
    Opened,
    checked_answer,
    encode,
    next_line,
    open_answer,
    read_capped,
    send,
)
from services.common.providers import ProviderEntry, Route
from services.registry.domain import capabilities
from services.registry.domain.messages import provider_config
from services.registry.domain.state import RegistryState
from services.registry.domain.task_checks import CHECKED_TASKS, described, sample_call
from services.registry.domain.validation import shown
from services.registry.storage import queries
from services.registry.storage.index import Mapping
from services.registry.storage.tables import ConformanceReportRow, ProviderRow

if TYPE_CHECKING:
    import aiohttp

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
CHAT, TEXT_TO_IMAGE = "conversational", "text-to-image"
MAX_SHOWN = 300  # characters of what came back, per check
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a unary answer (an image as b64_json fits)
MAX_STREAM_BYTES = 1024 * 1024
MAX_COST_ANSWER_BYTES = 1024 * 1024
MIN_CALL_SECONDS = 0.5
MOST_CHECKS_AT_ONCE = 8  # per replica
DEADLINE_MARGIN_SECONDS = 1.0  # of the caller's deadline, kept to store and send the report
PROMPT = [{"role": "user", "content": "Say hello in three words."}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF")
JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


@dataclass(frozen=True)
class Target:
    """What the check calls: the provider's route for the mapping, and its cost API."""

    route: Route
    billing_url: str
    billing_authorization: str = field(repr=False)  # a secret: never in a report


def target_of(row: ProviderRow, mapping: Mapping) -> Target:
    """The mapping's provider as the Router would call it (its key), with its cost API."""
    config = provider_config(row, internal_pb.PROVIDER_SECRETS_INFERENCE)
    route = Route(ProviderEntry.from_config(config), mapping.provider_model)
    return Target(route, row.billing_url, row.billing_authorization)


class HttpClient:
    """The Registry's pooled HTTP session for calls to providers (checks and probes), opened by
    the first of them: a Registry that calls no provider (probes off, no check asked) never loads
    aiohttp. `errors` are the exceptions a call raises when it fails on the way."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.errors: tuple[type[Exception], ...] = (OSError, ValueError)

    async def start(self) -> None:
        """Opens the session, unless it is open."""
        if self._session is not None:
            return
        # Imported at the first call to a provider, not at start: aiohttp costs a start ~0.1 CPU-s.
        import aiohttp

        # No total timeout here: each check and probe bounds its own calls.
        connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        self.errors = (aiohttp.ClientError, OSError, ValueError)

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class CheckFailed(Exception):
    """A check's call did not give what was expected; `got` says what came instead."""

    def __init__(self, got: str) -> None:
        super().__init__(got)
        self.got = got


class Check:
    """One conformance check run: the calls, their request ids, the results."""

    def __init__(self, http: HttpClient, target: Target, timeout: float) -> None:
        self.session = http.session
        self.errors = http.errors
        self.target = target
        self.route = target.route
        self.timeout = timeout
        self.request_ids: list[str] = []  # of every answer, "" where the header was missing
        self.ttft_ms = 0.0
        self.throughput = 0.0

    def shown(self, text: str) -> str:
        """What came back as a report may show it: secrets redacted, short."""
        text = self.route.provider.redactor.text(text)
        return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"

    def excerpt(self, value: object, most: int = 120) -> str:
        """The beginning of something the provider sent, for a failure's message: redacted before
        it is cut (a cut could leave part of a secret the redactor no longer recognizes)."""
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return repr(self.route.provider.redactor.text(text)[:most])

    async def run(self, task: str) -> list[registry_pb.ConformanceCheck]:
        """Every check in a fixed order; the calls of independent checks run at once."""
        chat_task, image_task = task == CHAT, task == TEXT_TO_IMAGE
        first = await asyncio.gather(
            self._check("chat", "a chat.completion with a message and integer usage", self._chat, chat_task),
            self._check(
                "chat_stream",
                "text/event-stream of chat.completion.chunk data events, a usage event, then data: [DONE]",
                self._stream,
                chat_task,
            ),
            self._check("tools", "a tool call of get_weather with JSON object arguments", self._tools, chat_task),
            self._check(
                "response_format", "message content that is JSON matching the json_schema", self._schema, chat_task
            ),
            self._check("images_url", "data[0].url, an http(s) URL", lambda: self._image("url"), image_task),
            self._check(
                "images_b64_json", "data[0].b64_json, a base64 image", lambda: self._image("b64_json"), image_task
            ),
            self._check(
                "error_shape",
                'a 4xx with {"error": {message, type, param, code}}',
                lambda: self._error_shape(image_task),
                chat_task or image_task,
            ),
            self._check(
                "task",
                f"a {task} answer the Router accepts, to a sample request in the provider's format for the task",
                lambda: self._task(task),
                task in CHECKED_TASKS,
                "chat and text-to-image mappings are checked above",
            ),
        )
        ids = self._request_ids()
        costs = await self._check(
            "cost_api",
            "a 200 with a non-negative integer costNanoUsd for exactly the request ids asked",
            self._costs,
            bool(self.target.billing_url) and any(self.request_ids),
            "no cost API is configured"
            if not self.target.billing_url
            else "no answer carried a request id to ask about",
        )
        return [*first, ids, costs, self._latency()]

    async def _check(
        self,
        name: str,
        expected: str,
        call: Callable[[], Awaitable[str]],
        applies: bool = True,
        why_not: str = "",
    ) -> registry_pb.ConformanceCheck:
        """Runs one check under the timeout; every way a provider can misbehave is a fail."""
        check = registry_pb.ConformanceCheck(name=name, expected=expected)
        if not applies:
            check.result, check.got = SKIPPED, why_not or "does not apply to this mapping's task"
            return check
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                check.got, check.result = self.shown(await call()), PASS
        except CheckFailed as failed:
            check.got, check.result = self.shown(failed.got), FAIL
        except AttemptFailed as failed:
            check.got, check.result = self.shown(failed.reason), FAIL
        except ApiError as error:
            check.got, check.result = self.shown(error.message), FAIL
        except TimeoutError:
            check.got, check.result = f"no complete answer within {self.timeout:g} s", FAIL
        except self.errors as exc:
            check.got, check.result = f"the call failed ({type(exc).__name__})", FAIL
        check.duration_ms = round((time.monotonic() - started) * 1000, 3)
        return check

    async def _open(self, payload: dict, path: str = CHAT_PATH, stream: bool = False) -> Opened:
        """One call the Router's way; its request id header is noted for the request_id check."""
        opened = await open_answer(
            self.session, self.route, payload, path, stream, MAX_ANSWER_BYTES, self.route.provider.headers
        )
        self.request_ids.append(opened.provider_request_id)
        return opened

    async def _chat(self) -> str:
        answer = (await self._open({"messages": PROMPT, "max_tokens": 16})).answer
        message = _message(answer)
        if not isinstance(message.get("content"), str):
            raise CheckFailed(f"choices[0].message.content is {_kind(message.get('content'))}, not a string")
        return f"content {message['content']!r}; {_usage_problem(answer.get('usage')) or 'usage ' + _usage(answer)}"

    async def _task(self, task: str) -> str:
        """The task's sample request, answered and checked as the Router would."""
        headers = self.route.provider.headers
        opened = await open_answer(
            self.session, self.route, sample_call(task, self.route.provider_model), "", False, MAX_ANSWER_BYTES, headers
        )
        self.request_ids.append(opened.provider_request_id)
        return described(opened.result, opened.content_type)

    async def _stream(self) -> str:
        payload = {"messages": PROMPT, "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}
        opened = await self._open(payload, stream=True)
        assert opened.response is not None
        try:
            content_type = opened.response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                raise CheckFailed(f"Content-Type {content_type!r}, not text/event-stream")
            events, usage = await self._read_stream(opened)
        finally:
            opened.response.release()
        ended = time.monotonic()
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        tokens = tokens if isinstance(tokens, int) and tokens > 0 else events
        self.ttft_ms = (opened.first_at - opened.sent_at) * 1000
        self.throughput = tokens / (ended - opened.first_at) if ended > opened.first_at else 0.0
        return f"{events} data events, usage {orjson.dumps(usage).decode()}, then [DONE]"

    async def _read_stream(self, opened: Opened) -> tuple[int, Any]:
        """The data events after the first one up to [DONE] (checked), and the usage reported."""
        assert opened.response is not None
        events, usage, size = 1, opened.first_event.get("usage"), 0
        while (line := await next_line(opened.response)) is not None:
            size += len(line)
            if size > MAX_STREAM_BYTES:
                raise CheckFailed(f"the stream passed {MAX_STREAM_BYTES:,} bytes without data: [DONE]")
            if line.startswith(b":") or not line.startswith(b"data:"):
                continue  # comments and other SSE fields are allowed
            data = line[5:].strip()
            if data == b"[DONE]":
                if usage is None:
                    raise CheckFailed(f"{events} data events and [DONE], but no event with usage")
                problem = _usage_problem(usage)
                if problem:
                    raise CheckFailed(problem)
                return events, usage
            try:
                event = checked_answer(data, "choices", empty=True)
            except AttemptFailed:
                chunk = self.excerpt(data, 80)
                raise CheckFailed(f"data event {events + 1} is not a chat.completion.chunk: {chunk}") from None
            events += 1
            usage = event.get("usage") or usage
        raise CheckFailed(f"the stream ended after {events} data events without data: [DONE]")

    async def _tools(self) -> str:
        choice = {"type": "function", "function": {"name": "get_weather"}}
        payload = {"messages": PROMPT, "max_tokens": 64, "tools": [TOOL], "tool_choice": choice}
        message = _message((await self._open(payload)).answer)
        calls = message.get("tool_calls")
        if not isinstance(calls, list) or not calls or not isinstance(calls[0], dict):
            raise CheckFailed(f"no tool_calls; content {self.excerpt(message.get('content'))}")
        function = calls[0].get("function") if isinstance(calls[0].get("function"), dict) else {}
        if function.get("name") != "get_weather":
            raise CheckFailed(f"a tool call of {function.get('name')!r}")
        arguments = _json(function.get("arguments"))
        if not isinstance(arguments, dict):
            raise CheckFailed(f"arguments that are not a JSON object: {self.excerpt(function.get('arguments'))}")
        return f"get_weather({orjson.dumps(arguments).decode()})"

    async def _schema(self) -> str:
        response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
        payload = {"messages": PROMPT, "max_tokens": 64, "response_format": response_format}
        content = _message((await self._open(payload)).answer).get("content")
        document = _json(content)
        problem = _schema_problem(document)
        if problem:
            raise CheckFailed(f"{problem}: {self.excerpt(content)}")
        return f"content {content}"

    async def _image(self, response_format: str) -> str:
        payload = {"prompt": "a red square", "n": 1, "size": "64x64", "response_format": response_format}
        item = (await self._open(payload, IMAGES_PATH)).answer["data"][0]
        value = item.get(response_format) if isinstance(item, dict) else None
        if not isinstance(value, str) or not value:
            raise CheckFailed(
                f"data[0] has no {response_format}: keys {sorted(item) if isinstance(item, dict) else item}"
            )
        if response_format == "url":
            if not value.startswith(("https://", "http://")):
                raise CheckFailed(f"url {self.excerpt(value, 80)} is not an http(s) URL")
            return f"url {self.route.provider.redactor.text(value)[:120]}"
        try:
            image = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise CheckFailed("b64_json is not base64") from None
        if not image.startswith(IMAGE_MAGIC):
            raise CheckFailed(f"b64_json decodes to {len(image)} bytes that are not a PNG, JPEG, GIF or WebP image")
        return f"a {len(image):,}-byte image"

    async def _error_shape(self, images: bool) -> str:
        """A chat body whose messages is not a list (images: a prompt that is not a string) must be
        refused in OpenAI's shape."""
        path, bad = (IMAGES_PATH, {"prompt": 42}) if images else (CHAT_PATH, {"messages": "not a list of messages"})
        response = await send(self.session, self.route, encode(self.route, bad), path, self.route.provider.headers)
        try:
            data = await response.content.read(MAX_ERROR_BODY_BYTES)
        finally:
            response.release()
        if not 400 <= response.status < 500:
            raise CheckFailed(f"HTTP {response.status}")
        error = _json(data)
        error = error.get("error") if isinstance(error, dict) else None
        missing = [k for k in ("message", "type", "param", "code") if not isinstance(error, dict) or k not in error]
        if missing or not isinstance(error.get("message"), str):
            raise CheckFailed(
                f"HTTP {response.status} without error.{', error.'.join(missing) or 'message'}: {self.excerpt(data)}"
            )
        return f"HTTP {response.status}: {error['message']}"

    def _request_ids(self) -> registry_pb.ConformanceCheck:
        header = self.route.provider.request_id_header
        check = registry_pb.ConformanceCheck(
            name="request_id", expected=f"a {header} header on every answer, different for each request"
        )
        if not self.request_ids:
            check.result, check.got = SKIPPED, "no call was answered"
            return check
        missing = self.request_ids.count("")
        distinct = len(set(self.request_ids) - {""})
        answered = len(self.request_ids) - missing
        if missing:
            check.result, check.got = FAIL, f"no {header} header on {missing} of {len(self.request_ids)} answers"
        elif distinct < answered:
            check.result, check.got = FAIL, f"{answered} answers carried only {distinct} different ids"
        else:
            check.result, check.got = PASS, f"{answered} answers, {distinct} different ids"
        check.got = self.shown(check.got)
        return check

    async def _costs(self) -> str:
        ids = sorted(set(self.request_ids) - {""})
        headers = {"Content-Type": "application/json"}
        if self.target.billing_authorization:
            headers["Authorization"] = self.target.billing_authorization
        body = orjson.dumps({"requestIds": ids})
        post = self.session.post(self.target.billing_url, data=body, headers=headers, allow_redirects=False)
        async with post as response:
            if response.status != 200:
                data = await response.content.read(MAX_ERROR_BODY_BYTES)
                raise CheckFailed(f"HTTP {response.status}: {self.excerpt(data)}")
            data = await read_capped(response, MAX_COST_ANSWER_BYTES)
        try:
            answer = parse_cost_answer(data, ids, self.route.provider.redactor)
        except InvalidCostAnswer as exc:
            raise CheckFailed(str(exc)) from None
        problems = [f"{r.provider_request_id or '?'}: {r.reason}" for r in answer.rejected]
        problems += [f"{i}: answered but never asked" for i in answer.unknown]
        problems += [f"{i}: not answered" for i in ids if i not in answer.costs and i not in answer.unknown]
        if problems:
            raise CheckFailed("; ".join(dict.fromkeys(problems)))
        return f"{len(answer.costs)} costs: " + ", ".join(str(answer.costs[i]) for i in ids)

    def _latency(self) -> registry_pb.ConformanceCheck:
        check = registry_pb.ConformanceCheck(
            name="latency", expected="time to first token and throughput of the streamed answer"
        )
        if not self.ttft_ms:
            check.result, check.got = SKIPPED, "no streamed answer to measure"
        else:
            check.result = PASS
            check.got = f"first token after {self.ttft_ms:.0f} ms, {self.throughput:.1f} tokens/s"
        return check


def _json(value: Any) -> Any:
    """A JSON text parsed (None when it is not one)."""
    if not isinstance(value, str | bytes):
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _kind(value: Any) -> str:
    return "absent" if value is None else type(value).__name__


def _message(answer: dict) -> dict:
    choice = answer["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise CheckFailed("choices[0] has no message object")
    return message


def _usage(answer: dict) -> str:
    usage = answer["usage"]
    return f"{usage['prompt_tokens']} in, {usage['completion_tokens']} out"


def _usage_problem(usage: Any) -> str | None:
    """Why a usage object is not OpenAI's (non-negative integer token counts), or None."""
    if not isinstance(usage, dict):
        return f"usage is {_kind(usage)}, not an object"
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if not JSON_TYPES["integer"](value) or value < 0:
            return f"usage.{name} is {value!r}, not a non-negative integer"
    return None


def _schema_problem(document: Any) -> str | None:
    """Why a document does not match SCHEMA, or None."""
    if not isinstance(document, dict):
        return "the content is not a JSON object"
    for name, rule in SCHEMA["properties"].items():
        if name not in document:
            return f"property {name!r} is missing"
        if not JSON_TYPES[rule["type"]](document[name]):
            return f"property {name!r} is not of type {rule['type']}"
    extra = sorted(set(document) - set(SCHEMA["properties"]))
    return f"properties not in the schema: {extra}" if extra else None


async def run_check(
    http: HttpClient, target: Target, mapping: Mapping, call_seconds: float
) -> registry_pb.ConformanceReport:
    """Runs every check of the mapping; each check's calls get `call_seconds` (two rounds in all)."""
    await http.start()
    check = Check(http, target, call_seconds)
    checks = await check.run(mapping.task)
    report = registry_pb.ConformanceReport(
        provider=mapping.provider,
        mapping_id=mapping.id,
        provider_model=mapping.provider_model,
        task=mapping.task,
        passed=all(c.result != FAIL for c in checks),
        checks=checks,
        time_to_first_token_ms=round(check.ttft_ms, 3),
        throughput_tokens_per_second=round(check.throughput, 3),
        supports_tools=_passed(checks, "tools"),
        supports_structured_output=_passed(checks, "response_format"),
    )
    report.check_time.FromDatetime(datetime.now(UTC))
    return report


def _passed(checks: list[registry_pb.ConformanceCheck], name: str) -> bool:
    return any(c.name == name and c.result == PASS for c in checks)


def report_row(report: registry_pb.ConformanceReport) -> ConformanceReportRow:
    """The report as stored: its summary as columns, the whole as proto3 JSON."""
    results = [c.result for c in report.checks]
    return ConformanceReportRow(
        mapping_id=report.mapping_id,
        check_time=report.check_time.ToDatetime(UTC),
        passed=report.passed,
        passed_checks=results.count(PASS),
        failed_checks=results.count(FAIL),
        skipped_checks=results.count(SKIPPED),
        supports_tools=report.supports_tools,
        supports_structured_output=report.supports_structured_output,
        report=json_format.MessageToJson(report, indent=None),
    )


def report_of_json(stored: str) -> registry_pb.ConformanceReport:
    return json_format.Parse(stored, registry_pb.ConformanceReport())


@dataclass
class Checker:
    """Runs a mapping's check and stores its report (replacing the last one). A replica runs
    one check of a mapping at a time and at most `most_at_once` in all: each may hold several
    capped answers in memory."""

    http: HttpClient
    call_seconds: float
    most_at_once: int = MOST_CHECKS_AT_ONCE
    running: set[str] = field(default_factory=set)  # mapping ids

    async def check(
        self, state: RegistryState, mapping: Mapping, time_left: float | None
    ) -> registry_pb.ConformanceReport:
        """The mapping's report; each round of calls gets `call_seconds`, less when the
        caller's deadline (`time_left`) leaves less for the two rounds."""
        if mapping.id in self.running:
            raise ApiError(Code.ABORTED, "CHECK_IN_PROGRESS", f"mapping {shown(mapping.id)} is being checked already")
        if len(self.running) >= self.most_at_once:
            message = f"{self.most_at_once} conformance checks are running; retry in a few seconds"
            raise ApiError(Code.RESOURCE_EXHAUSTED, "TOO_MANY_CHECKS", message)
        self.running.add(mapping.id)
        try:
            return await self._check(state, mapping, time_left)
        finally:
            self.running.discard(mapping.id)

    async def _check(
        self, state: RegistryState, mapping: Mapping, time_left: float | None
    ) -> registry_pb.ConformanceReport:
        row = await state.db.run(lambda session: session.get(ProviderRow, mapping.provider))
        if row is None:
            raise not_found("PROVIDER_NOT_FOUND", f"provider {shown(mapping.provider)} does not exist")
        seconds = self.call_seconds
        if time_left is not None:
            seconds = max(MIN_CALL_SECONDS, min(seconds, (time_left - DEADLINE_MARGIN_SECONDS) / 2))
        report = await run_check(self.http, target_of(row, mapping), mapping, seconds)
        shown_capabilities = capabilities.observed(report, mapping.capabilities)

        def save(session: Session) -> None:
            queries.save_report(session, report_row(report))
            queries.set_mapping_capabilities(session, mapping.id, shown_capabilities)

        await state.write(
            save,
            internal_pb.CHANGE_KIND_MAPPING,
            mapping.provider,
            f"mapping {shown(mapping.id)} was deleted while it was checked",
            "MAPPING_DELETED",
        )
        return report
