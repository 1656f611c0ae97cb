"""The web console in a real Chromium (tests/helpers/browser.py) against the real stack (demo provider,
Envoy, the three services): sign-in, the figures it shows against what the API answers, a limit
set in the page, a mapping created in the page, an operator's view of a failing cost API, and no
secret in the page or in anything it fetched.

SWITCHBOARD_CONSOLE_SCREENSHOTS=1 writes the screenshots to docs/console/ (docs/console.md shows
them); otherwise they go to a temporary directory."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from helpers.billing import record
from helpers.browser import chromium
from helpers.clients import http_client
from helpers.registry import unique
from helpers.stacks import RunningStack, Stacks
from helpers.waiting import eventually
from hypothesis import given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, Locator, Page, Response, expect
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc

from services.demo import CHAT_MODEL, IMAGE_MODEL, PROVIDER, USER
from services.launcher import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "console"
CALLER_CHATS = 3
HISTORY_DAYS = 21
NARROW = {"width": 375, "height": 800}
WIDE = {"width": 1280, "height": 900}


def usd(nano: int | str) -> str:
    """What the console shows for an amount (console/format.js)."""
    whole, fraction = divmod(int(nano), 1_000_000_000)
    digits = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    return f"${whole:,}.{digits}"


@dataclass
class World:
    """The demo stack with a caller, an org and its admin, the demo partner, and a provider whose
    cost API fails; `secrets` must never reach a page."""

    stack: RunningStack
    org: str
    broken_provider: str
    caller: str = ""
    caller_token: str = ""
    org_admin: str = ""
    org_admin_token: str = ""
    partner_token: str = ""
    secrets: list[str] = field(default_factory=list)

    def http(self, token: str) -> httpx.Client:
        return self.stack.http(token)

    def api(self, token: str, method: str, path: str, **kwargs) -> dict:
        with self.http(token) as http:
            answer = http.request(method, path, **kwargs)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def admin(self, method: str, path: str, **kwargs) -> dict:
        return self.api(self.stack.admin_token, method, path, **kwargs)


def chat(world: World, token: str, model: str = CHAT_MODEL, **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
    with world.http(token) as http:
        return http.post("/v1/chat/completions", json=body, headers=headers)


def new_user(world_admin: Callable[..., dict], org: str | None = None, role: str = "read") -> tuple[str, str]:
    user = unique("user")
    world_admin("POST", "/admin/v1/users", json={"name": user})
    if org:
        world_admin("PUT", f"/admin/v1/orgs/{org}/members/{user}", json={"role": role})
    return user, world_admin("POST", f"/admin/v1/users/{user}/tokens", json={"name": "laptop"})["token"]


def settle(world: World, account: str, requests: int) -> None:
    """Waits until the account's requests are in the ledger, then until reconciliation settled them."""

    def usage() -> dict:
        return world.admin("GET", "/v1/billing/usage", params={"account": account})

    def settled() -> bool:
        world.admin("POST", "/admin/v1/billing:reconcile", json={})
        return usage()["pendingNanoUsdExact"] == "0"

    eventually(lambda: int(usage()["requests"]) == requests, f"{requests} requests of {account} in the ledger")
    eventually(settled, f"the requests of {account} settled")


def store(world: World, records: list[billing_pb.LedgerRecord]) -> None:
    """Ledger records as the Router sends them."""
    with world.stack.channel("billing") as channel:
        batch = billing_pb.RecordRequestsRequest(records=records)
        billing_grpc.LedgerServiceStub(channel).RecordRequests(batch, timeout=30)


def reconciliation(world: World, provider: str) -> dict:
    """The provider's reconciliation state, after one more reconciliation pass."""
    world.admin("POST", "/admin/v1/billing:reconcile", json={})
    rows = world.admin("GET", "/admin/v1/billing/providerReconciliations")["providerReconciliations"]
    return next(r for r in rows if r["provider"] == provider)


def failing_provider(world: World, account: str) -> None:
    """A provider whose cost API refuses connections, with one request waiting for its cost."""
    provider, org = world.broken_provider, world.broken_provider + "-org"
    api_key, authorization = "sk-console-" + secrets.token_hex(12), "Bearer console-" + secrets.token_hex(12)
    world.secrets += [api_key, authorization.removeprefix("Bearer ")]
    world.admin("POST", "/admin/v1/orgs", json={"name": org})
    dead = f"http://127.0.0.1:{free_port()}"
    body = {"id": provider, "org": org, "baseUrl": dead, "apiKey": api_key, "tasks": ["conversational"],
            "billingUrl": f"{dead}/costs", "billingAuthorization": authorization}  # fmt: skip
    world.admin("POST", "/admin/v1/providers", json=body)
    store(world, [record(account, provider, estimate=4_000)])
    eventually(lambda: int(reconciliation(world, provider)["costApiFailures"]) > 0, "a failed cost API call")


def history(world: World, account: str) -> None:
    """Earlier days of the account: chats and images every day (priced by the reference
    provider's cost API), one request without a provider request id (unpriced), and one waiting
    for the failing cost API (pending)."""
    now = datetime.now(UTC)
    per_day = {day: [CHAT_MODEL] * (1 + day % 3) + [IMAGE_MODEL] * (day % 2) for day in range(1, HISTORY_DAYS)}
    records = [
        record(account, PROVIDER, model=model, start=now - timedelta(days=day))
        for day, models in per_day.items()
        for model in models
    ]
    unpriced = record(account, PROVIDER, provider_request_id="", model=CHAT_MODEL, start=now - timedelta(days=2))
    pending = record(account, world.broken_provider, model=CHAT_MODEL, estimate=60_000)
    store(world, [*records, unpriced, pending])
    eventually(lambda: reconciliation(world, PROVIDER)["pendingRequests"] == "0", "the history settled")


@pytest.fixture(scope="module")
def world(stacks: Stacks) -> Iterator[World]:
    with stacks.demo("console") as (stack, base_url, admin_token, _):
        world = World(RunningStack(stack, base_url, admin_token), org=unique("org"), broken_provider=unique("broken"))
        world.admin("POST", "/admin/v1/orgs", json={"name": world.org})
        world.caller, world.caller_token = new_user(world.admin)
        world.org_admin, world.org_admin_token = new_user(world.admin, world.org, "admin")
        world.admin("PUT", f"/admin/v1/orgs/{world.org}/members/{world.caller}", json={"role": "read"})
        world.partner_token = world.admin("POST", f"/admin/v1/users/{USER}/tokens", json={"name": unique("p")})["token"]
        # No page shows the admin token, nor the org admin's token to anyone else.
        world.secrets += [admin_token, world.org_admin_token]
        for _ in range(CALLER_CHATS):
            assert chat(world, world.caller_token).status_code == 200
        assert chat(world, world.org_admin_token, **{"X-HF-Bill-To": world.org}).status_code == 200
        settle(world, world.caller, CALLER_CHATS)
        settle(world, world.org, 1)
        failing_provider(world, unique("ops"))
        history(world, world.caller)
        yield world


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@dataclass
class Console:
    """One browser context (a tab's sessionStorage) and everything its page fetched."""

    page: Page
    base_url: str
    screenshots: Path  # docs/console with SWITCHBOARD_CONSOLE_SCREENSHOTS set, else a temporary directory
    responses: list[Response] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base_url}/console/{route}")

    def sign_in(self, token: str, route: str = "") -> None:
        self.open(route)
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("button", name="Sign out")).to_be_visible()

    def go(self, route: str) -> None:
        self.page.evaluate("route => { location.hash = route; }", route)
        self.settled()

    def settled(self) -> None:
        """Every panel loaded (none busy) and the page's heading shown."""
        expect(self.page.locator("h1:visible")).to_have_count(1)
        expect(self.page.locator('[aria-busy="true"]')).to_have_count(0)

    def figure(self, name: str) -> str:
        return self.page.locator(f'[data-figure="{name}"]').inner_text()

    def everything_seen(self) -> str:
        """The DOM, field values and storage, every URL requested and every answer's body."""
        page = self.page
        parts = [page.content(), *self.requested]
        if page.url.startswith(self.base_url):  # about:blank has no storage
            parts.append(page.evaluate("[...document.querySelectorAll('input')].map(i => i.value).join(' ')"))
            parts.append(page.evaluate("JSON.stringify(localStorage)"))
        for response in self.responses:
            try:
                parts.append(response.body().decode(errors="replace"))
            except Exception:  # a redirect or an aborted request has no body
                continue
        return "\n".join(parts)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("SWITCHBOARD_CONSOLE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def formats(browser: Browser, world: World) -> Iterator[Page]:
    """A console page, for the modules it loads (signed out)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{world.stack.base_url}/console/")
    yield page
    context.close()


@pytest.fixture
def console(browser: Browser, world: World, screenshots: Path) -> Iterator[Console]:
    """A fresh tab; afterwards, nothing it showed or fetched holds a secret, and no script failed
    and nothing was blocked by the Content-Security-Policy."""
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The browser reports what the Content-Security-Policy blocked on its console.
    page.on("console", lambda message: "Content Security Policy" in message.text and errors.append(message.text))
    opened = Console(page, world.stack.base_url, screenshots)
    page.on("response", lambda response: opened.responses.append(response))
    page.on("request", lambda request: opened.requested.append(request.url))
    try:
        yield opened
        seen = opened.everything_seen()
        assert [s for s in world.secrets if s in seen] == [], "a secret reached the page"
        assert errors == []
    finally:
        context.close()


def by_header(table: Locator, row: Locator) -> dict[str, str]:
    """A table row's cells by their column's header."""
    return dict(zip(table.locator("thead th").all_inner_texts(), row.locator("td").all_inner_texts(), strict=True))


def screenshot(console: Console, name: str) -> None:
    console.page.screenshot(path=console.screenshots / f"{name}.png", full_page=True)


# --- serving ---------------------------------------------------------------------------------


def test_envoy_serves_the_console_with_its_headers(world: World) -> None:
    with http_client(base_url=world.stack.base_url) as http:
        redirect = http.get("/console")
        page = http.get("/console/")
        script = http.get("/console/app.js")
        head = http.head("/console/console.css")
        missing = http.get("/console/nope.js")
    assert (redirect.status_code, redirect.headers["location"]) == (301, f"{world.stack.base_url}/console/")
    assert page.status_code == 200 and page.text == (ROOT / "console" / "index.html").read_text()
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"].startswith("default-src 'self';")
    assert (page.headers["x-content-type-options"], page.headers["cache-control"]) == ("nosniff", "no-cache")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert (head.status_code, head.headers["content-type"], head.content) == (200, "text/css; charset=utf-8", b"")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "route_not_found")


# --- sign-in ---------------------------------------------------------------------------------


def test_keyboard_only_sign_in_keeps_the_token_in_this_tab_only(console: Console, world: World) -> None:
    console.open()
    page = console.page
    for _ in range(10):  # skip link, brand, then the token field
        if page.evaluate("document.activeElement.id") == "token":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(world.caller_token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Your account: {world.caller}")
    console.settled()
    assert page.evaluate("sessionStorage.getItem('switchboard.console.token')") == world.caller_token
    assert page.evaluate("localStorage.length") == 0
    assert [url for url in console.requested if world.caller_token in url] == []
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert page.evaluate("sessionStorage.length") == 0
    assert world.caller_token not in world.stack.logs()  # Envoy's access log and the services' logs


def test_a_bad_token_is_refused_with_a_message(console: Console) -> None:
    console.open()
    console.page.get_by_label("API token").fill("not-a-token")
    console.page.get_by_role("button", name="Sign in").click()
    expect(console.page.get_by_role("alert").first).to_have_text("That token was not accepted.")
    assert console.page.evaluate("sessionStorage.length") == 0


NANO_USD = st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=200, derandomize=True, database=None)
@given(nano=st.one_of(NANO_USD, st.sampled_from([0, 1, 10, 999_999_999, 1_000_000_000, 1_300, 2**63 - 1])))
def test_money_is_shown_and_read_back_exactly(formats: Page, nano: int) -> None:
    """console/format.js in the browser: usd() shows every nano-USD of any int64 amount as the
    API sent it (a decimal string), and parseUsd() reads what usd() shows back to the same amount."""
    shown, read = formats.evaluate(
        "async n => { const f = await import('./format.js');"
        " const text = f.usd(n); return [text, f.parseUsd(text.replaceAll(',', '')).toString()]; }",
        str(nano),
    )
    assert (shown, read) == (usd(nano), str(nano))


# --- callers ---------------------------------------------------------------------------------


def test_the_callers_figures_equal_what_the_api_answers(console: Console, world: World) -> None:
    usage = world.api(world.caller_token, "GET", "/v1/billing/usage", params={"account": world.caller})
    account = world.api(world.caller_token, "GET", f"/v1/billing/accounts/{world.caller}")
    daily = world.api(world.caller_token, "GET", f"/v1/billing/accounts/{world.caller}/dailyUsage")
    console.sign_in(world.caller_token)
    console.settled()
    unpriced = sum(int(u["estimatedNanoUsdExact"]) for u in usage["unpriced"])
    assert [console.figure(name) for name in ("settled", "pending", "unpriced", "requests", "credits", "limit")] == [
        usd(usage["settledNanoUsdExact"]),
        usd(usage["pendingNanoUsdExact"]),
        f"{len(usage['unpriced'])} ({usd(unpriced)})",
        f"{usage['requests']:,}",
        usd(account["includedCreditsNanoUsdExact"]),
        "none",
    ]
    assert console.figure("spent") == usd(account["spentNanoUsdExact"])
    for name, key in (("model", "byModel"), ("provider", "byProvider")):
        lines = console.page.get_by_role("table", name=re.compile(f"^By {name}")).locator("tbody tr")
        assert lines.all_inner_texts() == [
            f"{line[name]}\t{line['requests']:,}\t{usd(line['settledNanoUsdExact'])}\t{usd(line['pendingNanoUsdExact'])}"
            for line in usage[key]
        ]
    chart = console.page.locator("sb-stacked-bars > svg[role=img]")
    slices = [d["total"] for d in daily["days"]]
    total = sum(int(t["settledNanoUsd"]) + int(t["pendingNanoUsd"]) + int(t["unpricedNanoUsd"]) for t in slices)
    assert chart.get_attribute("aria-label") == (
        f"Spend per day by model: {usd(total)} from {daily['startDate']} to {daily['endDate']}"
    )
    assert chart.locator("rect").count() == sum(len(d["byModel"]) for d in daily["days"])
    tokens = console.page.get_by_role("table", name=f"Tokens of {world.caller}")
    assert tokens.locator("tbody tr td:first-child").all_inner_texts() == ["laptop"]
    screenshot(console, "caller")
    console.page.get_by_label("Settled, pending, unpriced").check()
    expect(chart).to_have_attribute("aria-label", re.compile(f"^Spend per day by state: {re.escape(usd(total))} "))


def test_a_limit_set_in_the_page_makes_the_next_chat_a_402(console: Console, world: World) -> None:
    user, token = new_user(world.admin)
    assert chat(world, token).status_code == 200
    console.sign_in(token)
    console.settled()
    console.page.get_by_role("textbox", name=re.compile("^Spending limit")).fill("0.000000001")
    console.page.get_by_role("button", name="Set limit").click()
    expect(console.page.locator('[data-figure="limit"]')).to_have_text("$0.000000001")
    refused = chat(world, token)
    assert (refused.status_code, refused.json()["error"]["code"]) == (402, "insufficient_quota")
    console.page.get_by_role("button", name="Remove limit").click()
    expect(console.page.locator('[data-figure="limit"]')).to_have_text("none")
    assert chat(world, token).status_code == 200
    assert world.admin("GET", f"/v1/billing/accounts/{user}")["limitNanoUsdExact"] == "0"


def test_a_caller_creates_and_revokes_a_token_in_the_page(console: Console, world: World) -> None:
    _, token = new_user(world.admin)
    console.sign_in(token)
    console.settled()
    console.page.get_by_label("New token name").fill("ci")
    console.page.get_by_role("button", name="Create token").click()
    shown = console.page.locator("[data-new-token]")
    expect(shown).to_have_count(1)
    created = shown.inner_text()
    assert chat(world, created).status_code == 200
    console.page.once("dialog", lambda dialog: dialog.accept())
    console.page.get_by_role("button", name="Revoke token ci").click()
    expect(console.page.get_by_role("button", name="Revoke token ci")).to_have_count(0)
    assert chat(world, created).status_code == 401
    names = [t["name"] for t in world.api(token, "GET", "/v1/me/tokens")["apiTokens"]]
    assert names == ["laptop"]


def test_a_caller_creates_a_token_with_limits_in_the_page_and_the_router_holds_it_to_them(console, world) -> None:
    _, token = new_user(world.admin)
    console.sign_in(token)
    console.settled()
    page = console.page
    page.get_by_label("New token name").fill("limited")
    page.get_by_label("Requests per minute").fill("1")
    page.get_by_label("Budget (USD)").fill("2.5")
    page.get_by_label("Budget period").select_option("weekly")
    page.get_by_label("Allowed models").fill(CHAT_MODEL)
    page.get_by_role("button", name="Create token").click()
    shown = page.locator("[data-new-token]")
    expect(shown).to_have_count(1)
    created = shown.inner_text()
    row = page.get_by_role("table", name=re.compile("^Tokens of")).locator("tbody tr", has_text="limited")
    expect(row).to_contain_text(f"1 requests/min; $2.50 weekly; models: {CHAT_MODEL}")
    listed = next(t for t in world.api(token, "GET", "/v1/me/tokens")["apiTokens"] if t["name"] == "limited")
    set_limits = {key: value for key, value in listed["limits"].items() if value not in (0, "0", "", [])}
    assert set_limits == {"requestsPerMinute": 1, "budgetNanoUsd": "2500000000", "budgetPeriod": "weekly",
                          "allowedModels": [CHAT_MODEL]}  # fmt: skip
    assert chat(world, created).status_code == 200
    refused = chat(world, created)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


# --- org admins ------------------------------------------------------------------------------


def test_an_org_admin_sees_the_orgs_spend_and_members(console: Console, world: World) -> None:
    usage = world.api(world.org_admin_token, "GET", "/v1/billing/usage", params={"account": world.org})
    console.sign_in(world.org_admin_token)
    console.page.get_by_role("link", name=f"Org {world.org}").click()
    console.settled()
    assert console.figure("settled") == usd(usage["settledNanoUsdExact"])
    assert console.figure("requests") == "1"
    members = console.page.get_by_role("table", name=f"Members of {world.org}").locator("tbody tr")
    assert sorted(members.all_inner_texts()) == sorted([f"{world.caller}\tread", f"{world.org_admin}\tadmin"])
    screenshot(console, "org")


# --- partners --------------------------------------------------------------------------------


def test_a_partner_creates_a_mapping_in_the_page_and_it_answers_chat(console: Console, world: World) -> None:
    model = f"console/{unique('chat')}"
    catalog = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational", "text-generation"]}
    world.admin("POST", "/admin/v1/models:batchUpsert", json={"models": [catalog]})
    console.sign_in(world.partner_token)
    console.page.get_by_role("link", name=f"Provider {PROVIDER}").click()
    console.settled()
    page = console.page
    page.get_by_label("Task").fill("conversational")
    page.get_by_label("Hub model id").fill(model)
    page.get_by_label("Provider model id").fill("reference-chat")
    page.get_by_label("Status", exact=True).select_option("live")
    page.get_by_role("button", name="Create mapping").click()
    row = page.get_by_role("table", name=f"Mappings of {PROVIDER}").locator("tr", has_text=model)
    expect(row).to_contain_text("live")
    answer = chat(world, world.partner_token, model)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-inference-provider"] == PROVIDER
    health = world.api(world.partner_token, "GET", f"/api/partners/{PROVIDER}/health")
    measured = next(m for m in health["models"] if m["providerModel"] == "reference-chat")
    page.reload()
    console.settled()
    cells = by_header(page.get_by_role("table", name=f"Mappings of {PROVIDER}"), row)
    assert cells["Requests"] == f"{int(measured['requests']):,}"
    assert cells["Error rate"] == f"{100 * measured['errorRate']:.1f} %"
    assert cells["First token"].endswith(" ms") and console.figure("breaker") == "closed"
    assert console.figure("health-requests") == f"{int(health['requests']):,}"
    assert console.figure("health-errors") == f"{int(health['errors']):,}"
    page.get_by_role("button", name=f"Set {model} staging").click()
    # The row said "staging" before the change too (on its "Set staging" button): the new button says it's done.
    expect(page.get_by_role("button", name=f"Set {model} live")).to_be_visible()
    expect(row).to_contain_text("staging")
    table = world.api(world.partner_token, "GET", f"/api/partners/{PROVIDER}/models")
    assert table["conversational"][model]["status"] == "staging"
    screenshot(console, "partner")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Delete {model}").click()
    expect(row).to_have_count(0)


def test_a_partner_runs_the_conformance_check_in_the_page(console: Console, world: World) -> None:
    mapping = world.api(world.partner_token, "GET", f"/api/partners/{PROVIDER}/models")["conversational"][CHAT_MODEL]
    report_path = f"/api/partners/{PROVIDER}/models/{mapping['_id']}/conformanceReport"
    console.sign_in(world.partner_token, f"#/partner/{PROVIDER}")
    console.settled()
    console.page.get_by_role("button", name=f"Check {CHAT_MODEL}").click()
    heading = console.page.get_by_role("heading", name=f"Conformance report: {CHAT_MODEL}")
    expect(heading).to_be_visible(timeout=120_000)
    report = world.api(world.partner_token, "GET", report_path)
    checks = console.page.get_by_role("table", name=f"Checks of {mapping['providerId']}").locator("tbody tr")
    shown = [row.split("\t")[:2] for row in checks.all_inner_texts()]
    assert shown == [[check["name"], check["result"]] for check in report["checks"]]
    assert report["passed"] is True


def test_usage_by_task_with_its_units_and_the_partners_prices_per_unit(console: Console, world: World) -> None:
    user, token = new_user(world.admin)
    spoken = record(user, PROVIDER, estimate=18_000_000)
    spoken.task, spoken.unit, spoken.units = "automatic-speech-recognition", "audio_second", 61
    store(world, [spoken, record(user, PROVIDER, estimate=500)])
    settle(world, user, 2)  # settled by the demo's cost API first: the page and the API then read the same
    usage = world.api(token, "GET", "/v1/billing/usage", params={"account": user})
    console.sign_in(token)
    console.settled()
    by_task = console.page.get_by_role("table", name=re.compile("^By task"))
    rows = [by_header(by_task, row) for row in by_task.locator("tbody tr").all()]
    assert rows == [
        {
            "Task": line["task"],
            "Requests": f"{line['requests']:,}",
            "Used": used,
            "Settled": usd(line["settledNanoUsdExact"]),
            "Pending": usd(line["pendingNanoUsdExact"]),
        }
        for line, used in zip(usage["byTask"], ["61 seconds of audio", "30 tokens"], strict=True)
    ]
    console.go(f"#/partner/{PROVIDER}")
    prices = console.page.get_by_role("table", name=f"Prices of {PROVIDER}")
    image = by_header(prices, prices.locator("tr", has_text=IMAGE_MODEL))
    # the demo prices reference-image at 5,000,000 nano-USD an image
    assert image["Per unit of the task"] == "$0.005 per image\ntext-to-image"
    chat_row = by_header(prices, prices.locator("tr", has_text=CHAT_MODEL))
    assert chat_row["Per million tokens (input / output)"] == "$0.1 / $0.3"


# --- operators -------------------------------------------------------------------------------


def test_an_operator_sees_the_provider_whose_cost_api_fails(console: Console, world: World) -> None:
    rows = world.admin("GET", "/admin/v1/billing/providerReconciliations")["providerReconciliations"]
    broken = next(r for r in rows if r["provider"] == world.broken_provider)
    console.sign_in(world.stack.admin_token)
    console.settled()
    table = console.page.get_by_role("table", name="Reconciliation per provider")
    row = table.locator("tr", has_text=world.broken_provider)
    cells = by_header(table, row)
    assert [cells[name] for name in ("Provider", "Cost API", "Pending", "Unpriced")] == [
        world.broken_provider, "yes", broken["pendingRequests"], broken["unpricedRequests"]
    ]  # fmt: skip
    # Billing keeps asking every 10 s in the background: the page may have counted one more failure.
    assert int(cells["Cost API failures"]) >= int(broken["costApiFailures"]) > 0
    assert cells["Failing now"].startswith("failing") and cells["Last failure"].startswith(broken["lastFailureReason"])
    providers = console.page.get_by_role("table", name="Registered providers")
    expect(providers.locator("tr", has_text=world.broken_provider)).to_contain_text("yes")
    summary = world.admin("GET", "/admin/v1/catalogSummary")
    assert console.figure("catalog-models") == str(summary["modelCount"])
    screenshot(console, "operator")


# --- every page ------------------------------------------------------------------------------


# Controls a screen reader could not name: no label, no aria-label, no text.
UNNAMED = """[...document.querySelectorAll('input, select, button, a[href]')]
  .filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
  .map(e => e.outerHTML)"""
# Landmarks, and whether every section and table is named.
STRUCTURE = """[document.querySelectorAll('header, nav, main').length,
  [...document.querySelectorAll('section')].filter(s => !s.getAttribute('aria-labelledby')).length,
  [...document.querySelectorAll('table')].filter(t => !t.querySelector('caption')).length]"""

FOCUSED = "[document.activeElement.tagName, getComputedStyle(document.activeElement).outlineStyle]"


def test_every_page_fits_a_narrow_window_and_names_its_controls(console: Console, world: World) -> None:
    console.page.set_viewport_size(NARROW)
    visits = [
        (world.caller_token, f"#/account/{world.caller}"),
        (world.org_admin_token, f"#/account/{world.org}"),
        (world.partner_token, f"#/partner/{PROVIDER}"),
        (world.stack.admin_token, "#/operator"),
    ]
    for token, route in visits:
        console.sign_in(token)
        console.go(route)
        page = console.page
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (route, width)
        assert (page.evaluate(UNNAMED), page.evaluate(STRUCTURE)) == ([], [3, 0, 0]), route
        page.keyboard.press("Tab")  # from the page's heading to the next control, drawn with the focus ring
        focused = page.evaluate(FOCUSED)
        # A DIV: a table too wide for the window scrolls in its own box, which the keyboard reaches.
        assert focused[0] in ("A", "BUTTON", "INPUT", "SELECT", "DIV") and focused[1] == "solid", (route, focused)
        if token == world.caller_token:
            screenshot(console, "narrow-caller")
        page.get_by_role("button", name="Sign out").click()
    screenshot(console, "sign-in")
