from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnswerTiming(_message.Message):
    __slots__ = ("router_micros", "upstream_micros")
    ROUTER_MICROS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MICROS_FIELD_NUMBER: _ClassVar[int]
    router_micros: int
    upstream_micros: int
    def __init__(self, router_micros: _Optional[int] = ..., upstream_micros: _Optional[int] = ...) -> None: ...

class RateLimitState(_message.Message):
    __slots__ = ("limit", "remaining", "reset_millis")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_MILLIS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    remaining: int
    reset_millis: int
    def __init__(self, limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_millis: _Optional[int] = ...) -> None: ...

class RateLimits(_message.Message):
    __slots__ = ("requests", "tokens")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    requests: RateLimitState
    tokens: RateLimitState
    def __init__(self, requests: _Optional[_Union[RateLimitState, _Mapping]] = ..., tokens: _Optional[_Union[RateLimitState, _Mapping]] = ...) -> None: ...
