"""InternalService: what the Router and Billing ask of the Registry.

Authentication and resolution answer from the in-memory index; WatchChanges
streams every committed change so callers can keep local copies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.errors import not_found
from services.registry.api.health import HealthMethods
from services.registry.domain import capabilities
from services.registry.domain.messages import provider_configs
from services.registry.domain.routing_configs import RoutingConfigs
from services.registry.domain.state import RegistryState, hash_token, invalid_token
from services.registry.domain.tokens import limits_of, token_id
from services.registry.domain.validation import (
    MAX_PROVIDERS,
    check_count,
    check_model_id,
    check_name,
    check_provider_model,
    check_task,
    shown,
)
from services.registry.storage import queries
from services.registry.storage.index import Candidate, Resolution


def candidate_message(candidate: Candidate) -> internal_pb.Candidate:
    message = internal_pb.Candidate(
        provider=candidate.provider,
        provider_model=candidate.provider_model,
        status=candidate.status,
        mapping_id=candidate.mapping_id,
        status_reason=candidate.status_reason,
    )
    if candidate.adapter is not None:
        adapter = candidate.adapter
        message.adapter.type = adapter.type
        message.adapter.model = adapter.model
        message.adapter.weights_path = adapter.weights_path
        message.adapter.base_provider_model = adapter.base_provider_model
    capabilities.fill(message, candidate.capabilities)
    return message


def resolution_message(resolution: Resolution) -> internal_pb.ResolveModelResponse:
    return internal_pb.ResolveModelResponse(
        model_found=resolution.model_found,
        candidates=[candidate_message(c) for c in resolution.candidates],
        exclusions=[internal_pb.Exclusion(provider=p, reason=r, status=s) for p, r, s in resolution.exclusions],
        model=resolution.model,
    )


class InternalServicer(HealthMethods, internal_grpc.InternalServiceServicer):
    """Identity, resolution, provider configuration, the change feed and the shared health."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self.index = state.index
        self.routing = RoutingConfigs(state)

    async def AuthenticateToken(
        self, request: internal_pb.AuthenticateTokenRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.Caller:
        user = await self.state.fresh(lambda: self.state.user_of_token(request.token))
        if user is None:
            return internal_pb.Caller(admin=True)
        entry = self.index.user(user)
        memberships = [
            admin_pb.Membership(org=org, user=user, role=role) for org, role in sorted(entry.memberships.items())
        ]
        digest = hash_token(request.token)
        found = await self.state.db.run(lambda session: limits_of(session, digest))
        if found is None:  # revoked: never served without its limits while this replica catches up
            raise invalid_token()
        limits, account = found
        return internal_pb.Caller(
            user=user, memberships=memberships, preferred_providers=entry.preferred_providers, limits=limits,
            token_id=token_id(digest), account=account,
        )  # fmt: skip

    async def ResolveModel(
        self, request: internal_pb.ResolveModelRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.ResolveModelResponse:
        check_task(request.task)
        check_count(request.providers, MAX_PROVIDERS, "providers")
        check_count(request.named_providers, MAX_PROVIDERS, "named_providers")
        await self.state.fresh(lambda: self._catalog_model(request.model))  # an alias too: resolve() follows it
        answer = resolution_message(self.index.resolve(request.model, request.user, request.task, request.providers))
        answer.tasks.extend(self.index.mapped_tasks(request.model))
        return await self._in_view(answer, request.view, request.named_providers)

    async def _in_view(
        self, answer: internal_pb.ResolveModelResponse, view: int, named: Iterable[str] = ()
    ) -> internal_pb.ResolveModelResponse:
        """The answer in the routing view: with the config of every provider it names (candidates
        and the named ones that exist), priced for the candidates' provider models, so that the
        Router needs no second answer to call them."""
        if view != internal_pb.RESOLUTION_VIEW_ROUTING:
            return answer
        models: dict[str, set[str]] = {provider: set() for provider in named}
        for candidate in answer.candidates:
            priced = (candidate.provider_model, candidate.adapter.base_provider_model)
            models.setdefault(candidate.provider, set()).update(model for model in priced if model)
        answer.provider_configs.extend(await self.routing.priced(models))
        return answer

    def _catalog_model(self, model: str) -> str:
        """The hub id of a valid hub id or model alias (400 otherwise) of a model in the catalog
        (404 otherwise): the caller's mistake, never something the Router could take for an outage."""
        check_model_id(model, "model")
        hub_id = self.index.canonical(model)
        if hub_id not in self.index.catalog:
            raise not_found("MODEL_NOT_FOUND", f"model {shown(model)} does not exist", "model")
        return hub_id

    async def ResolveProviderModel(
        self, request: internal_pb.ResolveProviderModelRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.ResolveModelResponse:
        check_name(request.provider, "provider")
        check_provider_model(request.provider_model, "model")
        check_task(request.task)
        await self.state.fresh(lambda: self.state.provider(request.provider))
        resolution = self.index.resolve_provider_model(
            request.provider, request.provider_model, request.user, request.task
        )
        answer = resolution_message(resolution)
        answer.tasks.extend(self.index.provider_model_tasks(request.provider, request.provider_model))
        return await self._in_view(answer, request.view, [request.provider])

    async def ListProviderConfigs(
        self, request: internal_pb.ListProviderConfigsRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.ListProviderConfigsResponse:
        check_count(request.provider_ids, MAX_PROVIDERS, "provider_ids")
        ids = list(request.provider_ids) or None
        providers, prices = await self.state.db.run(lambda s: queries.config_rows(s, ids))
        return internal_pb.ListProviderConfigsResponse(providers=provider_configs(providers, prices, request.secrets))

    async def ListServedModels(
        self, request: internal_pb.ListServedModelsRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.ListServedModelsResponse:
        if request.model:
            hub_id = await self.state.fresh(lambda: self._catalog_model(request.model))
            served = await self._with_create_times(self._served([hub_id], request.user))
            if served and hub_id != request.model:
                served[0].id, served[0].alias_of = request.model, hub_id  # asked by its alias: answered under it
            return internal_pb.ListServedModelsResponse(models=served)
        served = await self._with_create_times(self._served(sorted(self.index.mapped_models()), request.user))
        listed = sorted(served + self._alias_entries(served), key=lambda model: model.id)
        return internal_pb.ListServedModelsResponse(models=listed)

    def _served(self, model_ids: list[str], user: str) -> list[internal_pb.ServedModel]:
        """The models of these that serve this caller, with their candidates."""
        served = []
        for model_id in model_ids:
            candidates = self._candidates_for_all_tasks(model_id, user)
            if candidates:
                pipeline_tag = self.index.catalog[model_id].pipeline_tag
                served.append(
                    internal_pb.ServedModel(
                        id=model_id, pipeline_tag=pipeline_tag, candidates=[candidate_message(c) for c in candidates]
                    )
                )
        return served

    async def _with_create_times(self, served: list[internal_pb.ServedModel]) -> list[internal_pb.ServedModel]:
        """The models with the time each entered the catalog (read from the database: only listings need it)."""
        created = await self.state.db.run(lambda s: queries.catalog_create_times(s, [m.id for m in served]))
        for model in served:
            if model.id in created:
                model.create_time.FromDatetime(created[model.id])
        return served

    def _alias_entries(self, served: list[internal_pb.ServedModel]) -> list[internal_pb.ServedModel]:
        """An entry of its own for each alias of a served model: its target's, under the alias."""
        by_id = {model.id: model for model in served}
        entries = []
        for target, names in self.index.aliases_of(by_id).items():
            for name in names:
                entry = internal_pb.ServedModel()
                entry.CopyFrom(by_id[target])
                entry.id, entry.alias_of = name, target
                entries.append(entry)
        return entries

    def _candidates_for_all_tasks(self, model_id: str, user: str) -> list[Candidate]:
        """One candidate per provider, over every task the model is mapped for; a provider
        whose mapping fails its health probes is listed with status "error" and the reason."""
        by_provider: dict[str, Candidate] = {}
        resolutions = [self.index.resolve(model_id, user, task) for task in self.index.tasks_for(model_id)]
        for candidate in [c for r in resolutions for c in r.candidates] + [c for r in resolutions for c in r.failing]:
            by_provider.setdefault(candidate.provider, candidate)
        return list(by_provider.values())

    async def WatchChanges(
        self, request: internal_pb.WatchChangesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[internal_pb.WatchChangesResponse]:
        async for change in self.state.feed.watch(request.kinds):
            yield change.message()
