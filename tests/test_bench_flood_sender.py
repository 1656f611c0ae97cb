"""bench/flood.py's sender and its per-case costs, without a stack: the pre-built request is the
case's HTTP request, answers are read as HTTP, and the cost table divides CPU by requests."""

import io
import socket
import threading

from bench.flood import FLOOD_CLIENT, CaseCost, FloodCase, FloodReport, Sender, Tally, _answer_head, request_bytes
from bench.load import Measurement
from bench.targets import Target


def test_the_prebuilt_request_declares_its_body_exactly() -> None:
    case = FloodCase("c", "/v1/chat/completions", b'{"model": "x"}', "what", auth="Bearer other")
    head, _, body = request_bytes(case, case.auth, "127.0.0.1:8080").partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Length"] == str(len(case.body))
    assert headers["Authorization"] == "Bearer other"
    assert body == case.body


def test_an_answers_head_gives_status_length_and_close() -> None:
    answer = io.BytesIO(b'HTTP/1.1 429 Too Many Requests\r\ncontent-length: 7\r\nConnection: close\r\n\r\n{"a":1}')
    assert _answer_head(answer) == (429, 7, True)
    assert answer.read(7) == b'{"a":1}'
    assert _answer_head(io.BytesIO(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")) == (400, 0, False)


def test_a_cases_cost_is_cpu_per_request_per_process() -> None:
    cost = CaseCost(200, 2.0, {"envoy": 0.05, "router": 0.0}, Tally(outcomes={"429": 200}))
    assert cost.ms_per_request("envoy") == 0.25
    report = FloodReport(1, 1.0, 4, [], 2.0, costs={"tags": cost})
    assert "| tags | 100 | 429 x200 | 0.250 | 0.000 |" in report._cost_table()


def test_the_stacks_cpu_per_caller_answer_leaves_the_sender_out() -> None:
    report = FloodReport(1, 1.0, 4, [], quiet=[_m(100)], flood=[_m(50)])
    quiet, flood = {"envoy": 0.05, "router": 0.05}, {"envoy": 0.05, "router": 0.05, FLOOD_CLIENT: 1.0}
    report.cpu = {"quiet": [quiet], "flood": [flood]}
    assert report.stack_ms_per_answer("quiet") == 1.0
    assert report.stack_ms_per_answer("flood") == 2.0


def _m(rps: float) -> Measurement:
    return Measurement(requests=10, ok=10, bad=0, rps=rps, p50_ms=1.0, p99_ms=2.0)


def test_each_new_connection_comes_from_the_next_address() -> None:
    """--addresses: one caller's flood from several client addresses in turn (127.0.0.2, ...)."""
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)  # a sender that never connects fails the test instead of hanging it
        port = server.getsockname()[1]
        target = Target("t", {"chat": f"http://127.0.0.1:{port}/v1/chat/completions"}, {}, "Bearer t")
        sender = Sender(target, FloodCase("c", "/v1/chat/completions", b"{}", "what"), addresses=2)
        peers = []

        def serve() -> None:
            for _ in range(3):
                connection, peer = server.accept()
                with connection:
                    peers.append(peer[0])
                    connection.recv(65536)
                    connection.sendall(answer)

        thread = threading.Thread(target=serve)
        thread.start()
        statuses = [sender.send()[0] for _ in range(3)]  # each answer closes its connection
        thread.join()
    assert statuses == [400, 400, 400]
    assert peers == ["127.0.0.2", "127.0.0.3", "127.0.0.2"]
