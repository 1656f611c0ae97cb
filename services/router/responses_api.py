"""OpenAI's Responses API (POST /v1/responses) translated to and from chat completions.

In: `instructions` (a system message), `input` as a string or items (messages with text
and image parts, function_call, function_call_output; reasoning items are model output
and left out), function tools, tool_choice, text.format (response_format),
reasoning.effort, max_output_tokens, sampling. Out: a response object, or with
"stream": true its typed events, each with a sequence number. Nothing is stored: the
fields that need state kept between turns are refused with a 400 naming them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson

from services.common import params
from services.common.errors import invalid_argument
from services.common.secrets import item_index
from services.router.translation import (
    DONE,
    Translation,
    answer_text,
    check,
    check_fields,
    common_chat,
    first_choice,
    item_list,
    new_id,
    sse,
    stream_error,
    text_of,
    usage_cost,
    usage_numbers,
)

CHECKS: dict[str, params.Check] = {
    "model": params.COMMON["model"],
    "input": params.of_type((str, list), "a string or a list of input items"),
    "instructions": params.text(params.MAX_PROMPT_CHARACTERS * 10),
    "max_output_tokens": params.TOKENS,
    "temperature": params.CHAT["temperature"],
    "top_p": params.CHAT["top_p"],
    "top_logprobs": params.CHAT["top_logprobs"],
    "tools": params.CHAT["tools"],
    "tool_choice": params.CHAT["tool_choice"],
    "parallel_tool_calls": params.BOOLEAN,
    "stream": params.BOOLEAN,
    "stream_options": params.OBJECT,
    "metadata": params.OBJECT,
    "text": params.OBJECT,
    "reasoning": params.OBJECT,
    "user": params.CHAT["user"],
    "safety_identifier": params.CHAT["user"],
    "service_tier": params.text(32),
    "truncation": params.one_of("disabled"),
    "prompt_cache_key": params.text(256),
    # Accepted, not acted on: no extra output (encrypted reasoning, ...) exists, no built-in tools run.
    "include": params.array(32, items=str),
    "max_tool_calls": params.integer(1, 1_000_000),
    "prompt_cache_retention": params.text(32),
}
REQUIRED = ("model", "input")
# Known fields Switchboard does not honour, and why.
REFUSED = {
    "previous_response_id": "Switchboard stores no responses; send the whole conversation in input",
    "store": "Switchboard stores no responses (send store: false, or leave it out)",
    "conversation": "Switchboard keeps no conversations; send the whole conversation in input",
    "background": "background responses need stored state, which Switchboard does not keep",
    "prompt": "stored prompt templates are not supported; send instructions and input",
    "context_management": "context is never compacted: send the conversation you want answered",
}
TEXT_PARTS = ("input_text", "output_text", "text")


def _message(item: dict, name: str) -> dict:
    """A message item as a chat message."""
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise invalid_argument(
            "INVALID_PARAMETER", f'{name}.role must be "user", "assistant", "system" or "developer"', name
        )
    content = item.get("content")
    if role != "user" or isinstance(content, str):
        text = text_of(content, f"{name}.content", TEXT_PARTS)
        return {"role": "system" if role == "developer" else role, "content": text}
    if not isinstance(content, list):
        raise invalid_argument("INVALID_PARAMETER", f"{name}.content must be a string or a list of parts", name)
    return {"role": "user", "content": [_user_part(part, f"{name}.content[{i}]") for i, part in enumerate(content)]}


def _user_part(part: Any, name: str) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image = {"url": part["image_url"], **({"detail": part["detail"]} if part.get("detail") else {})}
        return {"type": "image_url", "image_url": image}
    raise invalid_argument(
        "INVALID_PARAMETER", f'{name} must be an "input_text" part or an "input_image" part with an image_url', name
    )


def _function_call(item: dict, name: str) -> dict:
    for field in ("call_id", "name", "arguments"):
        if not isinstance(item.get(field), str):
            raise invalid_argument("INVALID_PARAMETER", f"{name}.{field} must be a string", f"{name}.{field}")
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _function_output(item: dict, name: str) -> dict:
    if not isinstance(item.get("call_id"), str):
        raise invalid_argument("INVALID_PARAMETER", f"{name}.call_id must be a string", f"{name}.call_id")
    output = text_of(item.get("output"), f"{name}.output", TEXT_PARTS)
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


def _messages(instructions: str | None, given: str | list) -> list[dict]:
    """The chat messages of instructions and input; consecutive function calls make one
    assistant message."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    if isinstance(given, str):
        return [*messages, {"role": "user", "content": given}]
    for index, item in enumerate(item_list(given, "input")):
        name = f"input[{index}]"
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, name))
        elif kind == "function_call":
            call = _function_call(item, name)
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(_function_output(item, name))
        elif kind != "reasoning":
            raise invalid_argument(
                "UNSUPPORTED_PARAMETER",
                f"{name}.type {str(kind)[: params.ECHOED]!r} is not supported: "
                "send messages, function_call and function_call_output items",
                f"{name}.type",
            )
    if not messages:
        raise invalid_argument("INVALID_PARAMETER", "input must hold at least one message", "input")
    return messages


def _tools(tools: list[dict]) -> list[dict]:
    """Function tools as chat tools; any other kind of tool is a 400."""
    translated = []
    for index, tool in enumerate(tools):
        name = f"tools[{index}]"
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise invalid_argument(
                "UNSUPPORTED_PARAMETER", f'{name} must be a function tool ({{"type": "function", "name": ...}})', name
            )
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        translated.append({"type": "function", "function": function})
    return translated


def _tool_choice(choice: str | dict) -> str | dict:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise invalid_argument(
        "UNSUPPORTED_PARAMETER",
        'tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}',
        "tool_choice",
    )


def _response_format(text: dict) -> dict | None:
    """text.format as a chat response_format (None for plain text)."""
    form = text.get("format") or {"type": "text"}
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(form.get("schema"), dict):
        schema = {key: form[key] for key in ("name", "schema", "strict", "description") if key in form}
        return {"type": "json_schema", "json_schema": schema}
    raise invalid_argument(
        "INVALID_PARAMETER", 'text.format.type must be "text", "json_object" or "json_schema" (with a schema)',
        "text.format",
    )  # fmt: skip


def _arguments_text(arguments: Any) -> str:
    """A tool call's arguments as the Responses API writes them, a JSON text (a provider's object
    written as one); anything else is an answer this API cannot be made of."""
    if isinstance(arguments, dict):
        return orjson.dumps(arguments).decode()
    if arguments is None or isinstance(arguments, str):
        return arguments or ""
    raise TypeError("tool call arguments that are neither text nor an object")


def _usage(usage: Any) -> dict:
    input_tokens, output_tokens = usage_numbers(usage)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
        **usage_cost(usage),
    }


# finish_reason -> why a response is incomplete; any other reason completes it.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class Responses(Translation):
    """One Responses API call."""

    def __init__(self) -> None:
        self.id = new_id("resp_")
        self.created_at = int(time.time())
        self.request: dict = {}
        self.model = ""
        # the stream's state
        self.sequence = 0
        self.output: list[dict] = []
        self.positions: dict[str, int] = {}  # item id -> its output_index
        self.text_item: dict | None = None  # the message item being streamed: its text, or its refusal
        self.calls: dict[int, dict] = {}  # chat tool call index -> its function_call item
        # The streamed text and arguments, joined into their items when read (_sync): a string grown
        # by += in a dict is copied whole on every delta, quadratic in a long answer.
        self.text_pieces: list[str] = []
        self.argument_pieces: dict[int, list[str]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.ended = False

    def chat_payload(self, body: dict) -> dict:
        check_fields(body, CHECKS, REFUSED)
        check(body, CHECKS, REQUIRED)
        self.request, self.model, self.stream = body, body["model"], body.get("stream") is True
        payload = common_chat(body, self.stream)
        payload["messages"] = _messages(body.get("instructions"), body["input"])
        if len(payload["messages"]) > params.MAX_MESSAGES:  # the instructions are one more: named as this API's
            raise invalid_argument(
                "INVALID_PARAMETER", f"input and instructions make more than {params.MAX_MESSAGES:,} messages", "input"
            )
        if body.get("tools"):
            payload["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            payload["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("text") and (form := _response_format(body["text"])) is not None:
            payload["response_format"] = form
        effort = (body.get("reasoning") or {}).get("effort")
        if effort is not None:
            params.text(32)("reasoning.effort", effort)  # the chat's check, named as this API's field
            payload["reasoning_effort"] = effort
        if body.get("top_logprobs") is not None:
            payload["logprobs"], payload["top_logprobs"] = True, body["top_logprobs"]
        renamed = {"max_output_tokens": "max_tokens", "safety_identifier": "user"}
        for name in ("max_output_tokens", "temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier"):
            if body.get(name) is not None:
                payload[renamed.get(name, name)] = body[name]
        return payload

    def _response(self, status: str, output: list[dict], usage: Any, finish_reason: str | None) -> dict:
        """The response object, echoing the request as OpenAI does."""
        request = self.request
        incomplete = INCOMPLETE.get(finish_reason or "")
        if status == "completed" and incomplete:
            status = "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "metadata": request.get("metadata") or {},
            "model": self.model,
            "output": output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
            "previous_response_id": None,
            "reasoning": {"effort": (request.get("reasoning") or {}).get("effort"), "summary": None},
            "store": False,
            "temperature": request.get("temperature"),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice") or "auto",
            "tools": request.get("tools") or [],
            "top_p": request.get("top_p"),
            "truncation": "disabled",
            "usage": _usage(usage) if usage is not None or status != "in_progress" else None,
            "user": request.get("user"),
        }

    # --- unary ------------------------------------------------------------------------------

    def unary(self, answer: dict) -> bytes:
        self.model = answer.get("model") or self.model
        choice = first_choice(answer)
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        output = []
        if text := answer_text(message.get("content")):
            output.append(_message_item(new_id("msg_"), _text_part(text), "completed"))
        if isinstance(refusal := message.get("refusal"), str) and refusal:
            output.append(_message_item(new_id("msg_"), _refusal_part(refusal), "completed"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            item = _call_item(call.get("id") or new_id("call_"), function.get("name") or "", "completed")
            item["arguments"] = _arguments_text(function.get("arguments"))
            output.append(item)
        return orjson.dumps(self._response("completed", output, answer.get("usage"), choice.get("finish_reason")))

    # --- stream -----------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(kind, data)

    def _added(self, item: dict) -> bytes:
        self.positions[item["id"]] = len(self.output)
        self.output.append(item)
        return self._event("response.output_item.added", output_index=len(self.output) - 1, item=item)

    def events(self, chunk: dict | None) -> Iterator[bytes]:
        if self.ended:
            return
        if self.sequence == 0:
            created = self._response("in_progress", [], None, None)
            yield self._event("response.created", response=created)
            yield self._event("response.in_progress", response=created)
        if chunk is DONE:
            yield from self._close_all()
            response = self._response("completed", self.output, self.usage, self.finish_reason)
            yield self._event(f"response.{response['status']}", response=response)
            self.ended = True
            return
        if (error := stream_error(chunk)) is not None:
            yield from self._failed(error)
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        self.model = chunk.get("model") or self.model
        choice = first_choice(chunk)
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        if isinstance(delta.get("content"), str) and delta["content"]:
            yield from self._text(delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:  # an item of its own, as in a unary answer
            yield from self._text(delta["refusal"], "refusal")
        for position, call in enumerate(delta.get("tool_calls") or []):
            if isinstance(call, dict):
                yield from self._call(call, item_index(call, position))
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def _text(self, text: str, kind: str = "output_text") -> Iterator[bytes]:
        """A piece of the message's text, or of its refusal (kind "refusal"): each is a message item
        of its own (its one part), as in a unary answer, so a change of kind closes the item open."""
        if self.text_item is not None and self.text_item["content"][0]["type"] != kind:
            yield from self._close_text()
        if self.text_item is None:
            self.text_item = _message_item(new_id("msg_"), None, "in_progress")
            yield self._added(self.text_item)
            self.text_item["content"].append(PARTS[kind](""))
            yield self._event(
                "response.content_part.added", **self._at(self.text_item), content_index=0, part=PARTS[kind]("")
            )
        self.text_pieces.append(text)
        at = self._at(self.text_item)
        if kind == "refusal":
            yield self._event("response.refusal.delta", **at, content_index=0, delta=text)
        else:
            yield self._event("response.output_text.delta", **at, content_index=0, delta=text, logprobs=[])

    def _at(self, item: dict) -> dict:
        return {"item_id": item["id"], "output_index": self.positions[item["id"]]}

    def _sync(self) -> None:
        """Writes the text and arguments streamed so far into their items."""
        self._sync_text()
        for index, item in self.calls.items():
            item["arguments"] = "".join(self.argument_pieces.get(index, ()))

    def _sync_text(self) -> None:
        if self.text_item is not None:
            part = self.text_item["content"][0]
            part["refusal" if part["type"] == "refusal" else "text"] = "".join(self.text_pieces)

    def _close_text(self) -> Iterator[bytes]:
        self._sync_text()  # not the arguments: each new tool call closes the text, and they are read at the end
        item, self.text_item, self.text_pieces = self.text_item, None, []
        if item is None:
            return
        part = item["content"][0]
        at = self._at(item)
        if part["type"] == "refusal":
            yield self._event("response.refusal.done", **at, content_index=0, refusal=part["refusal"])
        else:
            yield self._event("response.output_text.done", **at, content_index=0, text=part["text"], logprobs=[])
        yield self._event("response.content_part.done", **at, content_index=0, part=part)
        item["status"] = "completed"
        yield self._event("response.output_item.done", output_index=at["output_index"], item=item)

    def _call(self, call: dict, index: int) -> Iterator[bytes]:
        """A tool call's item is announced with its first arguments (or at the end): its name is whole
        by then (the stream's carry sends a name's held end with the arguments that follow it)."""
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        item = self.calls.get(index)
        if item is None:
            yield from self._close_text()
            item = self.calls[index] = _call_item(call.get("id") or new_id("call_"), "", "in_progress")
        name = function.get("name")
        if isinstance(name, str) and name != item["name"]:  # a late piece of it, not the name sent again
            item["name"] += name
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            yield from self._announced(item)
            self.argument_pieces.setdefault(index, []).append(fragment)
            yield self._event("response.function_call_arguments.delta", **self._at(item), delta=fragment)

    def _announced(self, item: dict) -> Iterator[bytes]:
        if item["id"] not in self.positions:
            yield self._added(item)

    def _close_all(self) -> Iterator[bytes]:
        self._sync()  # the arguments written into their items
        yield from self._close_text()
        for item in self.calls.values():
            yield from self._announced(item)
            at = self._at(item)
            yield self._event("response.function_call_arguments.done", **at, arguments=item["arguments"])
            item["status"] = "completed"
            yield self._event("response.output_item.done", output_index=at["output_index"], item=item)
        self.calls, self.argument_pieces = {}, {}

    def _failed(self, error: dict) -> Iterator[bytes]:
        """The chat stream broke off: OpenAI's error event, then response.failed."""
        self._sync()
        message = str(error.get("message") or "the stream broke off")
        code = str(error.get("code") or "stream_interrupted")
        yield self._event("error", code=code, message=message, param=None)
        response = self._response("failed", self.output, self.usage, None)
        response["error"] = {"code": "server_error", "message": message}
        yield self._event("response.failed", response=response)
        self.ended = True


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _refusal_part(refusal: str) -> dict:
    return {"type": "refusal", "refusal": refusal}


# a message item's part of each kind, from its text
PARTS = {"output_text": _text_part, "refusal": _refusal_part}


def _message_item(item_id: str, part: dict | None, status: str) -> dict:
    """An assistant message item holding one part (none yet: a streamed item, as it is announced)."""
    content = [part] if part is not None else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(call_id: str, name: str, status: str) -> dict:
    item_id = "fc_" + call_id.removeprefix("call_")
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": "", "status": status}
