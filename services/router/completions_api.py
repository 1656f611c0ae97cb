"""OpenAI's legacy completions (POST /v1/completions) translated to and from chat completions:
the prompt is one user message; the answer is a text_completion (its chunks when streamed,
ending with [DONE]). What chat cannot do (echo, suffix, best_of, logprobs) is refused."""

from __future__ import annotations

from collections.abc import Iterator

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
    stream_error,
)

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
PASSED_ON = ("max_tokens", "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty", "seed",
             "logit_bias", "user")  # fmt: skip
CHECKS: dict[str, params.Check] = {
    "model": params.COMMON["model"],
    "prompt": params.of_type((str, list), "a string or a list of one string"),
    "stream": params.BOOLEAN,
    "stream_options": params.OBJECT,
    **{name: params.CHAT[name] for name in PASSED_ON},
}
REQUIRED = ("model", "prompt")
REFUSED = {
    "echo": "the prompt is not echoed back; prepend it yourself",
    "suffix": "insertion (suffix) is not supported by chat models",
    "logprobs": "token log probabilities are not available on this route",
}


def _prompt(prompt: str | list) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    raise invalid_argument("INVALID_PARAMETER", "prompt must be a string or a list of one string", "prompt")


class Completions(Translation):
    """One legacy completions call."""

    def __init__(self) -> None:
        self.show_usage = False

    def chat_payload(self, body: dict) -> dict:
        check_fields(body, (*CHECKS, "best_of"), REFUSED)
        check(body, CHECKS, REQUIRED)
        if body.get("best_of") not in (None, 1):
            raise invalid_argument("UNSUPPORTED_PARAMETER", "best_of is not supported: send n instead", "best_of")
        self.stream = body.get("stream") is True
        self.show_usage = (body.get("stream_options") or {}).get("include_usage") is True
        payload = common_chat(body, self.stream)
        payload["messages"] = [{"role": "user", "content": _prompt(body["prompt"])}]
        payload["max_tokens"] = DEFAULT_MAX_TOKENS
        payload.update((name, body[name]) for name in PASSED_ON if body.get(name) is not None)
        return payload

    def _shape(self, answer: dict, text_of: str) -> dict:
        choices = []
        for position, choice in enumerate(answer.get("choices") or []):
            part = choice.get(text_of) if isinstance(choice, dict) and isinstance(choice.get(text_of), dict) else {}
            content = part.get("content")  # a delta's: text only, as the stream's carry reads it
            text = answer_text(content) if text_of == "message" else content if isinstance(content, str) else ""
            refusal = part.get("refusal")  # a model's refusal is its answer's text here (as on Messages)
            text += refusal if isinstance(refusal, str) else ""
            choices.append({"text": text, "index": item_index(choice, position), "logprobs": None,
                            "finish_reason": choice.get("finish_reason")})  # fmt: skip
        shaped = {"id": "cmpl-" + str(answer.get("id") or "").removeprefix("chatcmpl-"), "object": "text_completion",
                  "created": answer.get("created"), "model": answer.get("model"), "choices": choices}  # fmt: skip
        if answer.get("usage") is not None:
            shaped["usage"] = answer["usage"]
        return shaped

    def unary(self, answer: dict) -> bytes:
        return orjson.dumps(self._shape(answer, "message"))

    def events(self, chunk: dict | None) -> Iterator[bytes]:
        if chunk is DONE:
            yield b"data: [DONE]\n\n"
            return
        if (error := stream_error(chunk)) is not None:  # "error": null is no error
            yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
            return
        if not chunk.get("choices") and not self.show_usage:  # every choice goes on (n > 1), not choice 0 only
            return
        shaped = self._shape(chunk, "delta")
        if not self.show_usage:
            shaped.pop("usage", None)
        yield b"data: " + orjson.dumps(shaped) + b"\n\n"
