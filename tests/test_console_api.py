"""The console's backend through real Envoy (issue 14): self-service (/v1/me, one's own
tokens, an org's members), the daily usage series, limits set and removed by their
owners, and the operators' reconciliation state and catalog summary.

One private stack (background reconciliation off: passes run only when a test asks)
and one small HTTP server standing in for the providers: `/chat/v1/...` answers chat
with known usage, `/costs/ok` prices every asked id at COST, `/costs/fail` is a 500.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from helpers.registry import unique
from helpers.upstream import JsonHandler, serving
from helpers.waiting import eventually
from switchboard.registry.v1 import account_service_pb2 as account_pb
from switchboard.registry.v1 import account_service_pb2_grpc as account_grpc

from services.demo import AdminApi

API_KEY = "sk-upstream-" + uuid.uuid4().hex
BILLING_AUTHORIZATION = "Bearer cost-" + uuid.uuid4().hex
COST = 1_500  # what /costs/ok says each request cost, nano-USD
# The price of "upstream-model": per request, per input and per output token (nano-USD).
PRICE = {"providerModel": "upstream-model", "requestNanoUsd": 1_000, "inputTokenNanoUsd": 10, "outputTokenNanoUsd": 20}
USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
ESTIMATE = 1_000 + 3 * 10 + 1 * 20  # what a request is charged until its cost is known
CHAT_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "model": "upstream-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": USAGE,
}


class Provider(JsonHandler):
    """Chat answers (with a request id header) and cost APIs, by path."""

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/costs/fail":
            answer = 500, {"error": f"down; my key is {BILLING_AUTHORIZATION}"}
        elif self.path == "/costs/ok":
            answer = 200, {"requests": [{"requestId": i, "costNanoUsd": COST} for i in request["requestIds"]]}
        else:
            answer = 200, CHAT_ANSWER
        self.send(answer[0], json.dumps(answer[1]).encode())


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(Provider) as url:
        yield url


@pytest.fixture(scope="module")
def sb(make_stack):
    return make_stack(SWITCHBOARD_RECONCILE_INTERVAL_SECONDS="3600")


def ok(answer: httpx.Response) -> dict:
    assert answer.status_code == 200, answer.text
    return answer.json()


def error_of(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@dataclass
class People:
    """An org `org` with an admin (alice) and a read member (bob), and an outsider (mallory);
    each has one token."""

    sb: object
    api: AdminApi
    org: str
    alice: str
    bob: str
    mallory: str
    tokens: dict[str, str]

    def http(self, who: str) -> httpx.Client:
        return self.sb.http(self.tokens[who])


@pytest.fixture
def people(sb) -> People:
    api = AdminApi(sb.base_url, sb.admin_token)
    org, alice, bob, mallory = unique("org"), unique("alice"), unique("bob"), unique("mallory")
    api.ensure_member(org, alice, "admin")
    api.ensure_member(org, bob, "read")
    api.ensure_member(unique("other"), mallory, "admin")
    tokens = {name: api.new_token(name) for name in (alice, bob, mallory)}
    return People(sb, api, org, alice, bob, mallory, tokens)


# --- /v1/me ------------------------------------------------------------------------------------


def test_me_names_the_user_their_org_roles_and_the_providers_each_org_owns(sb, people) -> None:
    provider = unique("prov")
    people.api.ensure_provider(
        {"id": provider, "org": people.org, "base_url": "http://127.0.0.1:9", "api_key": API_KEY}
    )
    with people.http(people.bob) as http:
        me = ok(http.get("/v1/me"))
    assert me == {
        "user": people.bob,
        "admin": False,
        "orgs": [{"org": people.org, "role": "read", "providerIds": [provider]}],
    }
    with sb.admin() as http:
        assert ok(http.get("/v1/me")) == {"user": "", "admin": True, "orgs": []}


def test_me_over_native_grpc_through_envoy(sb, people) -> None:
    with sb.channel() as channel:
        me = account_grpc.AccountServiceStub(channel).GetMe(
            account_pb.GetMeRequest(), metadata=[("authorization", f"Bearer {people.tokens[people.alice]}")], timeout=10
        )
    assert (me.user, me.admin, [(o.org, o.role) for o in me.orgs]) == (people.alice, False, [(people.org, "admin")])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/me"),
        ("GET", "/v1/me/tokens"),
        ("POST", "/v1/me/tokens"),
        ("DELETE", "/v1/me/tokens/x"),
        ("GET", "/v1/orgs/acme/members"),
        ("GET", "/v1/billing/accounts/acme/dailyUsage"),
    ],
)
@pytest.mark.parametrize("token", [None, "sb-not-a-token"])
def test_every_self_service_route_needs_a_valid_token(sb, method, path, token) -> None:
    with sb.http(token) as http:
        body = {"name": "x"} if method == "POST" else None
        assert error_of(http.request(method, path, json=body), 401)["code"] == "invalid_api_key"


# --- my tokens ---------------------------------------------------------------------------------


def test_a_user_creates_lists_and_revokes_their_own_tokens_and_no_listing_shows_a_secret(sb, people) -> None:
    with people.http(people.alice) as http:
        created = ok(http.post("/v1/me/tokens", json={"name": "laptop"}))
        secret = created["token"]
        assert secret.startswith("hf_sb_") and created["apiToken"]["name"] == "laptop"
        assert created["apiToken"]["suffix"] == secret[-4:]
        listed = ok(http.get("/v1/me/tokens"))
    names = sorted(t["name"] for t in listed["apiTokens"])
    assert len(names) == 2 and "laptop" in names and listed["nextPageToken"] == ""
    assert {t["name"]: t["suffix"] for t in listed["apiTokens"]}["laptop"] == secret[-4:]
    assert secret not in json.dumps(listed) and people.tokens[people.alice] not in json.dumps(listed)
    with sb.http(secret) as new:
        assert ok(new.get("/v1/me"))["user"] == people.alice  # the new token works at once
        assert ok(new.delete("/v1/me/tokens/laptop")) == {}  # revoking the token in use
        assert error_of(new.get("/v1/me"), 401)["code"] == "invalid_api_key"
    with people.http(people.alice) as http:
        assert [t["name"] for t in ok(http.get("/v1/me/tokens"))["apiTokens"]] == [n for n in names if n != "laptop"]
    with sb.admin() as admin:  # the admin API sees the same tokens: one store
        assert ok(admin.get(f"/admin/v1/users/{people.alice}"))["tokenNames"] == [n for n in names if n != "laptop"]


def test_tokens_made_by_the_admin_api_have_suffixes_too_and_the_admin_token_is_no_user(sb, people) -> None:
    with sb.admin() as admin:
        secret = ok(admin.post(f"/admin/v1/users/{people.bob}/tokens", json={"name": "ci"}))["token"]
        for method, path in (("GET", "/v1/me/tokens"), ("POST", "/v1/me/tokens"), ("DELETE", "/v1/me/tokens/ci")):
            error = error_of(admin.request(method, path, json={"name": "x"} if method == "POST" else None), 403)
            assert error["code"] == "not_a_user_token"
    with people.http(people.bob) as http:
        assert {t["name"]: t["suffix"] for t in ok(http.get("/v1/me/tokens"))["apiTokens"]}["ci"] == secret[-4:]


def test_a_user_cannot_see_or_revoke_another_users_tokens(sb, people) -> None:
    with people.http(people.alice) as http:
        ok(http.post("/v1/me/tokens", json={"name": "alices"}))
    with people.http(people.mallory) as http:
        listed = ok(http.get("/v1/me/tokens"))["apiTokens"]
        assert [t["name"] for t in listed] != [] and "alices" not in {t["name"] for t in listed}
        assert error_of(http.delete("/v1/me/tokens/alices"), 404)["code"] == "token_not_found"
    with people.http(people.alice) as http:
        assert "alices" in {t["name"] for t in ok(http.get("/v1/me/tokens"))["apiTokens"]}


def test_token_names_are_checked_and_unique_per_user(sb, people) -> None:
    with people.http(people.alice) as http:
        ok(http.post("/v1/me/tokens", json={"name": "dup"}))
        assert error_of(http.post("/v1/me/tokens", json={"name": "dup"}), 409)["code"] == "already_exists"
        assert error_of(http.post("/v1/me/tokens", json={"name": "bad name"}), 400)["param"] == "name"
        assert error_of(http.post("/v1/me/tokens", json={"name": "x" * 97}), 400)["param"] == "name"
        assert error_of(http.post("/v1/me/tokens", json={}), 400)["code"] == "missing_field"
        assert error_of(http.post("/v1/me/tokens", json={"name": "a", "user": "x"}), 400)["code"] == "unknown_field"
    with people.http(people.bob) as http:  # another user may use the same name
        ok(http.post("/v1/me/tokens", json={"name": "dup"}))


def test_token_pages_cover_every_token_once_in_name_order(sb, people) -> None:
    with people.http(people.bob) as http:
        for n in range(5):
            ok(http.post("/v1/me/tokens", json={"name": f"page-{n}"}))
        expected = sorted(t["name"] for t in ok(http.get("/v1/me/tokens"))["apiTokens"])
        seen, token = [], ""
        for _ in range(10):
            page = ok(http.get("/v1/me/tokens", params={"pageSize": 2, "pageToken": token}))
            assert len(page["apiTokens"]) == (2 if page["nextPageToken"] else len(expected) - len(seen))
            seen += [t["name"] for t in page["apiTokens"]]
            token = page["nextPageToken"]
            if not token:
                break
    assert seen == expected and len(expected) == 6


# --- an org's members --------------------------------------------------------------------------


def test_org_admins_and_the_admin_token_list_an_orgs_members(sb, people) -> None:
    expected = sorted(
        [
            {"org": people.org, "user": people.alice, "role": "admin"},
            {"org": people.org, "user": people.bob, "role": "read"},
        ],
        key=lambda m: m["user"],
    )
    for client in (people.http(people.alice), sb.admin()):
        with client as http:
            assert ok(http.get(f"/v1/orgs/{people.org}/members")) == {"members": expected, "nextPageToken": ""}
            first = ok(http.get(f"/v1/orgs/{people.org}/members", params={"pageSize": 1}))
            rest = ok(http.get(f"/v1/orgs/{people.org}/members", params={"pageToken": first["nextPageToken"]}))
            assert first["members"] + rest["members"] == expected and rest["nextPageToken"] == ""


def test_only_an_orgs_admins_see_its_members_and_nobody_learns_whether_an_org_exists(sb, people) -> None:
    missing = unique("no-such-org")
    for who in (people.bob, people.mallory):  # a read member, an admin of another org
        with people.http(who) as http:
            for org in (people.org, missing):
                error = error_of(http.get(f"/v1/orgs/{org}/members"), 403)
                assert error["code"] == "org_access_denied" and people.alice not in error["message"]
    with sb.admin() as http:
        assert error_of(http.get(f"/v1/orgs/{missing}/members"), 404)["code"] == "org_not_found"


# --- limits set and removed by their owners ----------------------------------------------------


@dataclass
class Served:
    """Three providers of one org (the people's), each serving its own model."""

    settled: tuple[str, str]  # (provider, model): cost API answers COST
    failing: tuple[str, str]  # cost API answers 500
    unpriced: tuple[str, str]  # no request id header: unpriced at once; no cost API


def serve(people: People, upstream: str, billing: str, **settings: object) -> tuple[str, str]:
    provider, model = unique("p"), f"{people.org}/{unique('m')}"
    config = {
        "id": provider,
        "org": people.org,
        "base_url": f"{upstream}/chat",
        "api_key": API_KEY,
        "tasks": ["conversational"],
        **settings,
    }
    if billing:
        config |= {"billing_url": f"{upstream}/costs/{billing}", "billing_authorization": BILLING_AUTHORIZATION}
    people.api.ensure_provider(config)
    people.api.call("PUT", f"/admin/v1/providers/{provider}/prices", {"prices": [PRICE]})
    entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
    people.api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
    mapping = {"task": "conversational", "hfModel": model, "providerModel": "upstream-model", "status": "live"}
    people.api.call("POST", f"/api/partners/{provider}/models", mapping)
    return provider, model


@pytest.fixture
def served(people, upstream) -> Served:
    return Served(
        serve(people, upstream, "ok"),
        serve(people, upstream, "fail"),
        serve(people, upstream, "", request_id_header="X-Never-Sent"),
    )


def chat(http: httpx.Client, model: str, **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    return http.post("/v1/chat/completions", json=body, headers=headers)


def test_a_user_sets_and_removes_their_own_limit_and_the_next_request_follows(sb, people, served) -> None:
    _, model = served.settled
    with people.http(people.mallory) as http:
        limited = ok(http.put(f"/v1/billing/accounts/{people.mallory}/limit", json={"limitNanoUsd": "1"}))
        assert limited["limitNanoUsdExact"] == "1"
        assert error_of(chat(http, model), 402)["code"] == "insufficient_quota"
        removed = ok(http.put(f"/v1/billing/accounts/{people.mallory}/limit", json={"limitNanoUsd": 0}))
        assert removed["limitNanoUsdExact"] == "0" and removed["limitNanoUsd"] == 0
        assert chat(http, model).status_code == 200
        assert ok(http.get(f"/v1/billing/accounts/{people.mallory}"))["limitNanoUsdExact"] == "0"


def test_a_token_with_limits_cannot_lift_its_accounts_limit(sb, people) -> None:
    """A key handed out with limits manages nothing: the account's spending limit neither."""
    body = {"name": unique("capped"), "limits": {"budgetNanoUsd": "1000", "budgetPeriod": "daily"}}
    capped = people.api.call("POST", f"/admin/v1/users/{people.mallory}/tokens", body)["token"]
    with sb.http(capped) as http:
        error = error_of(http.put(f"/v1/billing/accounts/{people.mallory}/limit", json={"limitNanoUsd": 0}), 403)
    assert error["code"] == "limited_token_cannot_manage"


def test_an_org_admin_sets_and_removes_the_orgs_limit_and_its_members_cannot(sb, people, served) -> None:
    _, model = served.settled
    with people.http(people.bob) as bob:
        assert chat(bob, model, **{"X-HF-Bill-To": people.org}).status_code == 200
        for body in ({"limitNanoUsd": 1}, {"limitNanoUsd": 0}):
            error = error_of(bob.put(f"/v1/billing/accounts/{people.org}/limit", json=body), 403)
            assert error["code"] == "account_access_denied"
        with people.http(people.alice) as alice:
            ok(alice.put(f"/v1/billing/accounts/{people.org}/limit", json={"limitNanoUsd": 1}))
            assert error_of(chat(bob, model, **{"X-HF-Bill-To": people.org}), 402)["code"] == "insufficient_quota"
            assert chat(bob, model).status_code == 200  # bob's own account has no limit
            ok(alice.put(f"/v1/billing/accounts/{people.org}/limit", json={"limitNanoUsd": 0}))
        assert chat(bob, model, **{"X-HF-Bill-To": people.org}).status_code == 200


# --- the daily usage series --------------------------------------------------------------------


def daily(http: httpx.Client, account: str, **params: object) -> httpx.Response:
    return http.get(f"/v1/billing/accounts/{account}/dailyUsage", params=params)


def known_requests(sb, people: People, served: list[tuple[str, str]]) -> None:
    """Alice chats once with each (provider, model), the ledger has them all, then one
    reconciliation pass runs."""
    with people.http(people.alice) as http:
        for _, model in served:
            assert chat(http, model).status_code == 200
        count = str(len(served))
        eventually(lambda: ok(daily(http, people.alice))["total"]["requests"] == count, "the ledger records")
    with sb.admin() as admin:
        ok(admin.post("/admin/v1/billing:reconcile", json={}))


def usage_slice(settled: int = 0, pending: int = 0, unpriced: int = 0, requests: int = 0, **key: str) -> dict:
    return {
        "model": key.get("model", ""),
        "provider": key.get("provider", ""),
        "settledNanoUsd": str(settled),
        "pendingNanoUsd": str(pending),
        "unpricedNanoUsd": str(unpriced),
        "requests": str(requests),
    }


def test_the_daily_series_shows_exactly_the_known_requests_split_by_state_model_and_provider(
    sb, people, served
) -> None:
    before = datetime.now(UTC).date()
    known_requests(sb, people, [served.settled, served.settled, served.failing, served.unpriced])
    with people.http(people.alice) as http:
        series = ok(daily(http, people.alice))
        month = ok(http.get("/v1/billing/usage", params={"account": people.alice}))
    after = datetime.now(UTC).date()

    (a, model_a), (b, model_b), (c, model_c) = served.settled, served.failing, served.unpriced
    by_model = sorted(
        [
            usage_slice(settled=2 * COST, requests=2, model=model_a),
            usage_slice(pending=ESTIMATE, requests=1, model=model_b),
            usage_slice(unpriced=ESTIMATE, requests=1, model=model_c),
        ],
        key=lambda s: s["model"],
    )
    by_provider = sorted(
        [
            usage_slice(settled=2 * COST, requests=2, provider=a),
            usage_slice(pending=ESTIMATE, requests=1, provider=b),
            usage_slice(unpriced=ESTIMATE, requests=1, provider=c),
        ],
        key=lambda s: s["provider"],
    )
    total = usage_slice(settled=2 * COST, pending=ESTIMATE, unpriced=ESTIMATE, requests=4)
    breakdown = {"total": total, "byModel": by_model, "byProvider": by_provider,
                 "otherModels": usage_slice(), "otherProviders": usage_slice()}  # fmt: skip
    assert {key: series[key] for key in breakdown} == breakdown
    dates = [d["date"] for d in series["days"]]
    assert (
        len(dates) == 30
        and dates == sorted(dates)
        and (series["startDate"], series["endDate"]) == (dates[0], dates[-1])
    )
    assert date.fromisoformat(dates[-1]) - date.fromisoformat(dates[0]) == timedelta(days=29)
    busy = [d for d in series["days"] if d["total"] != usage_slice()]
    assert len(busy) == 1 and date.fromisoformat(busy[0]["date"]) in (before, after)
    assert busy[0] == {"date": busy[0]["date"], **breakdown}
    assert all(d["byModel"] == [] and d["byProvider"] == [] for d in series["days"] if d is not busy[0])
    # the month's usage agrees (its pending includes the unpriced estimates)
    assert (month["settledNanoUsdExact"], month["pendingNanoUsdExact"], month["requests"]) == (
        str(2 * COST),
        str(2 * ESTIMATE),
        4,
    )


def test_the_series_has_the_days_asked_for_ending_today(sb, people) -> None:
    with people.http(people.alice) as http:
        for days, expected in ((1, 1), (7, 7), (90, 90), (None, 30)):
            series = ok(daily(http, people.alice, **({} if days is None else {"days": days})))
            assert len(series["days"]) == expected
            first, last = date.fromisoformat(series["startDate"]), date.fromisoformat(series["endDate"])
            assert last in (datetime.now(UTC).date(), datetime.now(UTC).date() - timedelta(days=1))
            assert last - first == timedelta(days=expected - 1)


def test_an_orgs_series_is_for_its_admins_and_nobody_sees_another_accounts(sb, people, served) -> None:
    with people.http(people.bob) as bob:
        assert chat(bob, served.settled[1], **{"X-HF-Bill-To": people.org}).status_code == 200
    with people.http(people.alice) as alice:
        eventually(lambda: ok(daily(alice, people.org))["total"]["requests"] == "1", "the org's record")
        assert ok(daily(alice, people.alice))["account"] == people.alice
    for who, account in (
        (people.bob, people.org),
        (people.bob, people.alice),
        (people.mallory, people.org),
        (people.mallory, people.bob),
        (people.alice, people.bob),
    ):
        with people.http(who) as http:
            error = error_of(daily(http, account), 403)
            assert error["code"] == "account_access_denied" and "requests" not in error["message"]


# --- operators ---------------------------------------------------------------------------------


def test_operators_see_each_providers_reconciliation_state_and_no_secret(sb, people, served) -> None:
    known_requests(sb, people, [served.settled, served.failing, served.failing, served.unpriced])
    with sb.admin() as admin:
        answer = admin.get("/admin/v1/billing/providerReconciliations", params={"pageSize": 1000})
    listing = ok(answer)
    assert API_KEY not in answer.text and BILLING_AUTHORIZATION not in answer.text and "cost-" not in answer.text
    states = {r["provider"]: r for r in listing["providerReconciliations"]}
    (a, _), (b, _), (c, _) = served.settled, served.failing, served.unpriced
    assert {
        k: states[b][k]
        for k in (
            "hasCostApi",
            "pendingRequests",
            "unpricedRequests",
            "costApiFailures",
            "consecutiveFailures",
            "lastFailureReason",
        )
    } == {
        "hasCostApi": True,
        "pendingRequests": "2",
        "unpricedRequests": "0",
        "costApiFailures": "1",
        "consecutiveFailures": 1,
        "lastFailureReason": "HTTP 500",
    }
    assert "lastFailureTime" in states[b] and "lastAttemptTime" in states[b]
    assert states[a] | {"lastAttemptTime": ""} == {
        "provider": a,
        "hasCostApi": True,
        "pendingRequests": "0",
        "unpricedRequests": "0",
        "costApiFailures": "0",
        "consecutiveFailures": 0,
        "lastFailureReason": "",
        "lastAttemptTime": "",
    }
    assert states[c] == {
        "provider": c,
        "hasCostApi": False,
        "pendingRequests": "0",
        "unpricedRequests": "1",
        "costApiFailures": "0",
        "consecutiveFailures": 0,
        "lastFailureReason": "",
    }
    assert "lastPassTime" in listing


def test_reconciliation_pages_cover_every_provider_once(sb, people, served) -> None:
    with sb.admin() as admin:
        ok(admin.post("/admin/v1/billing:reconcile", json={}))
        everything = [
            r["provider"] for r in ok(admin.get("/admin/v1/billing/providerReconciliations"))["providerReconciliations"]
        ]
        seen, token = [], ""
        while True:
            params = {"pageSize": 2, **({"pageToken": token} if token else {})}
            page = ok(admin.get("/admin/v1/billing/providerReconciliations", params=params))
            seen += [r["provider"] for r in page["providerReconciliations"]]
            token = page["nextPageToken"]
            if not token:
                break
    assert seen == everything == sorted(everything) and served.settled[0] in seen


def test_catalog_summary_counts_models_and_aliases_and_names_the_last_import(sb) -> None:
    with sb.admin() as admin:
        before = ok(admin.get("/admin/v1/catalogSummary"))
        started = datetime.now(UTC)
        models = [{"id": f"{unique('ns')}/m{n}"} for n in range(3)]
        ok(admin.post("/admin/v1/models:batchUpsert", json={"models": models}))
        ok(admin.post("/admin/v1/modelAliases", json={"name": unique("alias"), "target": models[0]["id"]}))
        after = ok(admin.get("/admin/v1/catalogSummary"))
    assert after["modelCount"] == before["modelCount"] + 3 and after["aliasCount"] == before["aliasCount"] + 1
    assert after["lastImportModelCount"] == 3
    imported = datetime.fromisoformat(after["lastImportTime"].replace("Z", "+00:00"))
    assert started - timedelta(seconds=1) <= imported <= datetime.now(UTC)


@pytest.mark.parametrize("path", ["/admin/v1/catalogSummary", "/admin/v1/billing/providerReconciliations"])
def test_operator_views_need_the_admin_token(sb, people, path) -> None:
    with people.http(people.alice) as http:
        assert error_of(http.get(path), 403)["code"] == "forbidden"
    with sb.http() as http:
        assert error_of(http.get(path), 401)["code"] == "invalid_api_key"
