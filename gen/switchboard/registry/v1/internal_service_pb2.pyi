import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from switchboard.registry.v1 import admin_service_pb2 as _admin_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResolutionView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_VIEW_UNSPECIFIED: _ClassVar[ResolutionView]
    RESOLUTION_VIEW_BASIC: _ClassVar[ResolutionView]
    RESOLUTION_VIEW_ROUTING: _ClassVar[ResolutionView]

class ProviderSecrets(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_SECRETS_UNSPECIFIED: _ClassVar[ProviderSecrets]
    PROVIDER_SECRETS_INFERENCE: _ClassVar[ProviderSecrets]
    PROVIDER_SECRETS_COST_API: _ClassVar[ProviderSecrets]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_MAPPING: _ClassVar[ChangeKind]
    CHANGE_KIND_PROVIDER: _ClassVar[ChangeKind]
    CHANGE_KIND_MODEL: _ClassVar[ChangeKind]
    CHANGE_KIND_IDENTITY: _ClassVar[ChangeKind]
    CHANGE_KIND_ALIAS: _ClassVar[ChangeKind]
    CHANGE_KIND_HEALTH: _ClassVar[ChangeKind]
RESOLUTION_VIEW_UNSPECIFIED: ResolutionView
RESOLUTION_VIEW_BASIC: ResolutionView
RESOLUTION_VIEW_ROUTING: ResolutionView
PROVIDER_SECRETS_UNSPECIFIED: ProviderSecrets
PROVIDER_SECRETS_INFERENCE: ProviderSecrets
PROVIDER_SECRETS_COST_API: ProviderSecrets
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_MAPPING: ChangeKind
CHANGE_KIND_PROVIDER: ChangeKind
CHANGE_KIND_MODEL: ChangeKind
CHANGE_KIND_IDENTITY: ChangeKind
CHANGE_KIND_ALIAS: ChangeKind
CHANGE_KIND_HEALTH: ChangeKind

class AuthenticateTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class Caller(_message.Message):
    __slots__ = ("user", "admin", "memberships", "preferred_providers", "limits", "token_id", "account")
    USER_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIPS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    admin: bool
    memberships: _containers.RepeatedCompositeFieldContainer[_admin_service_pb2.Membership]
    preferred_providers: _containers.RepeatedScalarFieldContainer[str]
    limits: _admin_service_pb2.ApiTokenLimits
    token_id: str
    account: str
    def __init__(self, user: _Optional[str] = ..., admin: _Optional[bool] = ..., memberships: _Optional[_Iterable[_Union[_admin_service_pb2.Membership, _Mapping]]] = ..., preferred_providers: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[_admin_service_pb2.ApiTokenLimits, _Mapping]] = ..., token_id: _Optional[str] = ..., account: _Optional[str] = ...) -> None: ...

class ResolveModelRequest(_message.Message):
    __slots__ = ("model", "user", "task", "providers", "view", "named_providers")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    NAMED_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    model: str
    user: str
    task: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    view: ResolutionView
    named_providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., user: _Optional[str] = ..., task: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., view: _Optional[_Union[ResolutionView, str]] = ..., named_providers: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveProviderModelRequest(_message.Message):
    __slots__ = ("provider", "provider_model", "user", "task", "view")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    provider: str
    provider_model: str
    user: str
    task: str
    view: ResolutionView
    def __init__(self, provider: _Optional[str] = ..., provider_model: _Optional[str] = ..., user: _Optional[str] = ..., task: _Optional[str] = ..., view: _Optional[_Union[ResolutionView, str]] = ...) -> None: ...

class Adapter(_message.Message):
    __slots__ = ("type", "model", "weights_path", "base_provider_model")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    type: str
    model: str
    weights_path: str
    base_provider_model: str
    def __init__(self, type: _Optional[str] = ..., model: _Optional[str] = ..., weights_path: _Optional[str] = ..., base_provider_model: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("provider", "provider_model", "status", "mapping_id", "adapter", "supports_tools", "supports_structured_output", "context_length", "status_reason")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MAPPING_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STRUCTURED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    provider: str
    provider_model: str
    status: str
    mapping_id: str
    adapter: Adapter
    supports_tools: bool
    supports_structured_output: bool
    context_length: int
    status_reason: str
    def __init__(self, provider: _Optional[str] = ..., provider_model: _Optional[str] = ..., status: _Optional[str] = ..., mapping_id: _Optional[str] = ..., adapter: _Optional[_Union[Adapter, _Mapping]] = ..., supports_tools: _Optional[bool] = ..., supports_structured_output: _Optional[bool] = ..., context_length: _Optional[int] = ..., status_reason: _Optional[str] = ...) -> None: ...

class Exclusion(_message.Message):
    __slots__ = ("provider", "reason", "status")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    reason: str
    status: str
    def __init__(self, provider: _Optional[str] = ..., reason: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ResolveModelResponse(_message.Message):
    __slots__ = ("model_found", "candidates", "exclusions", "model", "tasks", "provider_configs")
    MODEL_FOUND_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_CONFIGS_FIELD_NUMBER: _ClassVar[int]
    model_found: bool
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    exclusions: _containers.RepeatedCompositeFieldContainer[Exclusion]
    model: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    provider_configs: _containers.RepeatedCompositeFieldContainer[ProviderConfig]
    def __init__(self, model_found: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., exclusions: _Optional[_Iterable[_Union[Exclusion, _Mapping]]] = ..., model: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., provider_configs: _Optional[_Iterable[_Union[ProviderConfig, _Mapping]]] = ...) -> None: ...

class ListProviderConfigsRequest(_message.Message):
    __slots__ = ("secrets", "provider_ids")
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_IDS_FIELD_NUMBER: _ClassVar[int]
    secrets: ProviderSecrets
    provider_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, secrets: _Optional[_Union[ProviderSecrets, str]] = ..., provider_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ProviderConfig(_message.Message):
    __slots__ = ("provider", "prices", "redact")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    REDACT_FIELD_NUMBER: _ClassVar[int]
    provider: _admin_service_pb2.Provider
    prices: _containers.RepeatedCompositeFieldContainer[_admin_service_pb2.Price]
    redact: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, provider: _Optional[_Union[_admin_service_pb2.Provider, _Mapping]] = ..., prices: _Optional[_Iterable[_Union[_admin_service_pb2.Price, _Mapping]]] = ..., redact: _Optional[_Iterable[str]] = ...) -> None: ...

class ListProviderConfigsResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderConfig]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderConfig, _Mapping]]] = ...) -> None: ...

class ListServedModelsRequest(_message.Message):
    __slots__ = ("user", "model")
    USER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    user: str
    model: str
    def __init__(self, user: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("id", "pipeline_tag", "candidates", "create_time", "alias_of")
    ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_TAG_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_OF_FIELD_NUMBER: _ClassVar[int]
    id: str
    pipeline_tag: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    create_time: _timestamp_pb2.Timestamp
    alias_of: str
    def __init__(self, id: _Optional[str] = ..., pipeline_tag: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alias_of: _Optional[str] = ...) -> None: ...

class ListServedModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ...) -> None: ...

class WatchChangesRequest(_message.Message):
    __slots__ = ("kinds",)
    KINDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[ChangeKind]
    def __init__(self, kinds: _Optional[_Iterable[_Union[ChangeKind, str]]] = ...) -> None: ...

class WatchChangesResponse(_message.Message):
    __slots__ = ("revision", "kind", "key", "models", "all_models", "token_hashes", "health")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ALL_MODELS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HASHES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    revision: int
    kind: ChangeKind
    key: str
    models: _containers.RepeatedScalarFieldContainer[str]
    all_models: bool
    token_hashes: _containers.RepeatedScalarFieldContainer[str]
    health: _containers.RepeatedCompositeFieldContainer[ModelHealth]
    def __init__(self, revision: _Optional[int] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., key: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., all_models: _Optional[bool] = ..., token_hashes: _Optional[_Iterable[str]] = ..., health: _Optional[_Iterable[_Union[ModelHealth, _Mapping]]] = ...) -> None: ...

class MinuteCounts(_message.Message):
    __slots__ = ("minute", "requests", "errors")
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    minute: int
    requests: int
    errors: int
    def __init__(self, minute: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class HealthError(_message.Message):
    __slots__ = ("time", "provider_status", "code", "reason", "message")
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_STATUS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    provider_status: int
    code: str
    reason: str
    message: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., provider_status: _Optional[int] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class TrafficReport(_message.Message):
    __slots__ = ("provider", "provider_model", "requests", "errors", "rejected", "skipped", "latency_samples", "time_to_first_token_ms_sum", "throughput_samples", "throughput_tokens_per_second_sum", "minutes", "last_errors")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_SUM_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_TOKENS_PER_SECOND_SUM_FIELD_NUMBER: _ClassVar[int]
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERRORS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    provider_model: str
    requests: int
    errors: int
    rejected: int
    skipped: int
    latency_samples: int
    time_to_first_token_ms_sum: float
    throughput_samples: int
    throughput_tokens_per_second_sum: float
    minutes: _containers.RepeatedCompositeFieldContainer[MinuteCounts]
    last_errors: _containers.RepeatedCompositeFieldContainer[HealthError]
    def __init__(self, provider: _Optional[str] = ..., provider_model: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., rejected: _Optional[int] = ..., skipped: _Optional[int] = ..., latency_samples: _Optional[int] = ..., time_to_first_token_ms_sum: _Optional[float] = ..., throughput_samples: _Optional[int] = ..., throughput_tokens_per_second_sum: _Optional[float] = ..., minutes: _Optional[_Iterable[_Union[MinuteCounts, _Mapping]]] = ..., last_errors: _Optional[_Iterable[_Union[HealthError, _Mapping]]] = ...) -> None: ...

class ReportModelHealthRequest(_message.Message):
    __slots__ = ("start_time", "reports", "request_id")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    reports: _containers.RepeatedCompositeFieldContainer[TrafficReport]
    request_id: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reports: _Optional[_Iterable[_Union[TrafficReport, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ReportModelHealthResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[ModelHealth]
    def __init__(self, records: _Optional[_Iterable[_Union[ModelHealth, _Mapping]]] = ...) -> None: ...

class ModelHealth(_message.Message):
    __slots__ = ("provider", "provider_model", "version", "start_time", "requests", "errors", "rejected", "skipped", "latency_samples", "time_to_first_token_ms", "throughput_samples", "throughput_tokens_per_second", "minutes", "last_errors", "probes", "probe_failures", "last_probe_time", "last_probe_failure")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    PROBE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_FAILURE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    provider_model: str
    version: int
    start_time: _timestamp_pb2.Timestamp
    requests: int
    errors: int
    rejected: int
    skipped: int
    latency_samples: int
    time_to_first_token_ms: float
    throughput_samples: int
    throughput_tokens_per_second: float
    minutes: _containers.RepeatedCompositeFieldContainer[MinuteCounts]
    last_errors: _containers.RepeatedCompositeFieldContainer[HealthError]
    probes: int
    probe_failures: int
    last_probe_time: _timestamp_pb2.Timestamp
    last_probe_failure: str
    def __init__(self, provider: _Optional[str] = ..., provider_model: _Optional[str] = ..., version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., rejected: _Optional[int] = ..., skipped: _Optional[int] = ..., latency_samples: _Optional[int] = ..., time_to_first_token_ms: _Optional[float] = ..., throughput_samples: _Optional[int] = ..., throughput_tokens_per_second: _Optional[float] = ..., minutes: _Optional[_Iterable[_Union[MinuteCounts, _Mapping]]] = ..., last_errors: _Optional[_Iterable[_Union[HealthError, _Mapping]]] = ..., probes: _Optional[int] = ..., probe_failures: _Optional[int] = ..., last_probe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_probe_failure: _Optional[str] = ...) -> None: ...

class ListModelHealthRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelHealthResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[ModelHealth]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[ModelHealth, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
