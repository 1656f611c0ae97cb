"""The partners API (RegistryService), exactly as the hub's partner documentation says."""

from __future__ import annotations

import secrets
from datetime import datetime
from itertools import islice

import grpc
import orjson
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.empty_pb2 import Empty
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import registry_service_pb2 as registry_pb
from switchboard.registry.v1 import registry_service_pb2_grpc as registry_grpc

from services.common.accounts import WRITE_ROLES
from services.common.auth import metadata_value, parse_bearer
from services.common.errors import already_exists, invalid_argument, not_found, permission_denied
from services.common.paging import fitted_page, number_after, of_parent
from services.registry.domain import capabilities
from services.registry.domain.conformance import Checker, report_of_json
from services.registry.domain.hub_models import hub_model
from services.registry.domain.prices import replace_prices
from services.registry.domain.state import RegistryState
from services.registry.domain.validation import (
    MAX_LISTING_BYTES,
    MAX_PROVIDERS,
    check_count,
    check_mapped_provider_model,
    check_model_fits_task,
    check_model_id,
    check_served_task,
    check_status,
    check_tags,
    check_unique,
    page_size,
    shown,
)
from services.registry.storage import queries
from services.registry.storage.index import (
    ERROR,
    MODEL,
    STAGING,
    TAG_FILTER,
    IndexedProvider,
    Mapping,
    TokenTerms,
)
from services.registry.storage.tables import MappingRow, UserRow, utcnow

MAPPINGS_LISTING = "modelMappings"  # ListModelMappings' page tokens


def mapping_message(mapping: Mapping) -> registry_pb.ModelMapping:
    message = registry_pb.ModelMapping(
        id=mapping.id,
        provider=mapping.provider,
        type=mapping.type,
        task=mapping.task,
        hf_model=mapping.hf_model,
        provider_model=mapping.provider_model,
        status=mapping.status,
        tags=mapping.tags,
        adapter_type=mapping.adapter_type,
        status_reason=mapping.status_reason,
    )
    message.create_time.FromDatetime(mapping.create_time)
    if mapping.conformance is not None:
        summary = mapping.conformance._asdict()
        message.conformance.CopyFrom(registry_pb.ConformanceSummary(**{**summary, "check_time": None}))
        message.conformance.check_time.FromDatetime(summary["check_time"])
    capabilities.fill(message, mapping.capabilities)
    return message


def table_entry(mapping: Mapping, details: bool = True) -> tuple[str, dict]:
    """The documented listing's key and value for one mapping, with its details when asked: the
    probes' reason for an error and the latest conformance check in brief when there are any."""
    if mapping.type == MODEL:
        key, value = (
            mapping.hf_model,
            {"_id": mapping.id, "providerId": mapping.provider_model, "status": mapping.status},
        )
    else:
        key, value = (
            f"tag-filter={mapping.tags_key}",
            {
                "_id": mapping.id,
                "status": mapping.status,
                "providerId": mapping.provider_model,
                "adapterType": mapping.adapter_type,
                "tags": list(mapping.tags),
            },
        )
    if details and mapping.status_reason:
        value["statusReason"] = mapping.status_reason
    if details and mapping.conformance is not None:
        check_time = json_time(mapping.conformance.check_time)
        value["conformance"] = {"passed": mapping.conformance.passed, "checkTime": check_time}
    return key, value


def details_shown(mappings: list[Mapping], listed_bytes: int) -> list[bool]:
    """Whether each of a listing's entries shows its details. A mapping is admitted while its
    provider's listing (`listed_bytes`, details included) stays within MAX_LISTING_BYTES, but its
    details come later (a probe's reason, a check's summary), so they can take a full listing past
    it: then entries show them, oldest first, only while the listing stays within it."""
    if listed_bytes <= MAX_LISTING_BYTES:
        return [True] * len(mappings)
    room = MAX_LISTING_BYTES - sum(m.entry_bytes(details=False) for m in mappings)
    shown = []
    for mapping in mappings:
        extra = mapping.listing_bytes - mapping.entry_bytes(details=False)
        shown.append(extra <= room)
        room -= extra if shown[-1] else 0
    return shown


def json_time(moment: datetime) -> str:
    """A time as proto3 JSON writes a Timestamp (0, 3, 6 or 9 fraction digits), so that the
    table's times read exactly as the typed answers' do."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp.ToJsonString()


def status_filter(status: str) -> str:
    """A listing's status filter: any status a mapping can have ("error" too), or none."""
    return status if status == ERROR else check_status(status) if status else ""


def check_writing_token(terms: TokenTerms, provider: IndexedProvider) -> None:
    """403 for a token that may not change a provider's mappings or prices, whatever its user's role:
    one with a rate, token, budget or model limit (a key handed out with limits, a contractor's
    say, manages nothing: services/common/accounts.py require_managing_token; an expiry alone is
    no such limit), and an org token for a provider of another org (a key for one org's CI acts
    for that org only)."""
    if terms.limited:
        raise permission_denied(
            "LIMITED_TOKEN_CANNOT_MANAGE",
            f"a token with limits cannot change the mappings or prices of provider {shown(provider.id)}: "
            "use one without limits",
        )
    if terms.account and terms.account != provider.org:
        raise permission_denied(
            "ORG_TOKEN_OTHER_ORG",
            f"a token for org {shown(terms.account)} cannot change the mappings or prices of provider "
            f"{shown(provider.id)} of org {shown(provider.org)}: use a token for org {shown(provider.org)} "
            "or a personal token",
        )


class RegistryServicer(registry_grpc.RegistryServiceServicer):
    """Partners register which hub models they serve; anyone may read the table."""

    def __init__(self, state: RegistryState, checker: Checker) -> None:
        self.state = state
        self.index = state.index
        self.checker = checker

    def _authorize_partner(
        self, context: grpc.aio.ServicerContext, provider_id: str
    ) -> tuple[IndexedProvider, TokenTerms]:
        """401 without a valid token, 404 for an unknown provider, 403 unless the caller has the write
        or admin role in its org; the provider and what the index keeps of the caller's token."""
        user, terms = self.state.caller_terms(context)
        provider = self.state.provider(provider_id)
        if user is not None and self.index.role(user, provider.org) not in WRITE_ROLES:
            raise permission_denied(
                "FORBIDDEN",
                f"changing the mappings of provider {shown(provider_id)} needs the write or admin role "
                f"in org {shown(provider.org)}",
            )
        return provider, terms

    def _authorize_write(self, context: grpc.aio.ServicerContext, provider_id: str) -> IndexedProvider:
        """As _authorize_partner, and 403 for a token that may not write (check_writing_token)."""
        provider, terms = self._authorize_partner(context, provider_id)
        check_writing_token(terms, provider)
        return provider

    def _writable_mapping(
        self,
        context: grpc.aio.ServicerContext,
        request: registry_pb.DeleteModelMappingRequest
        | registry_pb.UpdateModelMappingStatusRequest
        | registry_pb.CheckModelMappingRequest
        | registry_pb.UpdateModelMappingRequest,
    ) -> Mapping:
        self._authorize_write(context, request.provider)
        return self._mapping(request.provider, request.mapping_id)

    def _partner_mapping(
        self, context: grpc.aio.ServicerContext, request: registry_pb.GetConformanceReportRequest
    ) -> Mapping:
        """A mapping for a read of the provider's writers (any of their tokens may read it)."""
        self._authorize_partner(context, request.provider)
        return self._mapping(request.provider, request.mapping_id)

    def _mapping(self, provider_id: str, mapping_id: str) -> Mapping:
        mapping = self.index.provider_mappings.get(provider_id, {}).get(mapping_id)
        if mapping is None:
            message = f"provider {shown(provider_id)} has no mapping {shown(mapping_id)}"
            raise not_found("MAPPING_NOT_FOUND", message)
        return mapping

    async def CreateModelMapping(
        self, request: registry_pb.CreateModelMappingRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb.ModelMapping:
        mapping, message = await self.state.fresh(lambda: self._mapping_to_create(context, request))

        def create(session):
            mapping.seq = queries.next_mapping_seq(session)
            queries.insert(session, queries.mapping_row(mapping))

        await self.state.write(create, internal_pb.CHANGE_KIND_MAPPING, mapping.provider, message, "MAPPING_EXISTS")
        return mapping_message(mapping)

    def _mapping_to_create(
        self, context: grpc.aio.ServicerContext, request: registry_pb.CreateModelMappingRequest
    ) -> tuple[Mapping, str]:
        """The checked new mapping, and the message should the database find it taken."""
        self._authorize_write(context, request.provider)
        mapping = self._new_mapping(request)
        self._check_listing_room(mapping)
        conflict = self.index.conflicting_mapping(mapping.unique_key)
        what = f"model {shown(mapping.hf_model)}" if mapping.type == MODEL else f"tags {shown(mapping.tags_key)}"
        message = f"provider {shown(request.provider)} already maps {what} for task {mapping.task!r}"
        if conflict:
            raise already_exists("MAPPING_EXISTS", f"{message} (mapping {conflict})")
        return mapping, message

    def _check_listing_room(self, mapping: Mapping) -> None:
        """Refuses a mapping that would make the provider's listing too large to answer."""
        size = self.index.listing_bytes[mapping.provider] + mapping.listing_bytes
        if size > MAX_LISTING_BYTES:
            raise invalid_argument(
                "MAPPING_TABLE_FULL",
                f"provider {shown(mapping.provider)} has no room for this mapping: its listing would pass "
                f"{MAX_LISTING_BYTES} bytes; delete mappings it no longer needs",
            )

    def _new_mapping(self, request: registry_pb.CreateModelMappingRequest) -> Mapping:
        """Validates the body into a mapping (seq assigned on insert)."""
        check_served_task(request.task)
        check_mapped_provider_model(request.provider_model)
        status = check_status(request.status) if request.status else STAGING
        kind = request.type or MODEL
        if kind == MODEL:
            self._check_model_mapping(request)
            tags, adapter_type = (), ""
        elif kind == TAG_FILTER:
            if request.hf_model:
                raise invalid_argument("INVALID_REQUEST", "hfModel is not allowed in a tag-filter mapping", "hfModel")
            tags = check_tags(list(request.tags))
            if request.adapter_type != "lora":
                raise invalid_argument(
                    "INVALID_REQUEST",
                    f'adapterType must be "lora" (the only supported type), not {shown(request.adapter_type)}',
                    "adapterType",
                )
            adapter_type = request.adapter_type
        else:
            raise invalid_argument(
                "INVALID_REQUEST", f'type must be "tag-filter" or absent, not {shown(request.type)}', "type"
            )
        return Mapping(
            id=secrets.token_hex(12),
            seq=0,
            provider=request.provider,
            type=kind,
            task=request.task,
            hf_model=request.hf_model if kind == MODEL else "",
            tags=tags,
            provider_model=request.provider_model,
            status=status,
            adapter_type=adapter_type,
            create_time=utcnow(),
            capabilities=capabilities.checked(capabilities.declared(request)),
        )

    def _check_model_mapping(self, request: registry_pb.CreateModelMappingRequest) -> None:
        check_model_id(request.hf_model, "hfModel")
        if request.tags:
            raise invalid_argument(
                "INVALID_REQUEST", 'tags are only allowed in a tag-filter mapping ("type": "tag-filter")', "tags"
            )
        if request.adapter_type:
            raise invalid_argument(
                "INVALID_REQUEST", "adapterType is only allowed in a tag-filter mapping", "adapterType"
            )
        model = self.index.catalog.get(request.hf_model)
        if model is None:
            raise invalid_argument(
                "INVALID_REQUEST", f"hfModel {shown(request.hf_model)} is not in the model catalog", "hfModel"
            )
        check_model_fits_task(request.hf_model, model.pipeline_tag, model.tags, request.task)

    async def DeleteModelMapping(
        self, request: registry_pb.DeleteModelMappingRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        mapping = await self.state.fresh(lambda: self._writable_mapping(context, request))
        await self.state.write(
            lambda s: queries.delete_rows(s, MappingRow, MappingRow.id == mapping.id),
            internal_pb.CHANGE_KIND_MAPPING,
            mapping.provider,
        )
        return Empty()

    async def UpdateModelMapping(
        self, request: registry_pb.UpdateModelMappingRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb.ModelMapping:
        mapping = await self.state.fresh(lambda: self._writable_mapping(context, request))
        fields = capabilities.fields_to_update(request.update_mask.paths, request.model_mapping)
        values = capabilities.declared(request.model_mapping, fields)
        changed = capabilities.checked(values, mapping.capabilities)
        if changed != mapping.capabilities:  # nothing new: no write, no change notice
            await capabilities.store_capabilities(self.state, mapping, changed)
        return mapping_message(self._mapping(request.provider, request.mapping_id))

    async def UpdateModelMappingStatus(
        self, request: registry_pb.UpdateModelMappingStatusRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb.ModelMapping:
        mapping = await self.state.fresh(lambda: self._writable_mapping(context, request))
        status = check_status(request.status)
        check_served_task(mapping.task)  # stored before unserved tasks were refused: it can only be deleted
        await self.state.write(
            lambda s: queries.set_mapping_status(s, mapping.id, status),
            internal_pb.CHANGE_KIND_MAPPING,
            mapping.provider,
        )
        return mapping_message(self._mapping(request.provider, request.mapping_id))

    async def CheckModelMapping(
        self, request: registry_pb.CheckModelMappingRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb.ConformanceReport:
        mapping = await self.state.fresh(lambda: self._writable_mapping(context, request))
        return await self.checker.check(self.state, mapping, context.time_remaining())

    async def GetConformanceReport(
        self, request: registry_pb.GetConformanceReportRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb.ConformanceReport:
        mapping = await self.state.fresh(lambda: self._partner_mapping(context, request))
        stored = await self.state.db.run(lambda session: queries.report_of(session, mapping.id))
        if stored is None:
            raise not_found(
                "REPORT_NOT_FOUND",
                f"mapping {shown(mapping.id)} has not been checked yet: POST "
                f"/api/partners/{shown(mapping.provider)}/models/{shown(mapping.id)}:check",
            )
        return report_of_json(stored)

    async def GetProviderMappingTable(
        self, request: registry_pb.GetProviderMappingTableRequest, context: grpc.aio.ServicerContext
    ) -> struct_pb2.Struct:
        await self.state.fresh(lambda: self.state.provider(request.provider))
        status = status_filter(request.status)
        provider_mappings = self.index.provider_mappings[request.provider].values()
        mappings = [m for m in provider_mappings if not status or m.status == status]
        shown = details_shown(mappings, self.index.listing_bytes[request.provider])
        table: dict[str, dict] = {}
        for mapping, details in zip(mappings, shown, strict=True):
            key, value = table_entry(mapping, details)
            table.setdefault(mapping.task, {})[key] = value
        answer = struct_pb2.Struct()
        answer.update(table)
        return answer

    async def ListModelMappings(
        self, request: registry_pb.ListModelMappingsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb.ListModelMappingsResponse:
        await self.state.fresh(lambda: self.state.provider(request.provider))
        status = status_filter(request.status)
        size = page_size(request.page_size)
        listing = of_parent(MAPPINGS_LISTING, request.provider)
        after = number_after(listing, request.page_token)  # a mapping's seq
        mappings = self.index.provider_mappings[request.provider].values()  # by seq
        chosen = list(islice((m for m in mappings if m.seq > after and (not status or m.status == status)), size + 1))
        keys = [str(m.seq) for m in chosen[:size]]
        messages = (mapping_message(m) for m in chosen[:size])  # built only while the page has room
        page, next_token = fitted_page(listing, keys, messages, len(chosen) > size)
        return registry_pb.ListModelMappingsResponse(model_mappings=page, next_page_token=next_token)

    async def UpdateProviderPrices(
        self, request: admin_pb.UpdateProviderPricesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.ProviderPrices:
        await self.state.fresh(lambda: self._authorize_write(context, request.provider))
        return await replace_prices(self.state, request)

    async def GetHubModel(
        self, request: registry_pb.GetHubModelRequest, context: grpc.aio.ServicerContext
    ) -> struct_pb2.Struct:
        """Public; a caller's token (when sent) shows the staging mappings of the caller's orgs."""

        def lookup() -> dict:
            token = parse_bearer(metadata_value(context, "authorization"), required=False)
            user = self.state.acting_user(token) if token else None
            return hub_model(self.index, request.model, user, list(request.expand))

        answer = struct_pb2.Struct()
        answer.update(await self.state.fresh(lookup))
        return answer

    async def UpdateProviderPreferences(
        self, request: registry_pb.UpdateProviderPreferencesRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb.ProviderPreferences:
        user, providers = await self.state.fresh(lambda: self._preferences(context, request))

        def save(session):
            row = session.get(UserRow, user)
            row.preferred_providers = orjson.dumps(providers).decode()
            queries.insert(session, row)

        await self.state.write(save, internal_pb.CHANGE_KIND_IDENTITY, user)
        return registry_pb.ProviderPreferences(user=user, providers=providers)

    def _preferences(
        self, context: grpc.aio.ServicerContext, request: registry_pb.UpdateProviderPreferencesRequest
    ) -> tuple[str, list[str]]:
        """The calling user and their checked list of known providers."""
        user = self.state.caller(context)
        if user is None:
            raise invalid_argument(
                "INVALID_REQUEST", "the admin token belongs to no user; use a user's token", "authorization"
            )
        providers = list(request.providers)
        check_count(providers, MAX_PROVIDERS, "providers")
        unknown = [p for p in providers if p not in self.index.providers]
        if unknown:
            raise invalid_argument("INVALID_REQUEST", f"providers: unknown provider {shown(unknown[0])}", "providers")
        check_unique(providers, "providers", "provider")
        return user, providers
