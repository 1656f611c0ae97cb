"""Anthropic's Messages API (POST /v1/messages) translated to and from chat completions.

In: `system` (a string or text blocks), messages with text, image, tool_use and
tool_result blocks (thinking blocks of earlier turns are left out), tools with their
input_schema, tool_choice, stop_sequences, max_tokens, sampling. Out: a message object,
or with "stream": true Anthropic's events (message_start, content_block_start,
content_block_delta with text_delta or input_json_delta, content_block_stop,
message_delta with the stop reason and usage, message_stop). Errors on this route are in
Anthropic's shape (services/common/errors.py, ANTHROPIC_PATH_REGEX).
"""

from __future__ import annotations

import binascii
import math
import struct
from collections.abc import Iterator
from typing import Any

import orjson

from services.common import params
from services.common.errors import anthropic_error, invalid_argument
from services.common.pricing import prompt_tokens_estimate
from services.common.secrets import item_index
from services.router.translation import (
    DONE,
    Translation,
    answer_text,
    arguments_object,
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
    "max_tokens": params.TOKENS,
    "messages": params.array(params.MAX_MESSAGES, items=dict, empty=False),
    "system": params.of_type((str, list), "a string or a list of text blocks"),
    "stop_sequences": params.array(params.MAX_STOP_SEQUENCES, items=str),
    "stream": params.BOOLEAN,
    "temperature": params.number(0, 1),
    "top_p": params.CHAT["top_p"],
    "top_k": params.integer(0, 1_000_000),
    "tools": params.CHAT["tools"],
    "tool_choice": params.OBJECT,
    "metadata": params.OBJECT,
    "thinking": params.OBJECT,
    "service_tier": params.text(32),
    "context_management": params.OBJECT,  # accepted, not acted on: the context is sent as it is
}
REQUIRED = ("model", "max_tokens", "messages")
COUNT_REQUIRED = ("model", "messages")
REFUSED = {
    "container": "code execution containers are not available",
    "mcp_servers": "Switchboard connects to no MCP servers; run your tools and send tool_result blocks",
}
# finish_reason -> stop_reason
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}  # fmt: skip
LEFT_OUT_BLOCKS = ("thinking", "redacted_thinking")


def _image(block: dict, name: str) -> dict:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise invalid_argument("INVALID_PARAMETER", f"{name}.source must be a base64 or url image source", name)
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict, name: str) -> tuple[dict, list[dict]]:
    """A tool message with the result's text, and the result's images (chat's tool messages
    hold text only: the images follow in a user message)."""
    if not isinstance(block.get("tool_use_id"), str):
        raise invalid_argument("INVALID_PARAMETER", f"{name}.tool_use_id must be a string", f"{name}.tool_use_id")
    content = block.get("content") or ""
    blocks = content if isinstance(content, list) else []
    images = [
        _image(b, f"{name}.content[{i}]")
        for i, b in enumerate(blocks)
        if isinstance(b, dict) and b.get("type") == "image"
    ]
    texts = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "image")]
    text = text_of(content if isinstance(content, str) else texts, f"{name}.content")
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}, images


def _user(content: list, name: str) -> list[dict]:
    """A user turn: its tool results as tool messages, then its other blocks (and the results'
    images) as one user message."""
    results, parts = [], []
    for index, block in enumerate(content):
        at = f"{name}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            result, images = _tool_result(block, at)
            results.append(result)
            parts += images
        elif kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image(block, at))
        else:
            raise invalid_argument(
                "UNSUPPORTED_PARAMETER", f"{at} must be a text, image or tool_result block", f"{at}.type"
            )
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant(content: list, name: str) -> dict:
    texts, calls = [], []
    for index, block in enumerate(content):
        at = f"{name}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and isinstance(block.get("id"), str) and isinstance(block.get("name"), str):
            arguments = params.dumped(block.get("input") or {}).decode()
            function = {"name": block["name"], "arguments": arguments}
            calls.append({"id": block["id"], "type": "function", "function": function})
        elif kind not in LEFT_OUT_BLOCKS:
            raise invalid_argument(
                "UNSUPPORTED_PARAMETER", f"{at} must be a text, tool_use or thinking block", f"{at}.type"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(system: str | list | None, given: list[dict]) -> list[dict]:
    messages = [{"role": "system", "content": text_of(system, "system")}] if system else []
    for index, message in enumerate(item_list(given, "messages")):
        name = f"messages[{index}]"
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            raise invalid_argument("INVALID_PARAMETER", f'{name}.role must be "user" or "assistant"', f"{name}.role")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        elif isinstance(content, list):
            blocks = f"{name}.content"
            messages += _user(content, blocks) if role == "user" else [_assistant(content, blocks)]
        else:
            raise invalid_argument("INVALID_PARAMETER", f"{name}.content must be a string or a list of blocks", name)
    return messages


def _tools(tools: list[dict]) -> list[dict]:
    translated = []
    for index, tool in enumerate(tools):
        name = f"tools[{index}]"
        if tool.get("type") not in (None, "custom") or not isinstance(tool.get("name"), str):
            raise invalid_argument(
                "UNSUPPORTED_PARAMETER", f"{name} must be a client tool with a name and an input_schema", name
            )
        function = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        translated.append({"type": "function", "function": function})
    return translated


def _tool_choice(choice: dict, payload: dict) -> None:
    kind = choice.get("type")
    if kind == "tool" and isinstance(choice.get("name"), str):
        payload["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif kind in ("auto", "any", "none"):
        payload["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise invalid_argument(
            "INVALID_PARAMETER", 'tool_choice.type must be "auto", "any", "tool" (with a name) or "none"', "tool_choice"
        )
    if choice.get("disable_parallel_tool_use") is True:
        payload["parallel_tool_calls"] = False


# Anthropic counts an image at about width * height / 750 tokens, and scales a large one down
# first: one image is at most about 1,600 tokens.
IMAGE_PIXELS_PER_TOKEN = 750
IMAGE_TOKENS = 1_600
IMAGE_HEAD = 8_192  # base64 characters of an image read for its size: its first 6 KiB


def input_tokens(body: dict) -> bytes:
    """Anthropic's token count answer for a Messages API body: the estimate the Router makes of
    the translated chat request's prompt (services/common/pricing.py), its images counted as
    Anthropic counts them (image_tokens) rather than by their data's size."""
    check_fields(body, CHECKS, REFUSED)
    check(body, CHECKS, COUNT_REQUIRED)
    chat: dict[str, Any] = {"messages": _messages(body.get("system"), body["messages"])}
    images = 0
    for message in chat["messages"]:
        if isinstance(parts := message.get("content"), list):  # a user message's parts: text and images
            images += sum(image_tokens(part["image_url"]["url"]) for part in parts if part["type"] == "image_url")
            message["content"] = [part for part in parts if part["type"] != "image_url"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    return orjson.dumps({"input_tokens": prompt_tokens_estimate(len(params.dumped(chat))) + images})


def image_tokens(url: str) -> int:
    """One image's tokens: ceil(width * height / 750), at most 1,600; 1,600 when its size cannot be
    read from the head of its base64 data (a URL's image is never fetched). Only IMAGE_HEAD
    characters are decoded, never the whole image, and nothing in it is decompressed."""
    kind, _, data = url[:IMAGE_HEAD].partition(",")  # the chat part's URL: data:<media type>;base64,<data>
    if not kind.startswith("data:") or not kind.endswith(";base64"):
        return IMAGE_TOKENS
    try:
        size = _image_size(binascii.a2b_base64(data[: len(data) - len(data) % 4]))
    except (ValueError, struct.error):  # not base64 (binascii.Error is a ValueError), a header cut short
        size = None
    if size is None:
        return IMAGE_TOKENS
    return min(IMAGE_TOKENS, math.ceil(size[0] * size[1] / IMAGE_PIXELS_PER_TOKEN))


def _image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, GIF, WebP or JPEG image; None when not read. Read
    by hand at the formats' fixed places: an image library would inflate the text and colour-profile
    chunks a PNG may carry before its pixels (megabytes from a few KiB), and needs a WebP whole."""
    size = None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        size = struct.unpack(">II", head[16:24])
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        size = struct.unpack("<HH", head[6:10])
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        size = _webp_size(head)
    elif head[:2] == b"\xff\xd8":
        size = _jpeg_size(head)
    return size if size is not None and size[0] > 0 and size[1] > 0 else None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """A WebP's canvas from its first chunk: lossy (VP8), lossless (VP8L) or extended (VP8X)."""
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20:21] == b"\x2f":  # lossless: 14 bits each, less one
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:  # extended: the canvas, 24 bits each, less one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """A JPEG's (width, height) from its first frame header (SOFn), if the head reaches it (one after
    a large EXIF thumbnail does not: a camera's photo, far over 1,600 tokens' size anyway)."""
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame: P, Y, X
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return width, height
        else:
            at += 2 + struct.unpack(">H", head[at + 2 : at + 4])[0]
    return None


def _usage(usage: Any) -> dict:
    input_tokens, output_tokens = usage_numbers(usage)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        **usage_cost(usage),
    }


class Messages(Translation):
    """One Messages API call."""

    def __init__(self) -> None:
        self.id = new_id("msg_")
        self.model = ""
        # the stream's state
        self.started = False
        self.blocks = 0  # content blocks started
        self.open: tuple[str, int] | None = None  # ("text", -1) or ("tool", chat index) of the open block
        # chat tool call index -> (id, name, argument pieces): a tool_use block goes out whole when the
        # choice finishes (its name whole: pieces of it may come late; parallel calls' pieces interleave)
        self.tools: dict[int, tuple[str, str, list[str]]] = {}
        self.finish_reason: str | None = None
        self.refused = False  # the chat stream's text was a refusal: stop_reason "refusal"
        self.usage: Any = None
        self.ended = False

    def chat_payload(self, body: dict) -> dict:
        check_fields(body, CHECKS, REFUSED)
        check(body, CHECKS, REQUIRED)
        self.model, self.stream = body["model"], body.get("stream") is True
        payload = common_chat(body, self.stream)
        payload["messages"] = _messages(body.get("system"), body["messages"])
        payload["max_tokens"] = body["max_tokens"]
        if body.get("tools"):
            payload["tools"] = _tools(body["tools"])
        if body.get("tool_choice"):
            _tool_choice(body["tool_choice"], payload)
        if body.get("stop_sequences"):
            payload["stop"] = body["stop_sequences"]
        user = (body.get("metadata") or {}).get("user_id")
        if isinstance(user, str) and user:
            payload["user"] = user[:256]
        for name in ("temperature", "top_p", "top_k"):
            if body.get(name) is not None:
                payload[name] = body[name]
        return payload

    def _message(self, content: list[dict], stop_reason: str | None, usage: Any) -> dict:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": _usage(usage),
        }

    def unary(self, answer: dict) -> bytes:
        self.model = answer.get("model") or self.model
        choice = first_choice(answer)
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content: list[dict] = []
        if text := answer_text(message.get("content")):
            content.append({"type": "text", "text": text})
        refused = isinstance(refusal := message.get("refusal"), str) and bool(refusal)
        if refused:
            content.append({"type": "text", "text": refusal})
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            content.append({
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu_"),
                "name": function.get("name") or "",
                "input": arguments_object(function.get("arguments")),
            })  # fmt: skip
        stop_reason = "refusal" if refused else STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
        return orjson.dumps(self._message(content, stop_reason, answer.get("usage")))

    # --- stream -----------------------------------------------------------------------------

    def events(self, chunk: dict | None) -> Iterator[bytes]:
        if self.ended:
            return
        if not self.started:
            self.started = True
            yield sse("message_start", {"type": "message_start", "message": self._message([], None, None)})
        if chunk is DONE:
            yield from self._tools_out()
            yield from self._close()
            usage = _usage(self.usage)
            reason = "refusal" if self.refused else STOP_REASONS.get(self.finish_reason or "stop", "end_turn")
            delta = {"stop_reason": reason, "stop_sequence": None}
            yield sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
            yield sse("message_stop", {"type": "message_stop"})
            self.ended = True
            return
        if (error := stream_error(chunk)) is not None:
            _, body = anthropic_error(502, str(error.get("message") or "the stream broke off"))
            yield sse("error", body)
            self.ended = True
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        self.model = chunk.get("model") or self.model
        choice = first_choice(chunk)
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        if isinstance(delta.get("content"), str) and delta["content"]:
            yield from self._text(delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:  # a text block, as in a unary answer
            self.refused = True
            yield from self._text(delta["refusal"])
        for position, call in enumerate(delta.get("tool_calls") or []):
            if isinstance(call, dict):
                self._tool(call, item_index(call, position))
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            yield from self._tools_out()

    def _start(self, kind: tuple[str, int], block: dict) -> Iterator[bytes]:
        yield from self._close()
        self.open = kind
        self.blocks += 1
        start = {"type": "content_block_start", "index": self.blocks - 1, "content_block": block}
        yield sse("content_block_start", start)

    def _close(self) -> Iterator[bytes]:
        if self.open is not None:
            self.open = None
            yield sse("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1})

    def _delta(self, index: int, delta: dict) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _text(self, text: str) -> Iterator[bytes]:
        if self.open != ("text", -1):
            yield from self._start(("text", -1), {"type": "text", "text": ""})
        yield self._delta(self.blocks - 1, {"type": "text_delta", "text": text})

    def _tool(self, call: dict, index: int) -> None:
        """Keeps a tool call's pieces; nothing goes out until the choice finishes (_tools_out)."""
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        call_id, name, arguments = self.tools.get(index, ("", "", []))
        piece = function.get("name")
        if isinstance(piece, str) and piece != name:  # a late piece of it, not the name sent again
            name += piece
        if isinstance(function.get("arguments"), str):
            arguments.append(function["arguments"])
        self.tools[index] = (call_id or str(call.get("id") or ""), name, arguments)

    def _tools_out(self) -> Iterator[bytes]:
        """Each tool call as a whole tool_use block, in the order of their indices."""
        for index in sorted(self.tools):
            call_id, name, arguments = self.tools[index]
            yield from self._start(("tool", index), {"type": "tool_use", "id": call_id or new_id("toolu_"),
                                                      "name": name, "input": {}})  # fmt: skip
            if joined := "".join(arguments):
                yield self._delta(self.blocks - 1, {"type": "input_json_delta", "partial_json": joined})
        self.tools.clear()
