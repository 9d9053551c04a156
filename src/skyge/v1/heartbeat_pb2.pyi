from skyge.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINK_STATE_UNSPECIFIED: _ClassVar[LinkState]
    LINK_UP: _ClassVar[LinkState]
    LINK_DOWN: _ClassVar[LinkState]

class LeaveReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEAVE_REASON_UNSPECIFIED: _ClassVar[LeaveReason]
    LEAVE_CLEAN: _ClassVar[LeaveReason]
    LEAVE_FAILED: _ClassVar[LeaveReason]
    LEAVE_RESTARTED: _ClassVar[LeaveReason]
LINK_STATE_UNSPECIFIED: LinkState
LINK_UP: LinkState
LINK_DOWN: LinkState
LEAVE_REASON_UNSPECIFIED: LeaveReason
LEAVE_CLEAN: LeaveReason
LEAVE_FAILED: LeaveReason
LEAVE_RESTARTED: LeaveReason

class GetIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Identity(_message.Message):
    __slots__ = ("node", "incarnation", "paths", "daemon", "grpc_ports")
    class GrpcPortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    DAEMON_FIELD_NUMBER: _ClassVar[int]
    GRPC_PORTS_FIELD_NUMBER: _ClassVar[int]
    node: _common_pb2.NodeId
    incarnation: int
    paths: _containers.RepeatedCompositeFieldContainer[LocalPath]
    daemon: _common_pb2.DaemonInfo
    grpc_ports: _containers.ScalarMap[str, int]
    def __init__(self, node: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., incarnation: _Optional[int] = ..., paths: _Optional[_Iterable[_Union[LocalPath, _Mapping]]] = ..., daemon: _Optional[_Union[_common_pb2.DaemonInfo, _Mapping]] = ..., grpc_ports: _Optional[_Mapping[str, int]] = ...) -> None: ...

class LocalPath(_message.Message):
    __slots__ = ("path", "nic", "hw_code", "addresses")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NIC_FIELD_NUMBER: _ClassVar[int]
    HW_CODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    path: int
    nic: str
    hw_code: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, path: _Optional[int] = ..., nic: _Optional[str] = ..., hw_code: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembershipView(_message.Message):
    __slots__ = ("view_id", "members")
    VIEW_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    view_id: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, view_id: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("node", "incarnation", "local", "paths", "joined_unix_ns", "grpc_ports")
    class GrpcPortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    JOINED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GRPC_PORTS_FIELD_NUMBER: _ClassVar[int]
    node: _common_pb2.NodeId
    incarnation: int
    local: bool
    paths: _containers.RepeatedCompositeFieldContainer[PeerPath]
    joined_unix_ns: int
    grpc_ports: _containers.ScalarMap[str, int]
    def __init__(self, node: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., incarnation: _Optional[int] = ..., local: _Optional[bool] = ..., paths: _Optional[_Iterable[_Union[PeerPath, _Mapping]]] = ..., joined_unix_ns: _Optional[int] = ..., grpc_ports: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PeerPath(_message.Message):
    __slots__ = ("path", "nic", "addresses", "up")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NIC_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    path: int
    nic: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    up: bool
    def __init__(self, path: _Optional[int] = ..., nic: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., up: _Optional[bool] = ...) -> None: ...

class ListLinksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLinksResponse(_message.Message):
    __slots__ = ("links",)
    LINKS_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[Link]
    def __init__(self, links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("peer_domain", "path", "local_nic", "peer_nic", "state", "rtt_ms", "loss_percent", "since_unix_ns", "received", "missed")
    PEER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LOCAL_NIC_FIELD_NUMBER: _ClassVar[int]
    PEER_NIC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    LOSS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    peer_domain: int
    path: int
    local_nic: str
    peer_nic: str
    state: LinkState
    rtt_ms: float
    loss_percent: float
    since_unix_ns: int
    received: int
    missed: int
    def __init__(self, peer_domain: _Optional[int] = ..., path: _Optional[int] = ..., local_nic: _Optional[str] = ..., peer_nic: _Optional[str] = ..., state: _Optional[_Union[LinkState, str]] = ..., rtt_ms: _Optional[float] = ..., loss_percent: _Optional[float] = ..., since_unix_ns: _Optional[int] = ..., received: _Optional[int] = ..., missed: _Optional[int] = ...) -> None: ...

class WatchMembershipRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembershipEvent(_message.Message):
    __slots__ = ("view_id", "time_unix_ns", "snapshot", "joined", "left", "link_changed")
    VIEW_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    LINK_CHANGED_FIELD_NUMBER: _ClassVar[int]
    view_id: int
    time_unix_ns: int
    snapshot: MembershipView
    joined: Member
    left: MemberLeft
    link_changed: Link
    def __init__(self, view_id: _Optional[int] = ..., time_unix_ns: _Optional[int] = ..., snapshot: _Optional[_Union[MembershipView, _Mapping]] = ..., joined: _Optional[_Union[Member, _Mapping]] = ..., left: _Optional[_Union[MemberLeft, _Mapping]] = ..., link_changed: _Optional[_Union[Link, _Mapping]] = ...) -> None: ...

class MemberLeft(_message.Message):
    __slots__ = ("member", "reason")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    member: Member
    reason: LeaveReason
    def __init__(self, member: _Optional[_Union[Member, _Mapping]] = ..., reason: _Optional[_Union[LeaveReason, str]] = ...) -> None: ...

class PublishNameRequest(_message.Message):
    __slots__ = ("type", "lower", "upper", "scope", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: int
    lower: int
    upper: int
    scope: _common_pb2.Scope
    value: bytes
    def __init__(self, type: _Optional[int] = ..., lower: _Optional[int] = ..., upper: _Optional[int] = ..., scope: _Optional[_Union[_common_pb2.Scope, str]] = ..., value: _Optional[bytes] = ...) -> None: ...

class Publication(_message.Message):
    __slots__ = ("type", "lower", "upper", "scope", "publisher", "publication_id", "value", "published_unix_ns")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    PUBLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    type: int
    lower: int
    upper: int
    scope: _common_pb2.Scope
    publisher: _common_pb2.NodeId
    publication_id: int
    value: bytes
    published_unix_ns: int
    def __init__(self, type: _Optional[int] = ..., lower: _Optional[int] = ..., upper: _Optional[int] = ..., scope: _Optional[_Union[_common_pb2.Scope, str]] = ..., publisher: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., publication_id: _Optional[int] = ..., value: _Optional[bytes] = ..., published_unix_ns: _Optional[int] = ...) -> None: ...

class WithdrawNameRequest(_message.Message):
    __slots__ = ("publication_id",)
    PUBLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    publication_id: int
    def __init__(self, publication_id: _Optional[int] = ...) -> None: ...

class WithdrawNameResponse(_message.Message):
    __slots__ = ("withdrawn",)
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    withdrawn: Publication
    def __init__(self, withdrawn: _Optional[_Union[Publication, _Mapping]] = ...) -> None: ...

class LookupNameRequest(_message.Message):
    __slots__ = ("type", "instance")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    type: int
    instance: int
    def __init__(self, type: _Optional[int] = ..., instance: _Optional[int] = ...) -> None: ...

class LookupNameResponse(_message.Message):
    __slots__ = ("publications",)
    PUBLICATIONS_FIELD_NUMBER: _ClassVar[int]
    publications: _containers.RepeatedCompositeFieldContainer[Publication]
    def __init__(self, publications: _Optional[_Iterable[_Union[Publication, _Mapping]]] = ...) -> None: ...

class WatchNamesRequest(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: int
    def __init__(self, type: _Optional[int] = ...) -> None: ...

class NameEvent(_message.Message):
    __slots__ = ("time_unix_ns", "snapshot", "published", "withdrawn")
    TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    time_unix_ns: int
    snapshot: NameSnapshot
    published: Publication
    withdrawn: Publication
    def __init__(self, time_unix_ns: _Optional[int] = ..., snapshot: _Optional[_Union[NameSnapshot, _Mapping]] = ..., published: _Optional[_Union[Publication, _Mapping]] = ..., withdrawn: _Optional[_Union[Publication, _Mapping]] = ...) -> None: ...

class NameSnapshot(_message.Message):
    __slots__ = ("publications",)
    PUBLICATIONS_FIELD_NUMBER: _ClassVar[int]
    publications: _containers.RepeatedCompositeFieldContainer[Publication]
    def __init__(self, publications: _Optional[_Iterable[_Union[Publication, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeartbeatStats(_message.Message):
    __slots__ = ("paths", "dropped", "membership_changes")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PATHS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_CHANGES_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedCompositeFieldContainer[PathStats]
    dropped: _containers.ScalarMap[str, int]
    membership_changes: int
    def __init__(self, paths: _Optional[_Iterable[_Union[PathStats, _Mapping]]] = ..., dropped: _Optional[_Mapping[str, int]] = ..., membership_changes: _Optional[int] = ...) -> None: ...

class PathStats(_message.Message):
    __slots__ = ("path", "nic", "datagrams_received", "datagrams_sent", "received_bytes", "sent_bytes", "send_errors")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NIC_FIELD_NUMBER: _ClassVar[int]
    DATAGRAMS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DATAGRAMS_SENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SEND_ERRORS_FIELD_NUMBER: _ClassVar[int]
    path: int
    nic: str
    datagrams_received: int
    datagrams_sent: int
    received_bytes: int
    sent_bytes: int
    send_errors: int
    def __init__(self, path: _Optional[int] = ..., nic: _Optional[str] = ..., datagrams_received: _Optional[int] = ..., datagrams_sent: _Optional[int] = ..., received_bytes: _Optional[int] = ..., sent_bytes: _Optional[int] = ..., send_errors: _Optional[int] = ...) -> None: ...
