from skyge.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WaitOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WAIT_ORDER_UNSPECIFIED: _ClassVar[WaitOrder]
    WAIT_RANDOM: _ClassVar[WaitOrder]
    WAIT_FIFO: _ClassVar[WaitOrder]
    WAIT_STACK: _ClassVar[WaitOrder]
    WAIT_PRIORITY: _ClassVar[WaitOrder]

class FailReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAIL_REASON_UNSPECIFIED: _ClassVar[FailReason]
    FAIL_TIMEOUT: _ClassVar[FailReason]
    FAIL_BUSY: _ClassVar[FailReason]
    FAIL_NO_QUORUM: _ClassVar[FailReason]
    FAIL_INVALID: _ClassVar[FailReason]

class LostReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOST_REASON_UNSPECIFIED: _ClassVar[LostReason]
    LOST_NO_QUORUM: _ClassVar[LostReason]
    LOST_NODE_LEFT: _ClassVar[LostReason]
    LOST_AUTHORITY_CHANGE: _ClassVar[LostReason]
WAIT_ORDER_UNSPECIFIED: WaitOrder
WAIT_RANDOM: WaitOrder
WAIT_FIFO: WaitOrder
WAIT_STACK: WaitOrder
WAIT_PRIORITY: WaitOrder
FAIL_REASON_UNSPECIFIED: FailReason
FAIL_TIMEOUT: FailReason
FAIL_BUSY: FailReason
FAIL_NO_QUORUM: FailReason
FAIL_INVALID: FailReason
LOST_REASON_UNSPECIFIED: LostReason
LOST_NO_QUORUM: LostReason
LOST_NODE_LEFT: LostReason
LOST_AUTHORITY_CHANGE: LostReason

class SessionRequest(_message.Message):
    __slots__ = ("open", "acquire", "release")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    open: Open
    acquire: Acquire
    release: Release
    def __init__(self, open: _Optional[_Union[Open, _Mapping]] = ..., acquire: _Optional[_Union[Acquire, _Mapping]] = ..., release: _Optional[_Union[Release, _Mapping]] = ...) -> None: ...

class Open(_message.Message):
    __slots__ = ("label", "client_pid", "keep_holds")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PID_FIELD_NUMBER: _ClassVar[int]
    KEEP_HOLDS_FIELD_NUMBER: _ClassVar[int]
    label: str
    client_pid: int
    keep_holds: bool
    def __init__(self, label: _Optional[str] = ..., client_pid: _Optional[int] = ..., keep_holds: _Optional[bool] = ...) -> None: ...

class Acquire(_message.Message):
    __slots__ = ("slot", "lock", "timeout_ms", "try_only", "priority")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TRY_ONLY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    timeout_ms: int
    try_only: bool
    priority: int
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., try_only: _Optional[bool] = ..., priority: _Optional[int] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("slot", "lock")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("opened", "granted", "queued", "failed", "released", "lost", "renewed")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    opened: Opened
    granted: Granted
    queued: Queued
    failed: AcquireFailed
    released: Released
    lost: Lost
    renewed: Renewed
    def __init__(self, opened: _Optional[_Union[Opened, _Mapping]] = ..., granted: _Optional[_Union[Granted, _Mapping]] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., failed: _Optional[_Union[AcquireFailed, _Mapping]] = ..., released: _Optional[_Union[Released, _Mapping]] = ..., lost: _Optional[_Union[Lost, _Mapping]] = ..., renewed: _Optional[_Union[Renewed, _Mapping]] = ...) -> None: ...

class Renewed(_message.Message):
    __slots__ = ("valid_until_boot_ns",)
    VALID_UNTIL_BOOT_NS_FIELD_NUMBER: _ClassVar[int]
    valid_until_boot_ns: int
    def __init__(self, valid_until_boot_ns: _Optional[int] = ...) -> None: ...

class Opened(_message.Message):
    __slots__ = ("session_id", "node", "adopted")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    node: _common_pb2.NodeId
    adopted: _containers.RepeatedCompositeFieldContainer[Granted]
    def __init__(self, session_id: _Optional[int] = ..., node: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., adopted: _Optional[_Iterable[_Union[Granted, _Mapping]]] = ...) -> None: ...

class Granted(_message.Message):
    __slots__ = ("slot", "lock", "fencing_token", "valid_until_boot_ns")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_BOOT_NS_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    fencing_token: int
    valid_until_boot_ns: int
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ..., fencing_token: _Optional[int] = ..., valid_until_boot_ns: _Optional[int] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("slot", "lock", "position")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    position: int
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class AcquireFailed(_message.Message):
    __slots__ = ("slot", "lock", "reason", "detail")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    reason: FailReason
    detail: str
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ..., reason: _Optional[_Union[FailReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class Released(_message.Message):
    __slots__ = ("slot", "lock")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ...) -> None: ...

class Lost(_message.Message):
    __slots__ = ("slot", "lock", "reason", "detail")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    reason: LostReason
    detail: str
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ..., reason: _Optional[_Union[LostReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("slot", "lock")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ...) -> None: ...

class LockState(_message.Message):
    __slots__ = ("slot", "lock", "order", "holder", "waiters")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    WAITERS_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    order: WaitOrder
    holder: Holder
    waiters: _containers.RepeatedCompositeFieldContainer[Holder]
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ..., order: _Optional[_Union[WaitOrder, str]] = ..., holder: _Optional[_Union[Holder, _Mapping]] = ..., waiters: _Optional[_Iterable[_Union[Holder, _Mapping]]] = ...) -> None: ...

class Holder(_message.Message):
    __slots__ = ("session_id", "node", "label", "fencing_token", "granted_unix_ns", "queued_unix_ns", "priority", "client_pid", "orphaned")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GRANTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PID_FIELD_NUMBER: _ClassVar[int]
    ORPHANED_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    node: _common_pb2.NodeId
    label: str
    fencing_token: int
    granted_unix_ns: int
    queued_unix_ns: int
    priority: int
    client_pid: int
    orphaned: bool
    def __init__(self, session_id: _Optional[int] = ..., node: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., label: _Optional[str] = ..., fencing_token: _Optional[int] = ..., granted_unix_ns: _Optional[int] = ..., queued_unix_ns: _Optional[int] = ..., priority: _Optional[int] = ..., client_pid: _Optional[int] = ..., orphaned: _Optional[bool] = ...) -> None: ...

class ListLocksRequest(_message.Message):
    __slots__ = ("slot",)
    SLOT_FIELD_NUMBER: _ClassVar[int]
    slot: int
    def __init__(self, slot: _Optional[int] = ...) -> None: ...

class ListLocksResponse(_message.Message):
    __slots__ = ("locks",)
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[LockState]
    def __init__(self, locks: _Optional[_Iterable[_Union[LockState, _Mapping]]] = ...) -> None: ...

class GetAuthorityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuthorityInfo(_message.Message):
    __slots__ = ("authority", "term", "has_quorum", "expected_votes", "member_domains", "quorum_rule", "unprotected")
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VOTES_FIELD_NUMBER: _ClassVar[int]
    MEMBER_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_RULE_FIELD_NUMBER: _ClassVar[int]
    UNPROTECTED_FIELD_NUMBER: _ClassVar[int]
    authority: _common_pb2.NodeId
    term: int
    has_quorum: bool
    expected_votes: int
    member_domains: _containers.RepeatedScalarFieldContainer[int]
    quorum_rule: str
    unprotected: str
    def __init__(self, authority: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., term: _Optional[int] = ..., has_quorum: _Optional[bool] = ..., expected_votes: _Optional[int] = ..., member_domains: _Optional[_Iterable[int]] = ..., quorum_rule: _Optional[str] = ..., unprotected: _Optional[str] = ...) -> None: ...

class SetExpectedVotesRequest(_message.Message):
    __slots__ = ("expected_votes",)
    EXPECTED_VOTES_FIELD_NUMBER: _ClassVar[int]
    expected_votes: int
    def __init__(self, expected_votes: _Optional[int] = ...) -> None: ...

class CampaignRequest(_message.Message):
    __slots__ = ("group", "candidate")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    group: str
    candidate: str
    def __init__(self, group: _Optional[str] = ..., candidate: _Optional[str] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class LeaderEvent(_message.Message):
    __slots__ = ("group", "leader", "leader_node", "term", "elected")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ELECTED_FIELD_NUMBER: _ClassVar[int]
    group: str
    leader: str
    leader_node: _common_pb2.NodeId
    term: int
    elected: bool
    def __init__(self, group: _Optional[str] = ..., leader: _Optional[str] = ..., leader_node: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., term: _Optional[int] = ..., elected: _Optional[bool] = ...) -> None: ...
