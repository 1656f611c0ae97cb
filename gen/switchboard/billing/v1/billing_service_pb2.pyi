import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetGenerationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Generation(_message.Message):
    __slots__ = ("id", "provider", "model", "provider_model", "task", "account", "input_tokens", "output_tokens", "create_time", "time_to_first_token_ms", "total_time_ms", "estimated_nano_usd", "estimated_cost", "settled_nano_usd", "settled_cost", "reconciliation_state", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_FIELD_NUMBER: _ClassVar[int]
    SETTLED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    SETTLED_COST_FIELD_NUMBER: _ClassVar[int]
    RECONCILIATION_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    model: str
    provider_model: str
    task: str
    account: str
    input_tokens: int
    output_tokens: int
    create_time: _timestamp_pb2.Timestamp
    time_to_first_token_ms: int
    total_time_ms: int
    estimated_nano_usd: int
    estimated_cost: float
    settled_nano_usd: int
    settled_cost: float
    reconciliation_state: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., provider_model: _Optional[str] = ..., task: _Optional[str] = ..., account: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_to_first_token_ms: _Optional[int] = ..., total_time_ms: _Optional[int] = ..., estimated_nano_usd: _Optional[int] = ..., estimated_cost: _Optional[float] = ..., settled_nano_usd: _Optional[int] = ..., settled_cost: _Optional[float] = ..., reconciliation_state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("account", "period")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    account: str
    period: str
    def __init__(self, account: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class UsageLine(_message.Message):
    __slots__ = ("model", "provider", "settled_nano_usd", "pending_nano_usd", "requests", "settled_nano_usd_exact", "pending_nano_usd_exact", "task", "unit", "units")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SETTLED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    PENDING_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    PENDING_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    settled_nano_usd: float
    pending_nano_usd: float
    requests: int
    settled_nano_usd_exact: int
    pending_nano_usd_exact: int
    task: str
    unit: str
    units: int
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., settled_nano_usd: _Optional[float] = ..., pending_nano_usd: _Optional[float] = ..., requests: _Optional[int] = ..., settled_nano_usd_exact: _Optional[int] = ..., pending_nano_usd_exact: _Optional[int] = ..., task: _Optional[str] = ..., unit: _Optional[str] = ..., units: _Optional[int] = ...) -> None: ...

class UnpricedRequest(_message.Message):
    __slots__ = ("request_id", "provider", "reason", "estimated_nano_usd", "estimated_nano_usd_exact")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    provider: str
    reason: str
    estimated_nano_usd: float
    estimated_nano_usd_exact: int
    def __init__(self, request_id: _Optional[str] = ..., provider: _Optional[str] = ..., reason: _Optional[str] = ..., estimated_nano_usd: _Optional[float] = ..., estimated_nano_usd_exact: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("account", "period", "settled_nano_usd", "pending_nano_usd", "requests", "by_model", "by_provider", "unpriced", "settled_nano_usd_exact", "pending_nano_usd_exact", "by_task")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    SETTLED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    PENDING_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    BY_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_FIELD_NUMBER: _ClassVar[int]
    SETTLED_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    PENDING_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    BY_TASK_FIELD_NUMBER: _ClassVar[int]
    account: str
    period: str
    settled_nano_usd: float
    pending_nano_usd: float
    requests: int
    by_model: _containers.RepeatedCompositeFieldContainer[UsageLine]
    by_provider: _containers.RepeatedCompositeFieldContainer[UsageLine]
    unpriced: _containers.RepeatedCompositeFieldContainer[UnpricedRequest]
    settled_nano_usd_exact: int
    pending_nano_usd_exact: int
    by_task: _containers.RepeatedCompositeFieldContainer[UsageLine]
    def __init__(self, account: _Optional[str] = ..., period: _Optional[str] = ..., settled_nano_usd: _Optional[float] = ..., pending_nano_usd: _Optional[float] = ..., requests: _Optional[int] = ..., by_model: _Optional[_Iterable[_Union[UsageLine, _Mapping]]] = ..., by_provider: _Optional[_Iterable[_Union[UsageLine, _Mapping]]] = ..., unpriced: _Optional[_Iterable[_Union[UnpricedRequest, _Mapping]]] = ..., settled_nano_usd_exact: _Optional[int] = ..., pending_nano_usd_exact: _Optional[int] = ..., by_task: _Optional[_Iterable[_Union[UsageLine, _Mapping]]] = ...) -> None: ...

class GetDailyUsageRequest(_message.Message):
    __slots__ = ("account", "days")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    account: str
    days: int
    def __init__(self, account: _Optional[str] = ..., days: _Optional[int] = ...) -> None: ...

class UsageSlice(_message.Message):
    __slots__ = ("model", "provider", "settled_nano_usd", "pending_nano_usd", "unpriced_nano_usd", "requests")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SETTLED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    PENDING_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    settled_nano_usd: int
    pending_nano_usd: int
    unpriced_nano_usd: int
    requests: int
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., settled_nano_usd: _Optional[int] = ..., pending_nano_usd: _Optional[int] = ..., unpriced_nano_usd: _Optional[int] = ..., requests: _Optional[int] = ...) -> None: ...

class UsageDay(_message.Message):
    __slots__ = ("date", "total", "by_model", "by_provider", "other_models", "other_providers")
    DATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    BY_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OTHER_MODELS_FIELD_NUMBER: _ClassVar[int]
    OTHER_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    date: str
    total: UsageSlice
    by_model: _containers.RepeatedCompositeFieldContainer[UsageSlice]
    by_provider: _containers.RepeatedCompositeFieldContainer[UsageSlice]
    other_models: UsageSlice
    other_providers: UsageSlice
    def __init__(self, date: _Optional[str] = ..., total: _Optional[_Union[UsageSlice, _Mapping]] = ..., by_model: _Optional[_Iterable[_Union[UsageSlice, _Mapping]]] = ..., by_provider: _Optional[_Iterable[_Union[UsageSlice, _Mapping]]] = ..., other_models: _Optional[_Union[UsageSlice, _Mapping]] = ..., other_providers: _Optional[_Union[UsageSlice, _Mapping]] = ...) -> None: ...

class DailyUsage(_message.Message):
    __slots__ = ("account", "start_date", "end_date", "total", "by_model", "by_provider", "days", "other_models", "other_providers")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    BY_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    OTHER_MODELS_FIELD_NUMBER: _ClassVar[int]
    OTHER_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    account: str
    start_date: str
    end_date: str
    total: UsageSlice
    by_model: _containers.RepeatedCompositeFieldContainer[UsageSlice]
    by_provider: _containers.RepeatedCompositeFieldContainer[UsageSlice]
    days: _containers.RepeatedCompositeFieldContainer[UsageDay]
    other_models: UsageSlice
    other_providers: UsageSlice
    def __init__(self, account: _Optional[str] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., total: _Optional[_Union[UsageSlice, _Mapping]] = ..., by_model: _Optional[_Iterable[_Union[UsageSlice, _Mapping]]] = ..., by_provider: _Optional[_Iterable[_Union[UsageSlice, _Mapping]]] = ..., days: _Optional[_Iterable[_Union[UsageDay, _Mapping]]] = ..., other_models: _Optional[_Union[UsageSlice, _Mapping]] = ..., other_providers: _Optional[_Union[UsageSlice, _Mapping]] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("account", "included_credits_nano_usd", "limit_nano_usd", "spent_nano_usd", "reserved_nano_usd", "included_credits_nano_usd_exact", "limit_nano_usd_exact", "spent_nano_usd_exact", "reserved_nano_usd_exact")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_CREDITS_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_CREDITS_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    SPENT_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NANO_USD_EXACT_FIELD_NUMBER: _ClassVar[int]
    account: str
    included_credits_nano_usd: float
    limit_nano_usd: float
    spent_nano_usd: float
    reserved_nano_usd: float
    included_credits_nano_usd_exact: int
    limit_nano_usd_exact: int
    spent_nano_usd_exact: int
    reserved_nano_usd_exact: int
    def __init__(self, account: _Optional[str] = ..., included_credits_nano_usd: _Optional[float] = ..., limit_nano_usd: _Optional[float] = ..., spent_nano_usd: _Optional[float] = ..., reserved_nano_usd: _Optional[float] = ..., included_credits_nano_usd_exact: _Optional[int] = ..., limit_nano_usd_exact: _Optional[int] = ..., spent_nano_usd_exact: _Optional[int] = ..., reserved_nano_usd_exact: _Optional[int] = ...) -> None: ...

class UpdateSpendingLimitRequest(_message.Message):
    __slots__ = ("account", "limit_nano_usd")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    account: str
    limit_nano_usd: int
    def __init__(self, account: _Optional[str] = ..., limit_nano_usd: _Optional[int] = ...) -> None: ...

class UpdateIncludedCreditsRequest(_message.Message):
    __slots__ = ("account", "included_credits_nano_usd")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_CREDITS_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    account: str
    included_credits_nano_usd: int
    def __init__(self, account: _Optional[str] = ..., included_credits_nano_usd: _Optional[int] = ...) -> None: ...

class ReconcileCostsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReconcileCostsResponse(_message.Message):
    __slots__ = ("asked", "settled", "rejected", "pending", "unpriced")
    ASKED_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_FIELD_NUMBER: _ClassVar[int]
    asked: int
    settled: int
    rejected: int
    pending: int
    unpriced: int
    def __init__(self, asked: _Optional[int] = ..., settled: _Optional[int] = ..., rejected: _Optional[int] = ..., pending: _Optional[int] = ..., unpriced: _Optional[int] = ...) -> None: ...

class ListProviderReconciliationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ProviderReconciliation(_message.Message):
    __slots__ = ("provider", "has_cost_api", "pending_requests", "unpriced_requests", "cost_api_failures", "consecutive_failures", "last_failure_reason", "last_failure_time", "last_attempt_time")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HAS_COST_API_FIELD_NUMBER: _ClassVar[int]
    PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    COST_API_FAILURES_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    provider: str
    has_cost_api: bool
    pending_requests: int
    unpriced_requests: int
    cost_api_failures: int
    consecutive_failures: int
    last_failure_reason: str
    last_failure_time: _timestamp_pb2.Timestamp
    last_attempt_time: _timestamp_pb2.Timestamp
    def __init__(self, provider: _Optional[str] = ..., has_cost_api: _Optional[bool] = ..., pending_requests: _Optional[int] = ..., unpriced_requests: _Optional[int] = ..., cost_api_failures: _Optional[int] = ..., consecutive_failures: _Optional[int] = ..., last_failure_reason: _Optional[str] = ..., last_failure_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListProviderReconciliationsResponse(_message.Message):
    __slots__ = ("provider_reconciliations", "next_page_token", "last_pass_time")
    PROVIDER_RECONCILIATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_PASS_TIME_FIELD_NUMBER: _ClassVar[int]
    provider_reconciliations: _containers.RepeatedCompositeFieldContainer[ProviderReconciliation]
    next_page_token: str
    last_pass_time: _timestamp_pb2.Timestamp
    def __init__(self, provider_reconciliations: _Optional[_Iterable[_Union[ProviderReconciliation, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., last_pass_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerRecord(_message.Message):
    __slots__ = ("request_id", "provider_request_id", "provider", "model", "provider_model", "task", "caller", "account", "start_time", "end_time", "input_tokens", "output_tokens", "images", "estimated_nano_usd", "provisional", "unit", "units", "time_to_first_token_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    provider_request_id: str
    provider: str
    model: str
    provider_model: str
    task: str
    caller: str
    account: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    input_tokens: int
    output_tokens: int
    images: int
    estimated_nano_usd: int
    provisional: bool
    unit: str
    units: int
    time_to_first_token_ms: int
    def __init__(self, request_id: _Optional[str] = ..., provider_request_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., provider_model: _Optional[str] = ..., task: _Optional[str] = ..., caller: _Optional[str] = ..., account: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., images: _Optional[int] = ..., estimated_nano_usd: _Optional[int] = ..., provisional: _Optional[bool] = ..., unit: _Optional[str] = ..., units: _Optional[int] = ..., time_to_first_token_ms: _Optional[int] = ...) -> None: ...

class RecordRequestsRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[LedgerRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[LedgerRecord, _Mapping]]] = ...) -> None: ...

class RecordRequestsResponse(_message.Message):
    __slots__ = ("stored_count",)
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    stored_count: int
    def __init__(self, stored_count: _Optional[int] = ...) -> None: ...

class ReserveSpendRequest(_message.Message):
    __slots__ = ("request_id", "account", "estimated_nano_usd")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account: str
    estimated_nano_usd: int
    def __init__(self, request_id: _Optional[str] = ..., account: _Optional[str] = ..., estimated_nano_usd: _Optional[int] = ...) -> None: ...

class ReserveSpendResponse(_message.Message):
    __slots__ = ("granted", "remaining_nano_usd")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_NANO_USD_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    remaining_nano_usd: int
    def __init__(self, granted: _Optional[bool] = ..., remaining_nano_usd: _Optional[int] = ...) -> None: ...

class BatchReserveSpendRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ReserveSpendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ReserveSpendRequest, _Mapping]]] = ...) -> None: ...

class BatchReserveSpendResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ReserveSpendResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ReserveSpendResponse, _Mapping]]] = ...) -> None: ...

class ReleaseReservationRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ReleaseReservationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchLimitedAccountsRequest(_message.Message):
    __slots__ = ("applied_revision",)
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    applied_revision: int
    def __init__(self, applied_revision: _Optional[int] = ...) -> None: ...

class WatchLimitedAccountsResponse(_message.Message):
    __slots__ = ("revision", "snapshot", "limited", "unlimited")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LIMITED_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    snapshot: bool
    limited: _containers.RepeatedScalarFieldContainer[str]
    unlimited: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revision: _Optional[int] = ..., snapshot: _Optional[bool] = ..., limited: _Optional[_Iterable[str]] = ..., unlimited: _Optional[_Iterable[str]] = ...) -> None: ...
