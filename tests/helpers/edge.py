"""Raw HTTP/1.1 exchanges with a stack's Envoy, and Envoy's rendered config as data: for the
edge's tests (body caps, deadlines, budgets, the refusal delay)."""

from __future__ import annotations

import json
import socket

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
