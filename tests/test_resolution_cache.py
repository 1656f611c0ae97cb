"""The Router's cached resolutions carry their providers: a change of a provider an answer
carries, or of one the request named (it may exist now), drops that answer; another
provider's change keeps it. Without a network: a fake Registry counts the lookups."""

from __future__ import annotations

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.registry.domain.changes import Change
from services.registry.storage.index import Touched
from services.router.directory import Directory

KEY = "sk-" + "k" * 32


class FakeRegistry:
    """Resolves every model to provider "served", with its config and that of "named" when named."""

    def __init__(self) -> None:
        self.calls = 0

    async def ResolveModel(self, request, **_):
        self.calls += 1
        assert request.view == internal_pb.RESOLUTION_VIEW_ROUTING
        answer = internal_pb.ResolveModelResponse(model_found=True, model=request.model)
        answer.candidates.add(provider="served", provider_model="m")
        for provider in ["served", *(p for p in request.named_providers if p == "named")]:
            config = answer.provider_configs.add(redact=[KEY])
            config.provider.id, config.provider.base_url, config.provider.api_key = provider, "http://p/", KEY
            config.prices.add(provider_model="m", input_token_nano_usd=3)
        return answer


def provider_change(provider: str) -> internal_pb.WatchChangesResponse:
    return Change(1, internal_pb.CHANGE_KIND_PROVIDER, provider, Touched()).message()


async def test_a_provider_change_drops_the_answers_that_carry_or_name_it() -> None:
    registry = FakeRegistry()
    directory = Directory(registry)
    directory.watching = True

    async def lookups() -> int:
        before = registry.calls
        plain = await directory.resolve("a/b", "u", "conversational")
        named = await directory.resolve("a/b", "u", "conversational", ["named", "nobody"])
        assert sorted(plain.providers) == ["served"] and sorted(named.providers) == ["named", "served"]
        assert plain.providers["served"].prices["m"].input_token_nano_usd == 3
        assert plain.providers["served"].base_url == "http://p"
        assert not plain.answer.provider_configs  # kept once, as entries
        return registry.calls - before

    assert await lookups() == 2
    assert await lookups() == 0
    for provider, refetched in (("elsewhere", 0), ("served", 2), ("named", 1), ("nobody", 1)):
        directory.invalidate(provider_change(provider))
        assert await lookups() == refetched, provider
