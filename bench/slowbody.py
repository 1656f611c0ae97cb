"""`bench/run.py slowbody`: the slow-body attack of issue 24 (finding 4). Many connections each send
request headers with a token (an invalid one by default) declaring a large body, most of that body,
and then wait. Measured per target (the stack as committed, and with --baseline the stack of an
earlier checkout): Envoy's resident memory before, at the peak of and after the attack, how the
attack's requests were answered, and ordinary chat callers' throughput and latency while the
connections are held, against the same callers on the quiet stack."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.load import Measurement, Scenario, run_wrk
from bench.report import RESULTS_DIR, run_meta
from bench.soak import rss_bytes
from bench.targets import CHAT_PATH, Target

STEM = "slowbody"
CHUNK = 256 * 1024
SEND_LIMIT_SECONDS = 120.0  # sending stops after this (the held connections stay open)
SAMPLE_SECONDS = 0.5
MIB = 1024 * 1024


@dataclass
class Attack:
    connections: int
    declared_bytes: int
    sent_bytes: int
    token: str  # the Authorization header's token
    token_kind: str  # "valid" or "invalid"
    guard_bytes: int  # sending stops once Envoy's RSS passes this (a shared machine)
    addresses: int = 1  # client addresses the connections come from, in turn: 127.0.0.2, 127.0.0.3, ...


@dataclass
class Phase:
    """What one target showed: callers quiet and under attack, Envoy's RSS, the attack's answers."""

    target: str
    quiet: Measurement
    held: Measurement | None = None
    rss_mb: dict[str, float] = field(default_factory=dict)  # quiet, peak, held, after
    outcomes: Counter[str] = field(default_factory=Counter)  # per attack connection
    sent_mb: float = 0.0
    guard_hit: bool = False

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "quiet": self.quiet.to_json(),
            "held": self.held.to_json() if self.held else None,
            "envoy_rss_mb": self.rss_mb,
            "attack_outcomes": dict(self.outcomes),
            "attack_sent_mb": round(self.sent_mb, 1),
            "guard_hit": self.guard_hit,
        }


class RssPeak:
    """Envoy's RSS, sampled every SAMPLE_SECONDS on a thread: the peak since start."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.latest = pid, rss_bytes(pid), rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.latest = rss_bytes(self.pid)
            self.peak = max(self.peak, self.latest)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def _attacker(
    host: str, port: int, source: str, attack: Attack, rss: RssPeak, sent: list[int]
) -> tuple[str, object]:
    """One connection from `source`: headers, then body chunks until sent, answered, refused or the
    guard; then it waits. Returns (how it was answered, the writer to close later)."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: switchboard\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {attack.token}\r\nContent-Length: {attack.declared_bytes}\r\n\r\n"
    ).encode()
    chunk = b"x" * CHUNK
    writer.write(head)
    answer = asyncio.ensure_future(reader.readline())  # read as soon as it comes, before a reset drops it
    done = 0
    try:
        while done < attack.sent_bytes and rss.latest < attack.guard_bytes and not answer.done():
            size = min(CHUNK, attack.sent_bytes - done)
            writer.write(chunk[:size])
            await asyncio.wait_for(writer.drain(), SEND_LIMIT_SECONDS)
            done += size
            sent[0] += size
    except (OSError, TimeoutError):
        pass  # refused: Envoy answered and closed the connection (or stopped reading)
    await asyncio.wait([answer], timeout=1.0)
    return _outcome(answer), writer


def _outcome(answer: asyncio.Future) -> str:
    """The answer's status, "reset" or "closed" without one, "held" while there is none."""
    if not answer.done():
        answer.cancel()
        return "held (no answer)"
    if answer.exception() is not None:
        return "reset"
    words = answer.result().split()
    return words[1].decode() if len(words) > 1 else "closed"


async def _attack(target: Target, attack: Attack, rss: RssPeak) -> tuple[Counter[str], list, int]:
    address = urlsplit(target.urls["chat"])
    sent = [0]
    results = await asyncio.gather(
        *(
            _attacker(address.hostname, address.port, f"127.0.0.{2 + i % attack.addresses}", attack, rss, sent)
            for i in range(attack.connections)
        ),
        return_exceptions=True,
    )
    outcomes: Counter[str] = Counter()
    writers = []
    for result in results:
        if isinstance(result, BaseException):
            outcomes[type(result).__name__] += 1
        else:
            outcomes[result[0]] += 1
            writers.append(result[1])
    return outcomes, writers, sent[0]


def measure(target: Target, attack: Attack, scenario: Scenario, seconds: float, log: Callable[[str], None]) -> Phase:
    """Quiet callers, then the attack, then the callers while the attack's connections are held."""
    pid = target.pids["envoy"]
    phase = Phase(target.name, run_wrk(target, scenario, seconds))
    phase.rss_mb["quiet"] = rss_bytes(pid) / MIB
    log(f"{target.name} quiet: {phase.quiet.rps:.0f} req/s, envoy {phase.rss_mb['quiet']:.0f} MB")
    rss = RssPeak(pid)
    loop = asyncio.new_event_loop()
    try:
        phase.outcomes, writers, sent = loop.run_until_complete(_attack(target, attack, rss))
        phase.sent_mb, phase.guard_hit = sent / MIB, rss.peak >= attack.guard_bytes
        log(f"{target.name} attack: {dict(phase.outcomes)}, envoy {rss.latest / MIB:.0f} MB")
        phase.held = run_wrk(target, scenario, seconds)
        phase.rss_mb["held"] = rss_bytes(pid) / MIB
        for writer in writers:
            writer.close()
        loop.run_until_complete(asyncio.sleep(2))
    finally:
        loop.close()
        rss.stop()
    phase.rss_mb["peak"] = rss.peak / MIB
    phase.rss_mb["after"] = rss_bytes(pid) / MIB
    log(f"{target.name} held: {phase.held.rps:.0f} req/s, envoy peak {phase.rss_mb['peak']:.0f} MB")
    return phase


@dataclass
class SlowBodyReport:
    attack: Attack
    seconds: float
    connections: int
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        meta = run_meta(1, self.seconds)
        a = self.attack
        lines = [
            f"Slow-body attack, {meta['date']}: {meta['cores']} cores ({meta['machine']}, load average "
            f"{meta['load_average_1_5_15'][1]} over the last 5 min; the machine is shared with other sessions' work). "
            f"{a.connections:,} connections from {a.addresses} client address(es) each send headers with "
            f"{'an' if a.token_kind == 'invalid' else 'a'} {a.token_kind} token declaring "
            f"{a.declared_bytes / MIB:g} MiB, up to {a.sent_bytes / MIB:g} MiB of the body, then wait "
            f"(sending stops when Envoy's RSS passes {a.guard_bytes / MIB:,.0f} MB). Ordinary callers: wrk, "
            f"{self.connections} connections, unary chat, {self.seconds:g} s quiet and {self.seconds:g} s while "
            "the connections are held.",
            "",
            "| target | Envoy RSS MB quiet | peak | held | after | attack answers | body MB sent | callers req/s quiet"
            " | held | held/quiet | p99 ms quiet | held |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for p in self.phases:
            held = p.held or Measurement(0, 0, 0, 0, 0, 0)
            ratio = held.rps / p.quiet.rps if p.quiet.rps else 0
            answers = ", ".join(f"{o} x{n}" for o, n in sorted(p.outcomes.items()))
            r = p.rss_mb
            lines.append(
                f"| {p.target} | {r['quiet']:.0f} | {r['peak']:.0f} | {r['held']:.0f} | {r['after']:.0f} | {answers} | "
                f"{p.sent_mb:,.0f}{' (guard)' if p.guard_hit else ''} | {p.quiet.rps:.0f} | {held.rps:.0f} | "
                f"{ratio:.2f}x | {p.quiet.p99_ms:.1f} | {held.p99_ms:.1f} |"
            )
        return "\n".join(lines + ([""] + [f"- {n}" for n in self.notes] if self.notes else []))

    def write(self) -> list[Path]:
        RESULTS_DIR.mkdir(exist_ok=True)
        md, js = RESULTS_DIR / f"{STEM}.md", RESULTS_DIR / f"{STEM}.json"
        md.write_text(self.table() + "\n")
        attack = {k: v for k, v in self.attack.__dict__.items() if k != "token"}
        data = {"meta": run_meta(1, self.seconds), "attack": attack, "phases": []}
        data["phases"] = [p.to_json() for p in self.phases]
        js.write_text(json.dumps(data, indent=2) + "\n")
        return [md, js]
