import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class CreateChatCompletionRequest(_message.Message):
    __slots__ = ("provider", "body")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class CreateResponseRequest(_message.Message):
    __slots__ = ("provider", "body")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class CreateMessageRequest(_message.Message):
    __slots__ = ("provider", "body", "beta")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    beta: str
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., beta: _Optional[str] = ...) -> None: ...

class CountMessageTokensRequest(_message.Message):
    __slots__ = ("provider", "body", "beta")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    beta: str
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., beta: _Optional[str] = ...) -> None: ...

class CreateCompletionRequest(_message.Message):
    __slots__ = ("provider", "body")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class CreateImageRequest(_message.Message):
    __slots__ = ("provider", "body")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class TextToImageRequest(_message.Message):
    __slots__ = ("model", "body", "provider")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    model: str
    body: _httpbody_pb2.HttpBody
    provider: str
    def __init__(self, model: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., provider: _Optional[str] = ...) -> None: ...

class CreateEmbeddingRequest(_message.Message):
    __slots__ = ("provider", "body")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class CreateTranscriptionRequest(_message.Message):
    __slots__ = ("provider", "body")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class CreateSpeechRequest(_message.Message):
    __slots__ = ("provider", "body")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, provider: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelPricing(_message.Message):
    __slots__ = ("input", "output")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    input: float
    output: float
    def __init__(self, input: _Optional[float] = ..., output: _Optional[float] = ...) -> None: ...

class ModelProvider(_message.Message):
    __slots__ = ("provider", "status", "provider_model", "input_price_per_million", "output_price_per_million", "time_to_first_token_ms", "throughput_tokens_per_second", "pricing", "context_length", "supports_tools", "supports_structured_output", "input_token_nano_usd", "output_token_nano_usd", "status_reason", "unit_price")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STRUCTURED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    status: str
    provider_model: str
    input_price_per_million: float
    output_price_per_million: float
    time_to_first_token_ms: float
    throughput_tokens_per_second: float
    pricing: ModelPricing
    context_length: int
    supports_tools: bool
    supports_structured_output: bool
    input_token_nano_usd: int
    output_token_nano_usd: int
    status_reason: str
    unit_price: UnitPrice
    def __init__(self, provider: _Optional[str] = ..., status: _Optional[str] = ..., provider_model: _Optional[str] = ..., input_price_per_million: _Optional[float] = ..., output_price_per_million: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., throughput_tokens_per_second: _Optional[float] = ..., pricing: _Optional[_Union[ModelPricing, _Mapping]] = ..., context_length: _Optional[int] = ..., supports_tools: _Optional[bool] = ..., supports_structured_output: _Optional[bool] = ..., input_token_nano_usd: _Optional[int] = ..., output_token_nano_usd: _Optional[int] = ..., status_reason: _Optional[str] = ..., unit_price: _Optional[_Union[UnitPrice, _Mapping]] = ...) -> None: ...

class UnitPrice(_message.Message):
    __slots__ = ("task", "unit", "nano_usd", "usd")
    TASK_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    NANO_USD_FIELD_NUMBER: _ClassVar[int]
    USD_FIELD_NUMBER: _ClassVar[int]
    task: str
    unit: str
    nano_usd: int
    usd: float
    def __init__(self, task: _Optional[str] = ..., unit: _Optional[str] = ..., nano_usd: _Optional[int] = ..., usd: _Optional[float] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "object", "created", "owned_by", "pipeline_tag", "providers")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_TAG_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    created: int
    owned_by: str
    pipeline_tag: str
    providers: _containers.RepeatedCompositeFieldContainer[ModelProvider]
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ..., pipeline_tag: _Optional[str] = ..., providers: _Optional[_Iterable[_Union[ModelProvider, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("object", "data")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    object: str
    data: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, object: _Optional[str] = ..., data: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListInferenceProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListInferenceProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    def __init__(self, providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("id", "url", "models", "params", "tasks", "task_formats")
    class TaskFormatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TASK_FORMATS_FIELD_NUMBER: _ClassVar[int]
    id: str
    url: str
    models: _containers.RepeatedScalarFieldContainer[str]
    params: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    task_formats: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., url: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., params: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ..., task_formats: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetProviderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetProviderHealthRequest(_message.Message):
    __slots__ = ("provider", "page_size", "page_token")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    page_size: int
    page_token: str
    def __init__(self, provider: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProviderHealthRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProviderHealthResponse(_message.Message):
    __slots__ = ("providers", "next_page_token")
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderHealth]
    next_page_token: str
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderHealth, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ProviderHealth(_message.Message):
    __slots__ = ("provider", "breaker_state", "consecutive_failures", "models", "start_time", "window_seconds", "requests", "errors", "rejected", "skipped", "recent_requests", "recent_errors", "error_rate", "last_error", "next_page_token")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RECENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    breaker_state: BreakerState
    consecutive_failures: int
    models: _containers.RepeatedCompositeFieldContainer[ProviderModelHealth]
    start_time: _timestamp_pb2.Timestamp
    window_seconds: int
    requests: int
    errors: int
    rejected: int
    skipped: int
    recent_requests: int
    recent_errors: int
    error_rate: float
    last_error: ProviderError
    next_page_token: str
    def __init__(self, provider: _Optional[str] = ..., breaker_state: _Optional[_Union[BreakerState, str]] = ..., consecutive_failures: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ProviderModelHealth, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_seconds: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., rejected: _Optional[int] = ..., skipped: _Optional[int] = ..., recent_requests: _Optional[int] = ..., recent_errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., last_error: _Optional[_Union[ProviderError, _Mapping]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ProviderModelHealth(_message.Message):
    __slots__ = ("provider_model", "requests", "errors", "rejected", "skipped", "recent_requests", "recent_errors", "error_rate", "time_to_first_token_ms", "throughput_tokens_per_second", "last_errors", "probes", "probe_failures", "last_probe_time", "last_probe_failure")
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RECENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LAST_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    PROBE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_FAILURE_FIELD_NUMBER: _ClassVar[int]
    provider_model: str
    requests: int
    errors: int
    rejected: int
    skipped: int
    recent_requests: int
    recent_errors: int
    error_rate: float
    time_to_first_token_ms: float
    throughput_tokens_per_second: float
    last_errors: _containers.RepeatedCompositeFieldContainer[ProviderError]
    probes: int
    probe_failures: int
    last_probe_time: _timestamp_pb2.Timestamp
    last_probe_failure: str
    def __init__(self, provider_model: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., rejected: _Optional[int] = ..., skipped: _Optional[int] = ..., recent_requests: _Optional[int] = ..., recent_errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., throughput_tokens_per_second: _Optional[float] = ..., last_errors: _Optional[_Iterable[_Union[ProviderError, _Mapping]]] = ..., probes: _Optional[int] = ..., probe_failures: _Optional[int] = ..., last_probe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_probe_failure: _Optional[str] = ...) -> None: ...

class ProviderError(_message.Message):
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
