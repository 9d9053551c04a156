from skyge.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VoteRequest(_message.Message):
    __slots__ = ("node", "holdover_ms")
    NODE_FIELD_NUMBER: _ClassVar[int]
    HOLDOVER_MS_FIELD_NUMBER: _ClassVar[int]
    node: _common_pb2.NodeId
    holdover_ms: int
    def __init__(self, node: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., holdover_ms: _Optional[int] = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("granted", "valid_ms", "holder_domain", "retry_after_ms", "detail")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    VALID_MS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    valid_ms: int
    holder_domain: int
    retry_after_ms: int
    detail: str
    def __init__(self, granted: _Optional[bool] = ..., valid_ms: _Optional[int] = ..., holder_domain: _Optional[int] = ..., retry_after_ms: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class WitnessStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterVote(_message.Message):
    __slots__ = ("netid", "holder_domain", "valid_ms", "reserved_ms", "granted", "refused")
    NETID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    VALID_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    netid: int
    holder_domain: int
    valid_ms: int
    reserved_ms: int
    granted: int
    refused: int
    def __init__(self, netid: _Optional[int] = ..., holder_domain: _Optional[int] = ..., valid_ms: _Optional[int] = ..., reserved_ms: _Optional[int] = ..., granted: _Optional[int] = ..., refused: _Optional[int] = ...) -> None: ...

class WitnessStatusResponse(_message.Message):
    __slots__ = ("clusters", "startup_hold_ms", "vote_ms")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    STARTUP_HOLD_MS_FIELD_NUMBER: _ClassVar[int]
    VOTE_MS_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[ClusterVote]
    startup_hold_ms: int
    vote_ms: int
    def __init__(self, clusters: _Optional[_Iterable[_Union[ClusterVote, _Mapping]]] = ..., startup_hold_ms: _Optional[int] = ..., vote_ms: _Optional[int] = ...) -> None: ...
