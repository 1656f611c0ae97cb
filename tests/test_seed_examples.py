"""The seed's own Python examples (tests/seeds/001_75ecb03a78ce5bbd.txt, a verbatim copy of the
project's seed document) run against `switchboard up --demo` as a user would run them: each a
script of its own, with no token, changed only in host and port and in the third-party provider
names, which become the demo's provider id. `gpt-4o-mini` and `flux` are the demo's aliases.
"""

from __future__ import annotations

import ast
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from services.demo import ALIASES, ANONYMOUS_ACCOUNT, CHAT_MODEL, IMAGE_MODEL, PROVIDER
from services.launcher import free_port

pytestmark = pytest.mark.e2e  # starts processes

SEED = Path(__file__).parent / "seeds" / "001_75ecb03a78ce5bbd.txt"
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
SEED_ADDRESS = "localhost:1337"
THIRD_PARTY_PROVIDERS = ("HuggingChat", "AnotherProvider", "HuggingSpace")
DEADLINE_SECONDS = 120  # bounds a failing start or example only
LAST_DEMO_LINE = "anonymous mode:"


def seed_examples(text: str) -> list[str]:
    """The document's code, one script per example: each "Example:" section's code follows the
    sentence ending in ":" that introduces it. The provider details example continues the
    providers list example (it uses its `import requests`), so the two are one script."""
    sections = text.split("\nExample: ")[1:]
    blocks = []
    for section in sections:
        code = section.split(":\n\n", 1)[1].split("\n\nKey Points", 1)[0]
        blocks.append(code.strip("\n") + "\n")
    listing, details, *others = blocks
    return [listing + "\n" + details, *others]


def adapted(script: str, port: int) -> str:
    """The script for this stack: its host and port, the demo's provider for every third-party one."""
    script = script.replace(SEED_ADDRESS, f"127.0.0.1:{port}")
    for name in THIRD_PARTY_PROVIDERS:
        script = script.replace(name, PROVIDER)
    return script


@dataclass
class Demo:
    port: int
    data_dir: Path
    lines: str  # what `switchboard up --demo` printed

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def read_until(process: subprocess.Popen, marker: str) -> str:
    deadline = time.monotonic() + DEADLINE_SECONDS
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.lstrip().startswith(marker):
            return "".join(lines)
    pytest.fail(f"`switchboard up --demo` printed no {marker!r} line: {''.join(lines)}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    port, data_dir = free_port(), tmp_path_factory.mktemp("seed") / "data"
    env = {name: value for name, value in os.environ.items() if name != "SWITCHBOARD_ADMIN_TOKEN"}
    argv = [SWITCHBOARD, "up", "--demo", "--http-port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield Demo(port, data_dir, read_until(process, LAST_DEMO_LINE))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_example(script: str) -> list[str]:
    """Runs the script in a Python of its own; the lines it printed."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE_SECONDS, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def anonymous_usage(demo: Demo, requests: int) -> dict:
    """The demo's anonymous account's usage this month, once it counts `requests` (or the deadline passed)."""
    admin_token = (demo.data_dir / "admin-token").read_text().strip()
    url, headers = f"{demo.base_url}/v1/billing/usage", {"Authorization": f"Bearer {admin_token}"}
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        answer = httpx.get(url, params={"account": ANONYMOUS_ACCOUNT}, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        if answer.json().get("requests", 0) >= requests or time.monotonic() > deadline:
            return answer.json()
        time.sleep(0.1)


def test_the_seed_has_four_python_examples_and_only_host_port_and_providers_change() -> None:
    scripts = seed_examples(SEED.read_text())
    assert len(scripts) == 4
    for script in scripts:
        assert script.startswith("import requests\n") and SEED_ADDRESS in script
        assert "Authorization" not in script
        changed = adapted(script, 8080)
        assert changed != script and "localhost" not in changed
        assert not any(name in changed for name in THIRD_PARTY_PROVIDERS)


def test_the_seed_examples_run_against_the_demo_without_a_token(demo: Demo) -> None:
    listing, single, multiple, images = (adapted(s, demo.port) for s in seed_examples(SEED.read_text()))
    provider_url = re.search(rf"reference provider '{PROVIDER}' at (\S+);", demo.lines).group(1)

    provider_line, *details = run_example(listing)
    assert provider_line == f"ID: {PROVIDER}, URL: {provider_url}"
    assert details[0] == f"Provider ID: {PROVIDER}"
    models = ast.literal_eval(details[1].removeprefix("Supported Models: "))
    assert {CHAT_MODEL, IMAGE_MODEL, *(alias["name"] for alias in ALIASES)} <= set(models)
    parameters = ast.literal_eval(details[2].removeprefix("Parameters: "))
    assert {"model", "messages", "prompt", "response_format"} <= set(parameters)

    assert run_example(single) == ["Reference answer to: Write a short story about a robot"]
    assert run_example(multiple) == ["Reference answer to: What are the benefits of AI in education?"]

    (image_line,) = run_example(images)
    url = re.fullmatch(rf"Image URL: ({re.escape(provider_url)}/images/\S+\.png)", image_line).group(1)
    png = httpx.get(url, timeout=30)
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).format == "PNG"

    billed = anonymous_usage(demo, requests=3)  # two chats and one image, none with a token
    assert billed["requests"] == 3
    assert {line["model"]: line["requests"] for line in billed["byModel"]} == {CHAT_MODEL: 2, IMAGE_MODEL: 1}
