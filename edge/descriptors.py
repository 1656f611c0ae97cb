"""The one walk over the descriptor set (gen/switchboard.pb): messages, enums, comments and the
public services' google.api.http rules, by full name without the leading dot. Everything made
from the REST surface reads it: Envoy's routes and strict-check tables (envoy.py) and the OpenAPI
document (openapi.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from services.common.surface import DESCRIPTOR, PUBLIC_SERVICES

HTTP_VERBS = ("get", "put", "post", "delete", "patch")
# Messages whose JSON form is free (any keys) or not an object the strict checks read.
FREE_MESSAGES = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
        "google.api.HttpBody",
    }
)


@dataclass(frozen=True)
class HttpRule:
    """One google.api.http binding of a public method."""

    service: str  # full name
    method: str  # the RPC's name
    index: int  # 0 for the method's rule, n for its n-th additional binding
    verb: str  # GET, PUT, POST, PATCH, DELETE (or a custom verb)
    template: str
    request: str  # full name of the request message
    response: str  # full name of the response message
    body: str  # "", "*" or a field of the request

    @property
    def key(self) -> str:
        return f"{self.verb} {self.template}"

    @property
    def rpc(self) -> str:
        return f"{self.service}.{self.method}"


def bindings(rule: http_pb2.HttpRule) -> list[tuple[str, str, str]]:
    """(method, path template, body) of a rule and of its additional bindings (methods in lower case)."""
    found = []
    for candidate in (rule, *rule.additional_bindings):
        kind = candidate.WhichOneof("pattern")
        if kind in HTTP_VERBS:
            found.append((kind, getattr(candidate, kind), candidate.body))
        elif kind == "custom":
            found.append((candidate.custom.kind.lower(), candidate.custom.path, candidate.body))
    return found


class Descriptors:
    """Messages, enums, comments and public HTTP rules of a FileDescriptorSet."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet, public: Iterable[str] = PUBLIC_SERVICES) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}
        self.services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = []
        self.rules: list[HttpRule] = []
        for file in files.file:
            self._index_file(file)
        public = set(public)
        for name, service in self.services:
            if name in public:
                self._add_rules(name, service)

    def _index_file(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        paths = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}

        def comment(*path: int) -> str:
            return " ".join(line.strip() for line in paths.get(path, "").strip().splitlines())

        def index_messages(scope: str, messages: Iterable, path: tuple[int, ...]) -> None:
            for i, message in enumerate(messages):
                name, here = f"{scope}{message.name}", (*path, i)
                self.messages[name] = message
                self.comments[name] = comment(*here)
                for j, field in enumerate(message.field):
                    self.comments[f"{name}.{field.name}"] = comment(*here, 2, j)
                index_messages(f"{name}.", message.nested_type, (*here, 3))
                for enum in message.enum_type:
                    self.enums[f"{name}.{enum.name}"] = enum

        package = f"{file.package}." if file.package else ""
        index_messages(package, file.message_type, (4,))
        for i, enum in enumerate(file.enum_type):
            self.enums[f"{package}{enum.name}"] = enum
            self.comments[f"{package}{enum.name}"] = comment(5, i)
        for i, service in enumerate(file.service):
            full = f"{package}{service.name}"
            self.services.append((full, service))
            self.comments[full] = comment(6, i)
            for j, method in enumerate(service.method):
                self.comments[f"{full}.{method.name}"] = comment(6, i, 2, j)

    def _add_rules(self, service: str, proto: descriptor_pb2.ServiceDescriptorProto) -> None:
        for method in proto.method:
            annotation = method.options.Extensions[annotations_pb2.http]
            for index, (verb, template, body) in enumerate(bindings(annotation)):
                request, response = method.input_type.lstrip("."), method.output_type.lstrip(".")
                rule = HttpRule(service, method.name, index, verb.upper(), template, request, response, body)
                self.rules.append(rule)

    def message(self, name: str) -> descriptor_pb2.DescriptorProto:
        """A message by full name (a field's type_name, with its leading dot, too)."""
        return self.messages[name.lstrip(".")]

    def enum(self, name: str) -> descriptor_pb2.EnumDescriptorProto:
        return self.enums[name.lstrip(".")]

    def comment(self, name: str) -> str:
        """The leading comment of a message, field, enum, service or method ("" without one)."""
        return self.comments.get(name.lstrip("."), "")

    def field(self, message: str, name: str) -> descriptor_pb2.FieldDescriptorProto:
        return next(f for f in self.message(message).field if f.name == name)

    def body_message(self, rule: HttpRule) -> str | None:
        """The message the JSON body is parsed into; None when there is no body or it is free."""
        if not rule.body:
            return None
        message = rule.request if rule.body == "*" else self.field(rule.request, rule.body).type_name.lstrip(".")
        return None if message in FREE_MESSAGES else message

    def is_map(self, f: descriptor_pb2.FieldDescriptorProto) -> bool:
        entry = self.messages.get(f.type_name.lstrip("."))
        return entry is not None and entry.options.map_entry


@cache
def descriptors() -> Descriptors:
    """The committed descriptor set's."""
    return Descriptors(descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes()))
