from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateChatCompletionRequest(_message.Message):
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
    __slots__ = ("model", "body")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    model: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, model: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("provider", "status", "provider_model", "input_price_per_million", "output_price_per_million", "time_to_first_token_ms", "throughput_tokens_per_second", "pricing", "context_length", "supports_tools", "supports_structured_output", "input_token_nano_usd", "output_token_nano_usd", "status_reason")
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
    def __init__(self, provider: _Optional[str] = ..., status: _Optional[str] = ..., provider_model: _Optional[str] = ..., input_price_per_million: _Optional[float] = ..., output_price_per_million: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., throughput_tokens_per_second: _Optional[float] = ..., pricing: _Optional[_Union[ModelPricing, _Mapping]] = ..., context_length: _Optional[int] = ..., supports_tools: _Optional[bool] = ..., supports_structured_output: _Optional[bool] = ..., input_token_nano_usd: _Optional[int] = ..., output_token_nano_usd: _Optional[int] = ..., status_reason: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("id", "url", "models", "params", "tasks")
    ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    url: str
    models: _containers.RepeatedScalarFieldContainer[str]
    params: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., url: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., params: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class GetProviderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
