import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from switchboard.registry.v1 import admin_service_pb2 as _admin_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetMeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Me(_message.Message):
    __slots__ = ("user", "admin", "orgs")
    USER_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    ORGS_FIELD_NUMBER: _ClassVar[int]
    user: str
    admin: bool
    orgs: _containers.RepeatedCompositeFieldContainer[OrgRole]
    def __init__(self, user: _Optional[str] = ..., admin: _Optional[bool] = ..., orgs: _Optional[_Iterable[_Union[OrgRole, _Mapping]]] = ...) -> None: ...

class OrgRole(_message.Message):
    __slots__ = ("org", "role", "provider_ids")
    ORG_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_IDS_FIELD_NUMBER: _ClassVar[int]
    org: str
    role: str
    provider_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, org: _Optional[str] = ..., role: _Optional[str] = ..., provider_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ApiToken(_message.Message):
    __slots__ = ("name", "suffix", "create_time", "limits", "account")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    suffix: str
    create_time: _timestamp_pb2.Timestamp
    limits: _admin_service_pb2.ApiTokenLimits
    account: str
    def __init__(self, name: _Optional[str] = ..., suffix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limits: _Optional[_Union[_admin_service_pb2.ApiTokenLimits, _Mapping]] = ..., account: _Optional[str] = ...) -> None: ...

class ListMyApiTokensRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMyApiTokensResponse(_message.Message):
    __slots__ = ("api_tokens", "next_page_token")
    API_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_tokens: _containers.RepeatedCompositeFieldContainer[ApiToken]
    next_page_token: str
    def __init__(self, api_tokens: _Optional[_Iterable[_Union[ApiToken, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateMyApiTokenRequest(_message.Message):
    __slots__ = ("name", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: _admin_service_pb2.ApiTokenLimits
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Union[_admin_service_pb2.ApiTokenLimits, _Mapping]] = ...) -> None: ...

class CreateMyApiTokenResponse(_message.Message):
    __slots__ = ("api_token", "token")
    API_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_token: ApiToken
    token: str
    def __init__(self, api_token: _Optional[_Union[ApiToken, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class CreateOrgApiTokenRequest(_message.Message):
    __slots__ = ("org", "name", "limits")
    ORG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    org: str
    name: str
    limits: _admin_service_pb2.ApiTokenLimits
    def __init__(self, org: _Optional[str] = ..., name: _Optional[str] = ..., limits: _Optional[_Union[_admin_service_pb2.ApiTokenLimits, _Mapping]] = ...) -> None: ...

class UpdateMyApiTokenRequest(_message.Message):
    __slots__ = ("name", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: _admin_service_pb2.ApiTokenLimits
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Union[_admin_service_pb2.ApiTokenLimits, _Mapping]] = ...) -> None: ...

class DeleteMyApiTokenRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListOrgMembersRequest(_message.Message):
    __slots__ = ("org", "page_size", "page_token")
    ORG_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    org: str
    page_size: int
    page_token: str
    def __init__(self, org: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrgMembersResponse(_message.Message):
    __slots__ = ("members", "next_page_token")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[_admin_service_pb2.Membership]
    next_page_token: str
    def __init__(self, members: _Optional[_Iterable[_Union[_admin_service_pb2.Membership, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
