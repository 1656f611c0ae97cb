"""The operators' admin API (AdminService). Every call needs the admin token.

Provider secrets (api_key, billing_authorization) are write-only: no answer,
listing, log line or error message contains them.
"""

from __future__ import annotations

import logging

import grpc
import orjson
from google.protobuf.empty_pb2 import Empty
from sqlmodel import Session, select
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import admin_service_pb2_grpc as admin_grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.auth import require_admin
from services.common.errors import ApiError, already_exists, invalid_argument, not_found
from services.common.paging import fitted_page, key_after
from services.common.tasks import DEFAULT_REQUEST_ID_HEADER
from services.registry.domain import token_limits
from services.registry.domain.messages import membership_messages, provider_message
from services.registry.domain.prices import replace_prices
from services.registry.domain.state import RegistryState
from services.registry.domain.tokens import issue_token, revoke_token, update_token_limits
from services.registry.domain.validation import (
    MAX_MODELS_PER_BATCH,
    MAX_PATH,
    MAX_RANK,
    MAX_TASK,
    check_account_name,
    check_base_url,
    check_count,
    check_length,
    check_model_id,
    check_model_tags,
    check_name,
    check_range,
    check_request_id_header,
    check_role,
    check_secret,
    check_task_formats,
    check_tasks,
    check_url,
    page_size,
    shown,
)
from services.registry.storage import queries
from services.registry.storage.tables import (
    MembershipRow,
    ModelAliasRow,
    ModelRow,
    OrgRow,
    ProviderRow,
    TokenRow,
    UserRow,
)

log = logging.getLogger(__name__)
PROVIDERS_LISTING, ALIASES_LISTING = "providers", "modelAliases"  # their page tokens' listing names
# Provider fields an update may set (JSON names as in the REST body).
UPDATABLE = (
    "org",
    "base_url",
    "api_key",
    "tasks",
    "task_formats",
    "request_id_header",
    "billing_url",
    "billing_authorization",
    "default_rank",
)


def model_message(row: ModelRow) -> admin_pb.Model:
    return admin_pb.Model(
        id=row.id,
        pipeline_tag=row.pipeline_tag,
        tags=orjson.loads(row.tags),
        adapter_weights_path=row.adapter_weights_path,
    )


def model_alias_message(row: ModelAliasRow) -> admin_pb.ModelAlias:
    message = admin_pb.ModelAlias(name=row.name, target=row.target)
    message.create_time.FromDatetime(row.create_time)
    return message


def model_alias_not_found(name: str) -> ApiError:
    return not_found("MODEL_ALIAS_NOT_FOUND", f"model alias {shown(name)} does not exist")


def check_provider_fields(provider: admin_pb.Provider, fields: set[str]) -> None:
    """Validates the given fields of a provider (the message never echoes a secret)."""
    if "org" in fields:
        check_name(provider.org, "org")
    if "base_url" in fields:
        check_base_url(provider.base_url, "baseUrl")
    if "tasks" in fields:
        check_tasks(provider.tasks)
    if "task_formats" in fields:
        check_task_formats(provider.task_formats)
    if "default_rank" in fields:
        check_range(provider.default_rank, -MAX_RANK, MAX_RANK, "defaultRank")
    if "request_id_header" in fields and provider.request_id_header:
        check_request_id_header(provider.request_id_header, "requestIdHeader")
    if "billing_url" in fields and provider.billing_url:
        check_url(provider.billing_url, "billingUrl")
    check_secret(provider.api_key, "apiKey")
    check_secret(provider.billing_authorization, "billingAuthorization")


def check_model(model: admin_pb.Model, param: str) -> None:
    """A catalog entry: a hub model id, a short pipeline tag, tags and weights path within limits."""
    check_model_id(model.id, f"{param}.id")
    check_length(model.pipeline_tag, MAX_TASK, f"{param}.pipelineTag")
    check_model_tags(model.tags, f"{param}.tags")
    check_length(model.adapter_weights_path, MAX_PATH, f"{param}.adapterWeightsPath")


def apply_provider_fields(row: ProviderRow, provider: admin_pb.Provider, fields: set[str]) -> None:
    for name in fields:
        value = getattr(provider, name)
        if name == "tasks":
            value = orjson.dumps(list(value)).decode()
        elif name == "task_formats":
            value = orjson.dumps(dict(sorted(value.items()))).decode()
        elif name in ("base_url", "billing_url") and value:
            value = value.rstrip("/")
        elif name == "request_id_header":
            value = value or DEFAULT_REQUEST_ID_HEADER
        setattr(row, name, value)


class AdminServicer(admin_grpc.AdminServiceServicer):
    """Orgs, users, memberships, tokens, providers, prices and the model catalog."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self.index = state.index

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        """401 for a missing or unknown token (as on every route), 403 for a user's."""
        require_admin(self.state.caller(context) is None)

    async def _get(self, model: type, key: object, what: str):
        row = await self.state.db.run(lambda s: s.get(model, key))
        if row is None:
            raise not_found(f"{model.__tablename__.rstrip('s').upper()}_NOT_FOUND", f"{what} does not exist")
        return row

    # orgs and users

    async def CreateOrg(self, request: admin_pb.CreateOrgRequest, context: grpc.aio.ServicerContext) -> admin_pb.Org:
        self._admin(context)
        row = OrgRow(name=check_account_name(request.org.name))
        # nothing of an org is in the index, but its name is no longer a user's
        await self.state.write(lambda s: queries.create_account(s, row), internal_pb.CHANGE_KIND_IDENTITY, row.name)
        return await self.GetOrg(admin_pb.GetOrgRequest(org=row.name), context)

    async def GetOrg(self, request: admin_pb.GetOrgRequest, context: grpc.aio.ServicerContext) -> admin_pb.Org:
        self._admin(context)
        org = await self._get(OrgRow, request.org, f"org {shown(request.org)}")
        members = await self.state.db.run(
            lambda s: list(
                s.exec(select(MembershipRow).where(MembershipRow.org == org.name).order_by(MembershipRow.user))
            )
        )
        members.sort(key=lambda m: m.user)
        answer = admin_pb.Org(name=org.name, members=membership_messages(members))
        answer.create_time.FromDatetime(org.create_time)
        return answer

    async def CreateUser(self, request: admin_pb.CreateUserRequest, context: grpc.aio.ServicerContext) -> admin_pb.User:
        self._admin(context)
        row = UserRow(name=check_account_name(request.user.name))
        await self.state.write(lambda s: queries.create_account(s, row), internal_pb.CHANGE_KIND_IDENTITY, row.name)
        return await self.GetUser(admin_pb.GetUserRequest(user=row.name), context)

    async def GetUser(self, request: admin_pb.GetUserRequest, context: grpc.aio.ServicerContext) -> admin_pb.User:
        self._admin(context)
        user = await self._get(UserRow, request.user, f"user {shown(request.user)}")

        def details(session: Session) -> tuple[list[MembershipRow], list[str]]:
            memberships = session.exec(select(MembershipRow).where(MembershipRow.user == user.name))
            tokens = session.exec(select(TokenRow.name).where(TokenRow.user == user.name).order_by(TokenRow.name))
            return sorted(memberships, key=lambda m: m.org), list(tokens)

        memberships, token_names = await self.state.db.run(details)
        answer = admin_pb.User(name=user.name, memberships=membership_messages(memberships), token_names=token_names)
        answer.create_time.FromDatetime(user.create_time)
        return answer

    async def UpdateMembership(
        self, request: admin_pb.UpdateMembershipRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.Membership:
        self._admin(context)
        role = check_role(request.role)
        await self._get(OrgRow, request.org, f"org {shown(request.org)}")
        await self._get(UserRow, request.user, f"user {shown(request.user)}")
        row = MembershipRow(org=request.org, user=request.user, role=role)
        await self.state.write(lambda s: s.merge(row), internal_pb.CHANGE_KIND_IDENTITY, request.user)
        return admin_pb.Membership(org=request.org, user=request.user, role=role)

    async def DeleteMembership(
        self, request: admin_pb.DeleteMembershipRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        self._admin(context)
        where = (MembershipRow.org == request.org, MembershipRow.user == request.user)
        missing = not_found(
            "MEMBERSHIP_NOT_FOUND", f"user {shown(request.user)} is not a member of org {shown(request.org)}"
        )
        await self.state.write(
            lambda s: queries.delete_existing(s, MembershipRow, where, missing),
            internal_pb.CHANGE_KIND_IDENTITY,
            request.user,
        )
        return Empty()

    # tokens

    async def CreateToken(
        self, request: admin_pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.CreateTokenResponse:
        self._admin(context)
        check_name(request.name, "name")
        await self._get(UserRow, request.user, f"user {shown(request.user)}")
        limits = request.limits if request.HasField("limits") else None
        row, token = await issue_token(self.state, request.user, request.name, limits)
        return admin_pb.CreateTokenResponse(name=row.name, token=token)

    async def UpdateToken(
        self, request: admin_pb.UpdateTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.UpdateTokenResponse:
        self._admin(context)
        row = await update_token_limits(self.state, request.user, request.name, request.limits)
        return admin_pb.UpdateTokenResponse(name=row.name, limits=token_limits.loaded(row.limits))

    async def DeleteToken(self, request: admin_pb.DeleteTokenRequest, context: grpc.aio.ServicerContext) -> Empty:
        self._admin(context)
        await revoke_token(self.state, request.user, request.name)
        return Empty()

    # providers

    async def CreateProvider(
        self, request: admin_pb.CreateProviderRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.Provider:
        self._admin(context)
        provider = request.provider
        check_name(provider.id, "id")
        check_provider_fields(provider, set(UPDATABLE))
        await self._require_org(provider.org)
        row = ProviderRow(id=provider.id, org=provider.org, base_url=provider.base_url)
        apply_provider_fields(row, provider, set(UPDATABLE))
        conflict = f"provider {shown(row.id)} already exists"
        await self.state.write(lambda s: queries.insert(s, row), internal_pb.CHANGE_KIND_PROVIDER, row.id, conflict)
        log.info("provider created", extra={"provider": row.id, "org": row.org})
        return provider_message(row)

    async def _require_org(self, org: str) -> None:
        exists = await self.state.db.run(lambda s: s.get(OrgRow, org) is not None)
        if not exists:
            raise invalid_argument("INVALID_REQUEST", f"org {shown(org)} does not exist; create it first", "org")

    async def GetProvider(
        self, request: admin_pb.GetProviderRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.Provider:
        self._admin(context)
        return provider_message(await self._get(ProviderRow, request.provider, f"provider {shown(request.provider)}"))

    async def ListProviders(
        self, request: admin_pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.ListProvidersResponse:
        self._admin(context)
        size = page_size(request.page_size)
        after = key_after(PROVIDERS_LISTING, request.page_token)

        rows = await self.state.db.run(lambda s: queries.page_after(s, ProviderRow.id, after, size))
        keys, messages = [r.id for r in rows[:size]], (provider_message(r) for r in rows[:size])
        page, next_token = fitted_page(PROVIDERS_LISTING, keys, messages, len(rows) > size)
        return admin_pb.ListProvidersResponse(providers=page, next_page_token=next_token)

    async def UpdateProvider(
        self, request: admin_pb.UpdateProviderRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.Provider:
        self._admin(context)
        provider = request.provider
        if provider.id and provider.id != request.provider_id:
            raise invalid_argument("INVALID_REQUEST", "id cannot be changed", "id")
        fields = self._fields_to_update(request)
        check_provider_fields(provider, fields)
        if "org" in fields:
            await self._require_org(provider.org)
        row = await self._get(ProviderRow, request.provider_id, f"provider {shown(request.provider_id)}")
        apply_provider_fields(row, provider, fields)
        await self.state.write(lambda s: s.merge(row), internal_pb.CHANGE_KIND_PROVIDER, row.id)
        log.info("provider updated", extra={"provider": row.id, "fields": sorted(fields)})
        return provider_message(row)

    @staticmethod
    def _fields_to_update(request: admin_pb.UpdateProviderRequest) -> set[str]:
        """The update mask's fields, or every field with a non-default value."""
        if request.update_mask.paths:
            fields = set(request.update_mask.paths)
            unknown = sorted(fields - set(UPDATABLE))
            if unknown:
                raise invalid_argument(
                    "INVALID_REQUEST", f"update_mask: field {shown(unknown[0])} cannot be updated", "update_mask"
                )
            return fields
        return {name for name in UPDATABLE if getattr(request.provider, name)}

    async def DeleteProvider(self, request: admin_pb.DeleteProviderRequest, context: grpc.aio.ServicerContext) -> Empty:
        self._admin(context)

        def delete(session: Session) -> None:
            if not queries.delete_provider(session, request.provider):
                raise not_found("PROVIDER_NOT_FOUND", f"provider {shown(request.provider)} does not exist")

        await self.state.write(delete, internal_pb.CHANGE_KIND_PROVIDER, request.provider)  # with its mappings
        return Empty()

    async def UpdateProviderPrices(
        self, request: admin_pb.UpdateProviderPricesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.ProviderPrices:
        self._admin(context)
        await self._get(ProviderRow, request.provider, f"provider {shown(request.provider)}")
        return await replace_prices(self.state, request)

    # catalog

    async def BatchUpsertModels(
        self, request: admin_pb.BatchUpsertModelsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.BatchUpsertModelsResponse:
        self._admin(context)
        check_count(request.models, MAX_MODELS_PER_BATCH, "models")
        rows: dict[str, dict] = {}
        for position, model in enumerate(request.models):
            check_model(model, f"models[{position}]")
            rows[model.id] = {
                "id": model.id,
                "pipeline_tag": model.pipeline_tag,
                "tags": orjson.dumps(list(model.tags)).decode(),
                "adapter_weights_path": model.adapter_weights_path,
            }
        if rows:
            await self.state.write(
                lambda s: queries.import_models(s, list(rows.values())), internal_pb.CHANGE_KIND_MODEL, "\n".join(rows)
            )
        return admin_pb.BatchUpsertModelsResponse(upserted_count=len(rows))

    async def GetCatalogSummary(
        self, request: admin_pb.GetCatalogSummaryRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.CatalogSummary:
        self._admin(context)
        last = await self.state.db.run(queries.last_catalog_import)
        summary = admin_pb.CatalogSummary(model_count=len(self.index.catalog), alias_count=len(self.index.aliases))
        if last is not None:
            summary.last_import_time.FromDatetime(last.create_time)
            summary.last_import_model_count = last.model_count
        return summary

    async def GetModel(self, request: admin_pb.GetModelRequest, context: grpc.aio.ServicerContext) -> admin_pb.Model:
        self._admin(context)
        return model_message(await self._get(ModelRow, request.id, f"model {shown(request.id)}"))

    # model aliases

    async def CreateModelAlias(
        self, request: admin_pb.CreateModelAliasRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.ModelAlias:
        self._admin(context)
        alias = request.model_alias
        check_name(alias.name, "name")
        check_model_id(alias.target, "target")
        await self.state.fresh(lambda: self._check_alias(alias))
        row = ModelAliasRow(name=alias.name, target=alias.target)
        conflict = f"model alias {shown(alias.name)} already exists"
        await self.state.write(
            lambda s: queries.insert(s, row), internal_pb.CHANGE_KIND_ALIAS, row.name, conflict, "MODEL_ALIAS_EXISTS"
        )
        log.info("model alias created", extra={"alias": row.name, "target": row.target})
        return model_alias_message(row)

    def _check_alias(self, alias: admin_pb.ModelAlias) -> None:
        """The target is a catalog model (404 otherwise), never another alias (a chain would hide
        what is served); the name is no catalog model's (409)."""
        if alias.target not in self.index.catalog:
            if alias.target in self.index.aliases:
                message = f"target {shown(alias.target)} is a model alias: name the hub model it stands for"
                raise invalid_argument("INVALID_ALIAS_TARGET", message, "target")
            raise not_found("MODEL_NOT_FOUND", f"model {shown(alias.target)} does not exist", "target")
        if alias.name in self.index.catalog:
            message = f"name {shown(alias.name)} is a catalog model id: an alias cannot shadow it"
            raise already_exists("MODEL_ID_TAKEN", message, "name")

    async def GetModelAlias(
        self, request: admin_pb.GetModelAliasRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.ModelAlias:
        self._admin(context)
        row = await self.state.db.run(lambda s: s.get(ModelAliasRow, request.name))
        if row is None:
            raise model_alias_not_found(request.name)
        return model_alias_message(row)

    async def ListModelAliases(
        self, request: admin_pb.ListModelAliasesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.ListModelAliasesResponse:
        self._admin(context)
        size = page_size(request.page_size)
        after = key_after(ALIASES_LISTING, request.page_token)

        rows = await self.state.db.run(lambda s: queries.page_after(s, ModelAliasRow.name, after, size))
        keys, messages = [r.name for r in rows[:size]], (model_alias_message(r) for r in rows[:size])
        page, next_token = fitted_page(ALIASES_LISTING, keys, messages, len(rows) > size)
        return admin_pb.ListModelAliasesResponse(model_aliases=page, next_page_token=next_token)

    async def DeleteModelAlias(
        self, request: admin_pb.DeleteModelAliasRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        self._admin(context)
        where, missing = (ModelAliasRow.name == request.name,), model_alias_not_found(request.name)
        await self.state.write(
            lambda s: queries.delete_existing(s, ModelAliasRow, where, missing),
            internal_pb.CHANGE_KIND_ALIAS,
            request.name,
        )
        log.info("model alias deleted", extra={"alias": request.name})
        return Empty()
