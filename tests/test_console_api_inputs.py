"""Bad input to the console's routes is a 4xx in OpenAI's shape, never a 5xx: days out of
range, page sizes out of range, page tokens that no listing issued (through real Envoy);
and the page tokens themselves (services/common/paging.py)."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchboard.registry.v1 import registry_service_pb2 as registry_pb
from switchboard.registry.v1 import registry_service_pb2_grpc as registry_grpc

from services.common.errors import ApiError
from services.common.paging import MAX_PAGE_TOKEN, key_after, next_page_token, number_after, of_parent
from services.demo import AdminApi

SETTINGS = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
# What Envoy's transcoder answers for a query value it cannot parse into the field (no param).
UNPARSED = ("invalid_json", "invalid_request")
# Every paged REST listing (their page tokens are services/common/paging.py's).
LISTINGS = (
    "/v1/me/tokens",
    "/v1/orgs/{org}/members",
    "/admin/v1/billing/providerReconciliations",
    "/admin/v1/providers",
    "/admin/v1/modelAliases",
)


@pytest.fixture(scope="module")
def caller(stack) -> tuple[str, str, str]:
    """An org admin: (name, token, their org)."""
    api = AdminApi(stack.base_url, stack.admin_token)
    user, org = f"in-{uuid.uuid4().hex[:8]}", f"in-org-{uuid.uuid4().hex[:8]}"
    api.ensure_member(org, user, "admin")
    return user, api.new_token(user), org


def client(stack, caller, path: str) -> httpx.Client:
    """The admin token for the operators' route, the user's token for the others."""
    return stack.admin() if path.startswith("/admin/") else stack.http(caller[1])


def refused(answer: httpx.Response, param: str, codes: tuple[str, ...]) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] in codes
    if error["code"] not in UNPARSED:  # the transcoder's own rejection names no field
        assert error["param"] == param


@SETTINGS
@given(days=st.one_of(st.integers(max_value=-1), st.integers(min_value=91)))
def test_days_out_of_range_are_a_400_naming_days(stack, caller, days) -> None:
    user, token, _ = caller
    with stack.http(token) as http:
        answer = http.get(f"/v1/billing/accounts/{user}/dailyUsage", params={"days": days})
    # beyond int32 the transcoder refuses the number itself
    refused(answer, "days", ("invalid_days",) if -(2**31) <= days < 2**31 else UNPARSED)


@pytest.mark.parametrize("days", ["abc", "1.5", "", "30d"])
def test_days_that_are_not_a_number_are_a_400(stack, caller, days) -> None:
    user, token, _ = caller
    with stack.http(token) as http:
        answer = http.get(f"/v1/billing/accounts/{user}/dailyUsage", params={"days": days})
    refused(answer, "days", UNPARSED)


@SETTINGS
@given(path=st.sampled_from(LISTINGS), size=st.one_of(st.integers(-(2**31), -1), st.integers(1001, 2**31 - 1)))
def test_page_sizes_out_of_range_are_a_400(stack, caller, path, size) -> None:
    with client(stack, caller, path) as http:
        refused(http.get(path.format(org=caller[2]), params={"pageSize": size}), "page_size", ("invalid_request",))


@SETTINGS
@given(path=st.sampled_from(LISTINGS), token=st.text(min_size=1, max_size=300))
def test_page_tokens_no_listing_issued_are_a_400(stack, caller, path, token) -> None:
    with client(stack, caller, path) as http:
        answer = http.get(path.format(org=caller[2]), params={"pageToken": token})
    refused(answer, "page_token", ("invalid_page_token",))


@pytest.mark.parametrize("path", LISTINGS)
def test_another_listings_page_token_is_a_400(stack, caller, path) -> None:
    foreign = next_page_token("someOtherListing", "key")
    with client(stack, caller, path) as http:
        refused(
            http.get(path.format(org=caller[2]), params={"pageToken": foreign}), "page_token", ("invalid_page_token",)
        )


@pytest.mark.parametrize("token", ["zzz", "1", next_page_token("modelMappings", "x"), next_page_token("tokens", "1")])
def test_the_mappings_listing_over_grpc_refuses_page_tokens_it_did_not_issue(stack, token) -> None:
    provider = f"in-p-{uuid.uuid4().hex[:8]}"
    api = AdminApi(stack.base_url, stack.admin_token)
    api.ensure_member(f"{provider}-org", f"{provider}-user")
    api.ensure_provider({"id": provider, "org": f"{provider}-org", "base_url": "http://127.0.0.1:9"})
    request = registry_pb.ListModelMappingsRequest(provider=provider, page_token=token)
    with stack.channel("envoy") as channel, pytest.raises(grpc.RpcError) as refusal:
        registry_grpc.RegistryServiceStub(channel).ListModelMappings(request, timeout=10)
    assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in refusal.value.details()


@given(listing=st.sampled_from(["tokens", "members"]), key=st.text(min_size=1, max_size=96))
def test_a_page_token_gives_back_its_key_and_only_to_its_listing(listing, key) -> None:
    token = next_page_token(listing, key)
    if len(token) > MAX_PAGE_TOKEN or any((c < " " and c != "\n") or c == "\x7f" for c in key):  # no key holds one
        with pytest.raises(ApiError):
            key_after(listing, token)
        return
    assert key_after(listing, token) == key and token.isascii()
    with pytest.raises(ApiError):
        key_after("other" + listing, token)


@given(token=st.text(min_size=1, max_size=300))
def test_made_up_page_tokens_are_refused(token) -> None:
    with pytest.raises(ApiError) as refusal:
        key_after("tokens", token)
    assert refusal.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("key", ["abc", "-1", "1.5", "\u0663", " 7"])
def test_a_numeric_listings_token_carrying_anything_but_a_number_is_refused(key) -> None:
    """Tokens are not signed: one encoded by hand with another key is refused, never a 500."""
    assert number_after("modelMappings", next_page_token("modelMappings", "42")) == 42
    with pytest.raises(ApiError) as refusal:
        number_after("modelMappings", next_page_token("modelMappings", key))
    assert refusal.value.reason == "INVALID_PAGE_TOKEN"


def test_a_page_token_of_another_parents_listing_is_refused() -> None:
    """One provider's mappings token (a user's tokens, an org's members) does not page another's."""
    token = next_page_token(of_parent("modelMappings", "provider-a"), "42")
    assert number_after(of_parent("modelMappings", "provider-a"), token) == 42
    with pytest.raises(ApiError) as refusal:
        number_after(of_parent("modelMappings", "provider-b"), token)
    assert refusal.value.reason == "INVALID_PAGE_TOKEN"
