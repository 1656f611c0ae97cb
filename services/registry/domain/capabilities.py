"""What a mapping's provider model supports: tools, structured output, context length.

Declared by the partner (with the mapping, or later by UpdateModelMapping) or
observed by the conformance check (`observed`), whichever came last; the store's
`set_mapping_capabilities` is the one place either writes them. Unknown (None) means nothing declared or observed; the
Router decides what that means for a request (services/router/selection.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from google.protobuf.message import Message
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import registry_service_pb2 as registry_pb

from services.common.errors import invalid_argument
from services.common.providers import CAPABILITY_FIELDS
from services.registry.domain.state import RegistryState
from services.registry.domain.validation import check_range, shown
from services.registry.storage import queries
from services.registry.storage.index import UNKNOWN, Capabilities, Mapping

MAX_CONTEXT_LENGTH = 1_000_000_000  # tokens; far above any model's window
# The JSON names of the fields, for error messages (what REST callers sent).
JSON_NAMES = {"supports_tools": "supportsTools", "supports_structured_output": "supportsStructuredOutput",
              "context_length": "contextLength"}  # fmt: skip


class WithCapabilities(Protocol):
    """A message with the three optional capability fields (requests, ModelMapping, Candidate)."""

    def HasField(self, name: str) -> bool: ...


def declared(message: WithCapabilities, fields: Iterable[str] = CAPABILITY_FIELDS) -> dict[str, bool | int | None]:
    """The named capability fields of a message: their value, None where unset (unknown)."""
    return {name: getattr(message, name) if message.HasField(name) else None for name in fields}


def checked(values: dict[str, bool | int | None], base: Capabilities = UNKNOWN) -> Capabilities:
    """`base` with these values set; a context length outside 1..MAX_CONTEXT_LENGTH is a 400."""
    length = values.get("context_length")
    if length is not None:
        check_range(length, 1, MAX_CONTEXT_LENGTH, JSON_NAMES["context_length"])
    return Capabilities(**{name: values.get(name, getattr(base, name)) for name in CAPABILITY_FIELDS})


# The conformance check (services/registry/domain/conformance.py) that observes each capability.
OBSERVED_BY = {"supports_tools": "tools", "supports_structured_output": "response_format"}


def observed(report: registry_pb.ConformanceReport, base: Capabilities) -> Capabilities:
    """`base` with what the check showed: a capability whose check passed or failed is that
    outcome (it replaces what was declared); a skipped check leaves it as it was."""
    results = {check.name: check.result for check in report.checks}
    shown_by_check = {
        name: results[check] == "pass" for name, check in OBSERVED_BY.items() if results.get(check) in ("pass", "fail")
    }
    return checked(shown_by_check, base)


def fields_to_update(paths: Iterable[str], message: WithCapabilities) -> list[str]:
    """The update mask's capability fields (400 for any other), or every one set in the message."""
    paths = list(paths)
    if not paths:
        return [name for name in CAPABILITY_FIELDS if message.HasField(name)]
    for path in paths:
        if path not in CAPABILITY_FIELDS:
            allowed = ", ".join(CAPABILITY_FIELDS)
            raise invalid_argument(
                "INVALID_REQUEST", f"update_mask: {shown(path)} cannot be updated here (only {allowed})", "update_mask"
            )
    return list(dict.fromkeys(paths))


def fill(message: Message, capabilities: Capabilities) -> None:
    """Sets the known capabilities on a message; unknown ones stay unset."""
    for name in CAPABILITY_FIELDS:
        value = getattr(capabilities, name)
        if value is not None:
            setattr(message, name, value)


async def store_capabilities(state: RegistryState, mapping: Mapping, capabilities: Capabilities) -> None:
    """Writes a mapping's capabilities (declared or observed) and announces the change: the index,
    the other replicas and the Routers' caches of the models it maps pick it up."""
    await state.write(
        lambda s: queries.set_mapping_capabilities(s, mapping.id, capabilities),
        internal_pb.CHANGE_KIND_MAPPING,
        mapping.provider,
    )
