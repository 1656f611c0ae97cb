import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from switchboard.registry.v1 import admin_service_pb2 as _admin_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MappingType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAPPING_TYPE_UNSPECIFIED: _ClassVar[MappingType]
    MAPPING_TYPE_MODEL: _ClassVar[MappingType]
    MAPPING_TYPE_TAG_FILTER: _ClassVar[MappingType]
MAPPING_TYPE_UNSPECIFIED: MappingType
MAPPING_TYPE_MODEL: MappingType
MAPPING_TYPE_TAG_FILTER: MappingType

class ModelMapping(_message.Message):
    __slots__ = ("id", "provider", "type", "task", "hf_model", "provider_model", "status", "tags", "adapter_type", "create_time", "status_reason", "conformance", "supports_tools", "supports_structured_output", "context_length")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    HF_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    CONFORMANCE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STRUCTURED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    type: str
    task: str
    hf_model: str
    provider_model: str
    status: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    adapter_type: str
    create_time: _timestamp_pb2.Timestamp
    status_reason: str
    conformance: ConformanceSummary
    supports_tools: bool
    supports_structured_output: bool
    context_length: int
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., type: _Optional[str] = ..., task: _Optional[str] = ..., hf_model: _Optional[str] = ..., provider_model: _Optional[str] = ..., status: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., adapter_type: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status_reason: _Optional[str] = ..., conformance: _Optional[_Union[ConformanceSummary, _Mapping]] = ..., supports_tools: _Optional[bool] = ..., supports_structured_output: _Optional[bool] = ..., context_length: _Optional[int] = ...) -> None: ...

class ConformanceSummary(_message.Message):
    __slots__ = ("passed", "passed_checks", "failed_checks", "skipped_checks", "check_time", "supports_tools", "supports_structured_output")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    PASSED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STRUCTURED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    passed_checks: int
    failed_checks: int
    skipped_checks: int
    check_time: _timestamp_pb2.Timestamp
    supports_tools: bool
    supports_structured_output: bool
    def __init__(self, passed: _Optional[bool] = ..., passed_checks: _Optional[int] = ..., failed_checks: _Optional[int] = ..., skipped_checks: _Optional[int] = ..., check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., supports_tools: _Optional[bool] = ..., supports_structured_output: _Optional[bool] = ...) -> None: ...

class ConformanceCheck(_message.Message):
    __slots__ = ("name", "result", "expected", "got", "duration_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    GOT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    result: str
    expected: str
    got: str
    duration_ms: float
    def __init__(self, name: _Optional[str] = ..., result: _Optional[str] = ..., expected: _Optional[str] = ..., got: _Optional[str] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class ConformanceReport(_message.Message):
    __slots__ = ("provider", "mapping_id", "provider_model", "task", "check_time", "passed", "checks", "time_to_first_token_ms", "throughput_tokens_per_second", "supports_tools", "supports_structured_output")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAPPING_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STRUCTURED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mapping_id: str
    provider_model: str
    task: str
    check_time: _timestamp_pb2.Timestamp
    passed: bool
    checks: _containers.RepeatedCompositeFieldContainer[ConformanceCheck]
    time_to_first_token_ms: float
    throughput_tokens_per_second: float
    supports_tools: bool
    supports_structured_output: bool
    def __init__(self, provider: _Optional[str] = ..., mapping_id: _Optional[str] = ..., provider_model: _Optional[str] = ..., task: _Optional[str] = ..., check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., passed: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[ConformanceCheck, _Mapping]]] = ..., time_to_first_token_ms: _Optional[float] = ..., throughput_tokens_per_second: _Optional[float] = ..., supports_tools: _Optional[bool] = ..., supports_structured_output: _Optional[bool] = ...) -> None: ...

class CheckModelMappingRequest(_message.Message):
    __slots__ = ("provider", "mapping_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAPPING_ID_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mapping_id: str
    def __init__(self, provider: _Optional[str] = ..., mapping_id: _Optional[str] = ...) -> None: ...

class GetConformanceReportRequest(_message.Message):
    __slots__ = ("provider", "mapping_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAPPING_ID_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mapping_id: str
    def __init__(self, provider: _Optional[str] = ..., mapping_id: _Optional[str] = ...) -> None: ...

class CreateModelMappingRequest(_message.Message):
    __slots__ = ("provider", "type", "task", "hf_model", "provider_model", "status", "tags", "adapter_type", "supports_tools", "supports_structured_output", "context_length")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    HF_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STRUCTURED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    provider: str
    type: str
    task: str
    hf_model: str
    provider_model: str
    status: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    adapter_type: str
    supports_tools: bool
    supports_structured_output: bool
    context_length: int
    def __init__(self, provider: _Optional[str] = ..., type: _Optional[str] = ..., task: _Optional[str] = ..., hf_model: _Optional[str] = ..., provider_model: _Optional[str] = ..., status: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., adapter_type: _Optional[str] = ..., supports_tools: _Optional[bool] = ..., supports_structured_output: _Optional[bool] = ..., context_length: _Optional[int] = ...) -> None: ...

class UpdateModelMappingRequest(_message.Message):
    __slots__ = ("provider", "mapping_id", "model_mapping", "update_mask")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAPPING_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_MAPPING_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mapping_id: str
    model_mapping: ModelMapping
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, provider: _Optional[str] = ..., mapping_id: _Optional[str] = ..., model_mapping: _Optional[_Union[ModelMapping, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteModelMappingRequest(_message.Message):
    __slots__ = ("provider", "mapping_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAPPING_ID_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mapping_id: str
    def __init__(self, provider: _Optional[str] = ..., mapping_id: _Optional[str] = ...) -> None: ...

class UpdateModelMappingStatusRequest(_message.Message):
    __slots__ = ("provider", "mapping_id", "status")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAPPING_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mapping_id: str
    status: str
    def __init__(self, provider: _Optional[str] = ..., mapping_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class GetProviderMappingTableRequest(_message.Message):
    __slots__ = ("provider", "status")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    status: str
    def __init__(self, provider: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ListModelMappingsRequest(_message.Message):
    __slots__ = ("provider", "status", "page_size", "page_token")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    status: str
    page_size: int
    page_token: str
    def __init__(self, provider: _Optional[str] = ..., status: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelMappingsResponse(_message.Message):
    __slots__ = ("model_mappings", "next_page_token")
    MODEL_MAPPINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_mappings: _containers.RepeatedCompositeFieldContainer[ModelMapping]
    next_page_token: str
    def __init__(self, model_mappings: _Optional[_Iterable[_Union[ModelMapping, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetHubModelRequest(_message.Message):
    __slots__ = ("model", "expand")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPAND_FIELD_NUMBER: _ClassVar[int]
    model: str
    expand: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., expand: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateProviderPreferencesRequest(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, providers: _Optional[_Iterable[str]] = ...) -> None: ...

class ProviderPreferences(_message.Message):
    __slots__ = ("user", "providers")
    USER_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    user: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ...) -> None: ...
