"""Which tokens manage tokens and spending limits (docs/api-keys.md, "Managing them"): an org admin's
token for an org manages nothing (a key for the org's CI must not mint personal keys billing its
admin) but lists its owner's tokens; Billing decides on a token's limits as they are now, not as it
cached them before a change notice arrived."""

from __future__ import annotations

import pytest
from helpers.contexts import BearerContext
from helpers.registry import create_user, error_of, ok, unique
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1.admin_service_pb2 import ApiTokenLimits

from services.billing.access import Authenticator
from services.billing.servicer import BillingServicer
from services.common.errors import ApiError
from services.common.registry_feed import FeedCache

PERSONAL_TOKEN_ADVICE = "use a personal token without limits"


def test_an_org_token_manages_no_tokens_and_no_limit_but_lists_its_owners_tokens(stack) -> None:
    org = unique("org")
    with stack.admin() as admin:
        ok(admin.post("/admin/v1/orgs", json={"name": org}))
        user, personal = create_user(admin, org, "admin")  # the personal token is "main"
    with stack.http(personal) as http:
        org_token = ok(http.post(f"/v1/orgs/{org}/tokens", json={"name": "ci"}))["token"]
    with stack.http(org_token) as http:
        listed = ok(http.get("/v1/me/tokens"))["apiTokens"]
        refused = [
            http.post("/v1/me/tokens", json={"name": "minted"}),
            http.patch("/v1/me/tokens/main", json={"requestsPerMinute": 1}),
            http.patch("/v1/me/tokens/ci", json={}),
            http.delete("/v1/me/tokens/main"),
            http.post(f"/v1/orgs/{org}/tokens", json={"name": "more"}),
            http.put(f"/v1/billing/accounts/{org}/limit", json={"limitNanoUsd": 0}),
            http.put(f"/v1/billing/accounts/{user}/limit", json={"limitNanoUsd": 0}),
        ]
    assert {(t["name"], t.get("account", "")) for t in listed} == {("main", ""), ("ci", org)}
    for answer in refused:
        error = error_of(answer, 403)
        assert error["code"] == "org_token_cannot_manage" and PERSONAL_TOKEN_ADVICE in error["message"], answer.text
    with stack.http(personal) as http:  # nothing was made or changed; the personal token still manages
        assert {t["name"] for t in ok(http.get("/v1/me/tokens"))["apiTokens"]} == {"main", "ci"}
        ok(http.put(f"/v1/billing/accounts/{org}/limit", json={"limitNanoUsd": 0}))
        ok(http.delete("/v1/me/tokens/ci"))


def test_billing_refuses_a_token_given_limits_a_moment_ago_though_it_cached_it_without(stack) -> None:
    with stack.admin() as admin:
        user, token = create_user(admin, None, None)
        with stack.http(token) as http:
            ok(http.get(f"/v1/billing/accounts/{user}"))  # Billing caches the caller, without limits
            ok(admin.patch(f"/admin/v1/users/{user}/tokens/main", json={"requestsPerMinute": 5}))
            lifted = http.put(f"/v1/billing/accounts/{user}/limit", json={"limitNanoUsd": 0})
    assert error_of(lifted, 403)["code"] == "limited_token_cannot_manage"


# In process: the Registry's change notice never arrives, so only a fresh lookup sees the new limits.


class Registry:
    """A Registry stub whose AuthenticateToken answers `caller`, counting the calls."""

    def __init__(self, caller: internal_pb.Caller) -> None:
        self.caller = caller
        self.calls = 0

    async def AuthenticateToken(self, request, **options: object) -> internal_pb.Caller:
        self.calls += 1
        return self.caller


def watching_feed(registry: Registry) -> FeedCache:
    """A FeedCache whose feed is connected (it caches), with no notice ever coming."""
    feed = FeedCache(registry)
    feed.watching = True
    return feed


async def test_update_spending_limit_looks_the_caller_up_past_the_cache() -> None:
    registry = Registry(internal_pb.Caller(user="ann"))
    auth = Authenticator(watching_feed(registry), admin_token="operators")
    context = BearerContext("hf_sb_ann")
    assert (await auth.caller(context)).user == "ann"  # cached without limits
    # given limits in the Registry; its notice is still on its way
    registry.caller = internal_pb.Caller(user="ann", limits=ApiTokenLimits(requests_per_minute=5))
    assert (await auth.caller(context)) == internal_pb.Caller(user="ann") and registry.calls == 1
    servicer = BillingServicer(db=None, auth=auth, limited=None, reservations=None)
    request = billing_pb.UpdateSpendingLimitRequest(account="ann", limit_nano_usd=0)
    with pytest.raises(ApiError) as refused:
        await servicer.UpdateSpendingLimit(request, context)
    assert refused.value.reason == "LIMITED_TOKEN_CANNOT_MANAGE" and registry.calls == 2


async def test_a_fresh_lookup_forgets_only_the_callers_token() -> None:
    registry = Registry(internal_pb.Caller(user="ann"))
    auth = Authenticator(watching_feed(registry), admin_token="operators")
    for token in ("hf_sb_ann", "hf_sb_other"):
        await auth.caller(BearerContext(token))
    assert (await auth.caller(BearerContext("hf_sb_ann"), fresh=True)).user == "ann" and registry.calls == 3
    assert (await auth.caller(BearerContext("operators"), fresh=True)).admin and registry.calls == 3
    await auth.caller(BearerContext("hf_sb_other"))
    assert registry.calls == 3  # the other token's caller stayed cached
