"""Raw HTTP/1.1 exchanges with a stack's Envoy, Envoy's rendered config as data, and a model of the
JSON its transcoder writes: for the edge's tests (body caps, deadlines, budgets, the refusal delay)
and the listings' byte bounds."""

from __future__ import annotations

import json
import socket

from google.protobuf import json_format
from google.protobuf.message import Message

from edge.envoy import EnvoyPorts, render

MIB = 1024 * 1024
BACKENDS = {name: [("127.0.0.1", port)] for name, port in (("registry", 1), ("billing", 2), ("router", 3))}
CHAT = "/v1/chat/completions"


def rendered(**fields: object) -> dict:
    return yaml_of(render(EnvoyPorts(8080, 9901, backends=BACKENDS, **fields)))


def yaml_of(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def exchange(stack, head: bytes, body: bytes = b"", *, timeout: float = 60) -> tuple[int, dict]:
    """Sends raw request headers and part of a body on a new connection, then reads the answer
    without sending more: (status, OpenAI error object)."""
    status, _, answer = raw_exchange(stack, head, body, timeout=timeout)
    return status, json.loads(answer)["error"]


def raw_exchange(stack, head: bytes, body: bytes = b"", *, timeout: float = 60) -> tuple[int, str, bytes]:
    """As exchange: (status, the answer's head in lower case, its body)."""
    host, port = stack.address("envoy").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, str, bytes]:
    """The answer on the socket: (status, its head in lower case, its body)."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    answer_head, _, answer_body = answer.partition(b"\r\n\r\n")
    return int(answer_head.split()[1]), answer_head.decode("latin-1").lower(), answer_body


def _length(answer: bytes) -> int:
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name == "content-length":
            return int(value)
    return 1 << 30


def request_head(path: str, length: int | None, token: str | None = None, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: switchboard", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def access_log_lines(stack) -> list[dict]:
    """Envoy's access log lines so far (a line still being written is left out)."""
    lines = []
    for line in stack.logs().splitlines():
        if line.startswith('{"bytes_sent"') and line.endswith("}"):
            lines.append(json.loads(line))
    return lines


def hcm_of(config: dict) -> dict:
    """The HTTP connection manager of the listener."""
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


# What Envoy's JSON writer escapes beyond what JSON requires (writer.cc, MustEscape)...
ENVOY_ESCAPED = frozenset({"<", ">", "\u00ad", "\u06dd", "\u070f", "\u17b4", "\u17b5", "\ufeff", "\U000e0001"})
ENVOY_ESCAPED_RANGES = ((0x00, 0x1F), (0x7F, 0x9F), (0x600, 0x603), (0x200B, 0x200F), (0x2028, 0x202E),
                        (0x2060, 0x2064), (0x206A, 0x206F), (0xFFF9, 0xFFFB), (0x1D173, 0x1D17A),
                        (0xE0020, 0xE007F))  # fmt: skip
SHORT_ESCAPES = frozenset('\n\r\t"\f\b\\')


def envoy_string_bytes(text: str) -> int:
    """A string's size as Envoy's JSON writer writes it, quotes included."""
    size = 2
    for char in text:
        point = ord(char)
        if char in SHORT_ESCAPES:
            size += 2
        elif char in ENVOY_ESCAPED or any(low <= point <= high for low, high in ENVOY_ESCAPED_RANGES):
            size += 12 if point > 0xFFFF else 6
        else:
            size += len(char.encode())
    return size


def envoy_json_bytes(value: object) -> int:
    """JSON data's size as Envoy writes it: compact, strings escaped as above."""
    if isinstance(value, dict):
        members = [envoy_string_bytes(key) + 1 + envoy_json_bytes(item) for key, item in value.items()]
        return 2 + sum(members) + max(len(members) - 1, 0)
    if isinstance(value, list):
        return 2 + sum(envoy_json_bytes(item) for item in value) + max(len(value) - 1, 0)
    if isinstance(value, str):
        return envoy_string_bytes(value)
    return len(json.dumps(value))


def envoy_message_bytes(message: Message) -> int:
    """A message's size as the transcoder answers it (always_print_primitive_fields)."""
    return envoy_json_bytes(json_format.MessageToDict(message, always_print_fields_with_no_presence=True))
