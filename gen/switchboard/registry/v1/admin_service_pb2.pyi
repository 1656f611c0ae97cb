import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Org(_message.Message):
    __slots__ = ("name", "members", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    members: _containers.RepeatedCompositeFieldContainer[Membership]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Membership, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("name", "memberships", "token_names", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIPS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_NAMES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    memberships: _containers.RepeatedCompositeFieldContainer[Membership]
    token_names: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., memberships: _Optional[_Iterable[_Union[Membership, _Mapping]]] = ..., token_names: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Membership(_message.Message):
    __slots__ = ("org", "user", "role")
    ORG_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    org: str
    user: str
    role: str
    def __init__(self, org: _Optional[str] = ..., user: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class CreateOrgRequest(_message.Message):
    __slots__ = ("org",)
    ORG_FIELD_NUMBER: _ClassVar[int]
    org: Org
    def __init__(self, org: _Optional[_Union[Org, _Mapping]] = ...) -> None: ...

class GetOrgRequest(_message.Message):
    __slots__ = ("org",)
    ORG_FIELD_NUMBER: _ClassVar[int]
    org: str
    def __init__(self, org: _Optional[str] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class UpdateMembershipRequest(_message.Message):
    __slots__ = ("org", "user", "role")
    ORG_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    org: str
    user: str
    role: str
    def __init__(self, org: _Optional[str] = ..., user: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class DeleteMembershipRequest(_message.Message):
    __slots__ = ("org", "user")
    ORG_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    org: str
    user: str
    def __init__(self, org: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("user", "name", "limits")
    USER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    user: str
    name: str
    limits: ApiTokenLimits
    def __init__(self, user: _Optional[str] = ..., name: _Optional[str] = ..., limits: _Optional[_Union[ApiTokenLimits, _Mapping]] = ...) -> None: ...

class ApiTokenLimits(_message.Message):
    __slots__ = ("requests_per_minute", "tokens_per_minute", "budget_nano_usd", "budget_period", "expire_time", "allowed_models")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PERIOD_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    tokens_per_minute: int
    budget_nano_usd: int
    budget_period: str
    expire_time: _timestamp_pb2.Timestamp
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., budget_nano_usd: _Optional[int] = ..., budget_period: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allowed_models: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("name", "token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    token: str
    def __init__(self, name: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class UpdateTokenRequest(_message.Message):
    __slots__ = ("user", "name", "limits")
    USER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    user: str
    name: str
    limits: ApiTokenLimits
    def __init__(self, user: _Optional[str] = ..., name: _Optional[str] = ..., limits: _Optional[_Union[ApiTokenLimits, _Mapping]] = ...) -> None: ...

class UpdateTokenResponse(_message.Message):
    __slots__ = ("name", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: ApiTokenLimits
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Union[ApiTokenLimits, _Mapping]] = ...) -> None: ...

class DeleteTokenRequest(_message.Message):
    __slots__ = ("user", "name")
    USER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    user: str
    name: str
    def __init__(self, user: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("id", "org", "base_url", "api_key", "tasks", "request_id_header", "billing_url", "billing_authorization", "has_api_key", "has_billing_authorization", "default_rank", "create_time", "task_formats")
    class TaskFormatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_HEADER_FIELD_NUMBER: _ClassVar[int]
    BILLING_URL_FIELD_NUMBER: _ClassVar[int]
    BILLING_AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    HAS_API_KEY_FIELD_NUMBER: _ClassVar[int]
    HAS_BILLING_AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RANK_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TASK_FORMATS_FIELD_NUMBER: _ClassVar[int]
    id: str
    org: str
    base_url: str
    api_key: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    request_id_header: str
    billing_url: str
    billing_authorization: str
    has_api_key: bool
    has_billing_authorization: bool
    default_rank: int
    create_time: _timestamp_pb2.Timestamp
    task_formats: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., org: _Optional[str] = ..., base_url: _Optional[str] = ..., api_key: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., request_id_header: _Optional[str] = ..., billing_url: _Optional[str] = ..., billing_authorization: _Optional[str] = ..., has_api_key: _Optional[bool] = ..., has_billing_authorization: _Optional[bool] = ..., default_rank: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_formats: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateProviderRequest(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: Provider
    def __init__(self, provider: _Optional[_Union[Provider, _Mapping]] = ...) -> None: ...

class GetProviderRequest(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    def __init__(self, provider: _Optional[str] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers", "next_page_token")
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    next_page_token: str
    def __init__(self, providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateProviderRequest(_message.Message):
    __slots__ = ("provider_id", "provider", "update_mask")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    provider: Provider
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, provider_id: _Optional[str] = ..., provider: _Optional[_Union[Provider, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteProviderRequest(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    def __init__(self, provider: _Optional[str] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("provider_model", "input_token_nano_usd", "output_token_nano_usd", "request_nano_usd", "image_nano_usd", "unit_nano_usd")
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    UNIT_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    provider_model: str
    input_token_nano_usd: int
    output_token_nano_usd: int
    request_nano_usd: int
    image_nano_usd: int
    unit_nano_usd: int
    def __init__(self, provider_model: _Optional[str] = ..., input_token_nano_usd: _Optional[int] = ..., output_token_nano_usd: _Optional[int] = ..., request_nano_usd: _Optional[int] = ..., image_nano_usd: _Optional[int] = ..., unit_nano_usd: _Optional[int] = ...) -> None: ...

class UpdateProviderPricesRequest(_message.Message):
    __slots__ = ("provider", "prices")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    prices: _containers.RepeatedCompositeFieldContainer[Price]
    def __init__(self, provider: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[Price, _Mapping]]] = ...) -> None: ...

class ProviderPrices(_message.Message):
    __slots__ = ("provider", "prices")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    prices: _containers.RepeatedCompositeFieldContainer[Price]
    def __init__(self, provider: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[Price, _Mapping]]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "pipeline_tag", "tags", "adapter_weights_path")
    ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_TAG_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_WEIGHTS_PATH_FIELD_NUMBER: _ClassVar[int]
    id: str
    pipeline_tag: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    adapter_weights_path: str
    def __init__(self, id: _Optional[str] = ..., pipeline_tag: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., adapter_weights_path: _Optional[str] = ...) -> None: ...

class BatchUpsertModelsRequest(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class BatchUpsertModelsResponse(_message.Message):
    __slots__ = ("upserted_count",)
    UPSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    upserted_count: int
    def __init__(self, upserted_count: _Optional[int] = ...) -> None: ...

class GetCatalogSummaryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CatalogSummary(_message.Message):
    __slots__ = ("model_count", "alias_count", "last_import_time", "last_import_model_count")
    MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    ALIAS_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_IMPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_IMPORT_MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    model_count: int
    alias_count: int
    last_import_time: _timestamp_pb2.Timestamp
    last_import_model_count: int
    def __init__(self, model_count: _Optional[int] = ..., alias_count: _Optional[int] = ..., last_import_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_import_model_count: _Optional[int] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ModelAlias(_message.Message):
    __slots__ = ("name", "target", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., target: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateModelAliasRequest(_message.Message):
    __slots__ = ("model_alias",)
    MODEL_ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_alias: ModelAlias
    def __init__(self, model_alias: _Optional[_Union[ModelAlias, _Mapping]] = ...) -> None: ...

class GetModelAliasRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelAliasesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelAliasesResponse(_message.Message):
    __slots__ = ("model_aliases", "next_page_token")
    MODEL_ALIASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_aliases: _containers.RepeatedCompositeFieldContainer[ModelAlias]
    next_page_token: str
    def __init__(self, model_aliases: _Optional[_Iterable[_Union[ModelAlias, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelAliasRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
