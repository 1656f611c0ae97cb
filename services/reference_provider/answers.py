"""Deterministic chat answers: text from the request, tool calls, JSON for response_format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson

DEFAULT_MAX_TOKENS = 32


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _prompt_words(messages: list) -> list[str]:
    return [w for m in messages if isinstance(m, dict) for w in _text_of(m.get("content")).split()]


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _last_role(messages: list) -> str:
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    return str(last.get("role", ""))


def _limit(body: dict) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


def _apply_stop(text: str, stop: Any) -> str:
    for marker in [stop] if isinstance(stop, str) else stop or []:
        if isinstance(marker, str) and marker and marker in text:
            text = text[: text.index(marker)]
    return text


def example_of(schema: Any) -> Any:
    """A value that satisfies a (simple) JSON schema: every property filled in."""
    if not isinstance(schema, dict):
        return "reference"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        return {name: example_of(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_of(schema.get("items"))]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, "reference")


def _answers_tool_result(body: dict, choice: Any) -> bool:
    """Whether the conversation ends with a tool's result that the model may answer in text
    (unless tool_choice demands a call): an agent loop on the reference provider ends."""
    return _last_role(body.get("messages") or []) == "tool" and choice != "required" and not isinstance(choice, dict)


def _chosen_tool(body: dict) -> dict | None:
    """The function to call: the one tool_choice names, else the first tool unless tool_choice is
    "none" or the conversation ends with a tool result (answered in text)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or _answers_tool_result(body, choice):
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t["function"] for t in tools if t["function"].get("name") == wanted), None)
    return tools[0]["function"]


def _content(body: dict) -> str:
    response_format = body.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return orjson.dumps(example_of(schema)).decode()
    words = ["Reference", "answer", "to:", *_last_user_text(body["messages"]).split()]
    if _last_role(body["messages"]) == "tool":
        words += ["using", "the", "tool", "result:", *_text_of(body["messages"][-1].get("content")).split()]
    words = words[: _limit(body)]
    if kind == "json_object":
        return orjson.dumps({"answer": " ".join(words)}).decode()
    return _apply_stop(" ".join(words), body.get("stop"))


def chat_answer(body: dict, request_id: str) -> dict:
    """The whole chat.completion object for a request."""
    tool = _chosen_tool(body)
    if tool is not None:
        arguments = orjson.dumps(example_of(tool.get("parameters"))).decode()
        call = {
            "id": f"call_{request_id[:8]}",
            "type": "function",
            "function": {"name": tool.get("name"), "arguments": arguments},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish_reason, completion = "tool_calls", len(arguments.split())
    else:
        content = _content(body)
        message = {"role": "assistant", "content": content}
        finish_reason, completion = "stop", len(content.split())
    prompt = len(_prompt_words(body["messages"]))
    count = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason} for i in range(count)
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion * count,
            "total_tokens": prompt + completion * count,
        },
    }


def usage_of(answer: dict) -> tuple[int, int]:
    usage = answer["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def chat_chunks(answer: dict, include_usage: bool) -> Iterator[dict]:
    """The answer as chat.completion.chunk objects: role, one chunk per word (or the tool call), finish, usage."""
    base = {
        "id": answer["id"],
        "object": "chat.completion.chunk",
        "created": answer["created"],
        "model": answer["model"],
    }
    tail = {"usage": None} if include_usage else {}

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **tail,
        }

    choice = answer["choices"][0]
    message = choice["message"]
    yield chunk({"role": "assistant", "content": ""})
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield chunk({"tool_calls": calls})
    else:
        words = message["content"].split(" ")
        for i, word in enumerate(words):
            yield chunk({"content": word if i == 0 else " " + word})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield {**base, "choices": [], "usage": answer["usage"]}
