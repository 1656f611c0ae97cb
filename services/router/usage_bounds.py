"""How much usage a request could have produced: a provider's report past it is not believed.

A provider's usage is a number it chose to send. Counts that are not integers within int64
(Usage.invalid), an input past the model's context length, or an output past what the
request allowed (max_completion_tokens / max_tokens, times the choices `n`, within the
context) cannot be true: the request is billed as if the provider had reported no usage
(README "Usage of streams"; docs/money.md), and the provider is logged at most once a minute.
Likewise an images answer is billed for at most the `n` images asked for (1 by default).
"""

from __future__ import annotations

import logging

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.logs import Throttled
from services.common.provider_api import Usage

log = logging.getLogger(__name__)

# No model's context holds more tokens: without a known context length, counts past it are absurd.
MAX_CONTEXT_TOKENS = 10_000_000
_disbelieved = Throttled(log, every=60.0)


def usage_ceiling(payload: dict, candidate: internal_pb.Candidate) -> tuple[int, int]:
    """(input tokens, output tokens) the request could at most have produced on this provider model."""
    context = MAX_CONTEXT_TOKENS
    if candidate.HasField("context_length") and candidate.context_length > 0:
        context = min(context, candidate.context_length)
    asked = [payload[name] for name in ("max_completion_tokens", "max_tokens") if isinstance(payload.get(name), int)]
    choices = payload.get("n") if isinstance(payload.get("n"), int) and payload.get("n") > 0 else 1
    output = min(max(asked), context) * choices if asked else context * choices
    return context, output


def believable(usage: Usage, payload: dict, candidate: internal_pb.Candidate, provider: str) -> bool:
    """Whether the reported usage is a number the request could have produced; logs it when not."""
    if not usage.reported:
        return False
    most_input, most_output = usage_ceiling(payload, candidate)
    if not usage.invalid and usage.input_tokens <= most_input and usage.output_tokens <= most_output:
        return True
    _disbelieved.warning(
        "a provider reported usage the request could not have produced; billed as without usage",
        provider=provider,
        most_input_tokens=most_input,
        most_output_tokens=most_output,
    )
    return False


def believed_images(images: int, payload: dict, provider: str) -> int:
    """The images billed: those answered, but never more than the request asked for."""
    asked = payload.get("n") if isinstance(payload.get("n"), int) and payload.get("n") > 0 else 1
    if images <= asked:
        return images
    _disbelieved.warning("a provider answered more images than asked for; billed as asked", provider=provider,
                         most_images=asked)  # fmt: skip
    return asked
