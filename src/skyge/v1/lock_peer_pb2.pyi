from skyge.v1 import common_pb2 as _common_pb2
from skyge.v1 import lock_pb2 as _lock_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerDatagram(_message.Message):
    __slots__ = ("netid", "from_domain", "from_instance", "to_domain", "to_instance", "beat", "first_seq", "data", "data_ack")
    NETID_FIELD_NUMBER: _ClassVar[int]
    FROM_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    FROM_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TO_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TO_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    BEAT_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_ACK_FIELD_NUMBER: _ClassVar[int]
    netid: int
    from_domain: int
    from_instance: int
    to_domain: int
    to_instance: int
    beat: Beat
    first_seq: int
    data: _containers.RepeatedCompositeFieldContainer[PeerData]
    data_ack: int
    def __init__(self, netid: _Optional[int] = ..., from_domain: _Optional[int] = ..., from_instance: _Optional[int] = ..., to_domain: _Optional[int] = ..., to_instance: _Optional[int] = ..., beat: _Optional[_Union[Beat, _Mapping]] = ..., first_seq: _Optional[int] = ..., data: _Optional[_Iterable[_Union[PeerData, _Mapping]]] = ..., data_ack: _Optional[int] = ...) -> None: ...

class Beat(_message.Message):
    __slots__ = ("seq", "candidate_term", "established", "round", "answer_seq", "vote", "vote_for", "highest_term", "highest_term_owner", "token_floor", "last_authority", "last_authority_term", "promise_end_us", "has_promise_end", "expected", "expected_version", "confirm_seq", "report_term", "report_epoch", "token_reserve", "view_bits", "leaving", "fenced", "live_bits")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_TERM_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ANSWER_SEQ_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    VOTE_FOR_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_TERM_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_TERM_OWNER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FLOOR_FIELD_NUMBER: _ClassVar[int]
    LAST_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    LAST_AUTHORITY_TERM_FIELD_NUMBER: _ClassVar[int]
    PROMISE_END_US_FIELD_NUMBER: _ClassVar[int]
    HAS_PROMISE_END_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_SEQ_FIELD_NUMBER: _ClassVar[int]
    REPORT_TERM_FIELD_NUMBER: _ClassVar[int]
    REPORT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOKEN_RESERVE_FIELD_NUMBER: _ClassVar[int]
    VIEW_BITS_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    LIVE_BITS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    candidate_term: int
    established: bool
    round: bool
    answer_seq: int
    vote: bool
    vote_for: int
    highest_term: int
    highest_term_owner: int
    token_floor: int
    last_authority: int
    last_authority_term: int
    promise_end_us: int
    has_promise_end: bool
    expected: int
    expected_version: int
    confirm_seq: int
    report_term: int
    report_epoch: int
    token_reserve: int
    view_bits: int
    leaving: bool
    fenced: _containers.RepeatedScalarFieldContainer[int]
    live_bits: int
    def __init__(self, seq: _Optional[int] = ..., candidate_term: _Optional[int] = ..., established: _Optional[bool] = ..., round: _Optional[bool] = ..., answer_seq: _Optional[int] = ..., vote: _Optional[bool] = ..., vote_for: _Optional[int] = ..., highest_term: _Optional[int] = ..., highest_term_owner: _Optional[int] = ..., token_floor: _Optional[int] = ..., last_authority: _Optional[int] = ..., last_authority_term: _Optional[int] = ..., promise_end_us: _Optional[int] = ..., has_promise_end: _Optional[bool] = ..., expected: _Optional[int] = ..., expected_version: _Optional[int] = ..., confirm_seq: _Optional[int] = ..., report_term: _Optional[int] = ..., report_epoch: _Optional[int] = ..., token_reserve: _Optional[int] = ..., view_bits: _Optional[int] = ..., leaving: _Optional[bool] = ..., fenced: _Optional[_Iterable[int]] = ..., live_bits: _Optional[int] = ...) -> None: ...

class PeerData(_message.Message):
    __slots__ = ("acquire", "release", "end_session", "report", "grant", "queued", "failed", "revoke", "watch", "leader")
    ACQUIRE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    END_SESSION_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    acquire: PeerAcquire
    release: PeerRelease
    end_session: PeerEndSession
    report: PeerReport
    grant: PeerGrant
    queued: PeerQueued
    failed: PeerFailed
    revoke: PeerRevoke
    watch: PeerWatch
    leader: PeerLeader
    def __init__(self, acquire: _Optional[_Union[PeerAcquire, _Mapping]] = ..., release: _Optional[_Union[PeerRelease, _Mapping]] = ..., end_session: _Optional[_Union[PeerEndSession, _Mapping]] = ..., report: _Optional[_Union[PeerReport, _Mapping]] = ..., grant: _Optional[_Union[PeerGrant, _Mapping]] = ..., queued: _Optional[_Union[PeerQueued, _Mapping]] = ..., failed: _Optional[_Union[PeerFailed, _Mapping]] = ..., revoke: _Optional[_Union[PeerRevoke, _Mapping]] = ..., watch: _Optional[_Union[PeerWatch, _Mapping]] = ..., leader: _Optional[_Union[PeerLeader, _Mapping]] = ...) -> None: ...

class PeerLockName(_message.Message):
    __slots__ = ("slot", "lock", "group")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lock: int
    group: str
    def __init__(self, slot: _Optional[int] = ..., lock: _Optional[int] = ..., group: _Optional[str] = ...) -> None: ...

class PeerAcquire(_message.Message):
    __slots__ = ("term", "session_id", "name", "priority", "try_only", "label", "client_pid", "request_id")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TRY_ONLY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    term: int
    session_id: int
    name: PeerLockName
    priority: int
    try_only: bool
    label: str
    client_pid: int
    request_id: int
    def __init__(self, term: _Optional[int] = ..., session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., priority: _Optional[int] = ..., try_only: _Optional[bool] = ..., label: _Optional[str] = ..., client_pid: _Optional[int] = ..., request_id: _Optional[int] = ...) -> None: ...

class PeerRelease(_message.Message):
    __slots__ = ("term", "session_id", "name", "request_id")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    term: int
    session_id: int
    name: PeerLockName
    request_id: int
    def __init__(self, term: _Optional[int] = ..., session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., request_id: _Optional[int] = ...) -> None: ...

class PeerEndSession(_message.Message):
    __slots__ = ("term", "session_id")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    term: int
    session_id: int
    def __init__(self, term: _Optional[int] = ..., session_id: _Optional[int] = ...) -> None: ...

class PeerReport(_message.Message):
    __slots__ = ("term", "epoch", "part", "last", "held", "waiting", "watched_groups", "generation")
    TERM_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    WATCHED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    term: int
    epoch: int
    part: int
    last: bool
    held: _containers.RepeatedCompositeFieldContainer[PeerHeld]
    waiting: _containers.RepeatedCompositeFieldContainer[PeerWaiting]
    watched_groups: _containers.RepeatedScalarFieldContainer[str]
    generation: int
    def __init__(self, term: _Optional[int] = ..., epoch: _Optional[int] = ..., part: _Optional[int] = ..., last: _Optional[bool] = ..., held: _Optional[_Iterable[_Union[PeerHeld, _Mapping]]] = ..., waiting: _Optional[_Iterable[_Union[PeerWaiting, _Mapping]]] = ..., watched_groups: _Optional[_Iterable[str]] = ..., generation: _Optional[int] = ...) -> None: ...

class PeerHeld(_message.Message):
    __slots__ = ("session_id", "name", "token", "granted_unix_ns", "label", "client_pid", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    GRANTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    name: PeerLockName
    token: int
    granted_unix_ns: int
    label: str
    client_pid: int
    request_id: int
    def __init__(self, session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., token: _Optional[int] = ..., granted_unix_ns: _Optional[int] = ..., label: _Optional[str] = ..., client_pid: _Optional[int] = ..., request_id: _Optional[int] = ...) -> None: ...

class PeerWaiting(_message.Message):
    __slots__ = ("session_id", "name", "key", "priority", "queued_unix_ns", "label", "client_pid", "try_only", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PID_FIELD_NUMBER: _ClassVar[int]
    TRY_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    name: PeerLockName
    key: int
    priority: int
    queued_unix_ns: int
    label: str
    client_pid: int
    try_only: bool
    request_id: int
    def __init__(self, session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., key: _Optional[int] = ..., priority: _Optional[int] = ..., queued_unix_ns: _Optional[int] = ..., label: _Optional[str] = ..., client_pid: _Optional[int] = ..., try_only: _Optional[bool] = ..., request_id: _Optional[int] = ...) -> None: ...

class PeerGrant(_message.Message):
    __slots__ = ("term", "session_id", "name", "token", "granted_unix_ns", "request_id", "generation")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    GRANTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    term: int
    session_id: int
    name: PeerLockName
    token: int
    granted_unix_ns: int
    request_id: int
    generation: int
    def __init__(self, term: _Optional[int] = ..., session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., token: _Optional[int] = ..., granted_unix_ns: _Optional[int] = ..., request_id: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class PeerQueued(_message.Message):
    __slots__ = ("term", "session_id", "name", "key", "position", "queued_unix_ns", "request_id", "generation")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    term: int
    session_id: int
    name: PeerLockName
    key: int
    position: int
    queued_unix_ns: int
    request_id: int
    generation: int
    def __init__(self, term: _Optional[int] = ..., session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., key: _Optional[int] = ..., position: _Optional[int] = ..., queued_unix_ns: _Optional[int] = ..., request_id: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class PeerFailed(_message.Message):
    __slots__ = ("term", "session_id", "name", "reason", "detail", "request_id", "generation")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    term: int
    session_id: int
    name: PeerLockName
    reason: _lock_pb2.FailReason
    detail: str
    request_id: int
    generation: int
    def __init__(self, term: _Optional[int] = ..., session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., reason: _Optional[_Union[_lock_pb2.FailReason, str]] = ..., detail: _Optional[str] = ..., request_id: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class PeerRevoke(_message.Message):
    __slots__ = ("term", "session_id", "name", "reason", "detail", "request_id", "generation")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    term: int
    session_id: int
    name: PeerLockName
    reason: _lock_pb2.LostReason
    detail: str
    request_id: int
    generation: int
    def __init__(self, term: _Optional[int] = ..., session_id: _Optional[int] = ..., name: _Optional[_Union[PeerLockName, _Mapping]] = ..., reason: _Optional[_Union[_lock_pb2.LostReason, str]] = ..., detail: _Optional[str] = ..., request_id: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class PeerWatch(_message.Message):
    __slots__ = ("term", "group", "on")
    TERM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ON_FIELD_NUMBER: _ClassVar[int]
    term: int
    group: str
    on: bool
    def __init__(self, term: _Optional[int] = ..., group: _Optional[str] = ..., on: _Optional[bool] = ...) -> None: ...

class PeerLeader(_message.Message):
    __slots__ = ("term", "group", "session_id", "candidate", "domain", "token")
    TERM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    term: int
    group: str
    session_id: int
    candidate: str
    domain: int
    token: int
    def __init__(self, term: _Optional[int] = ..., group: _Optional[str] = ..., session_id: _Optional[int] = ..., candidate: _Optional[str] = ..., domain: _Optional[int] = ..., token: _Optional[int] = ...) -> None: ...

class GetPeerStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerState(_message.Message):
    __slots__ = ("node", "instance", "vote_for", "promise_left_ms", "candidate", "established", "authority_lease_left_ms", "active", "authority", "term", "hold_lease_left_ms", "expected", "quorum", "highest_term", "token_floor", "view", "peers", "local_holds", "local_waits", "sessions", "lone_ok_left_ms")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    VOTE_FOR_FIELD_NUMBER: _ClassVar[int]
    PROMISE_LEFT_MS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_LEASE_LEFT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    HOLD_LEASE_LEFT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_TERM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FLOOR_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_HOLDS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_WAITS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    LONE_OK_LEFT_MS_FIELD_NUMBER: _ClassVar[int]
    node: _common_pb2.NodeId
    instance: int
    vote_for: int
    promise_left_ms: float
    candidate: bool
    established: bool
    authority_lease_left_ms: float
    active: bool
    authority: int
    term: int
    hold_lease_left_ms: float
    expected: int
    quorum: int
    highest_term: int
    token_floor: int
    view: _containers.RepeatedScalarFieldContainer[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerLinkState]
    local_holds: int
    local_waits: int
    sessions: int
    lone_ok_left_ms: float
    def __init__(self, node: _Optional[_Union[_common_pb2.NodeId, _Mapping]] = ..., instance: _Optional[int] = ..., vote_for: _Optional[int] = ..., promise_left_ms: _Optional[float] = ..., candidate: _Optional[bool] = ..., established: _Optional[bool] = ..., authority_lease_left_ms: _Optional[float] = ..., active: _Optional[bool] = ..., authority: _Optional[int] = ..., term: _Optional[int] = ..., hold_lease_left_ms: _Optional[float] = ..., expected: _Optional[int] = ..., quorum: _Optional[int] = ..., highest_term: _Optional[int] = ..., token_floor: _Optional[int] = ..., view: _Optional[_Iterable[int]] = ..., peers: _Optional[_Iterable[_Union[PeerLinkState, _Mapping]]] = ..., local_holds: _Optional[int] = ..., local_waits: _Optional[int] = ..., sessions: _Optional[int] = ..., lone_ok_left_ms: _Optional[float] = ...) -> None: ...

class PeerLinkState(_message.Message):
    __slots__ = ("domain", "instance", "heard_ms_ago", "unacked", "vote_for", "relayed_ms_ago")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    HEARD_MS_AGO_FIELD_NUMBER: _ClassVar[int]
    UNACKED_FIELD_NUMBER: _ClassVar[int]
    VOTE_FOR_FIELD_NUMBER: _ClassVar[int]
    RELAYED_MS_AGO_FIELD_NUMBER: _ClassVar[int]
    domain: int
    instance: int
    heard_ms_ago: _containers.RepeatedScalarFieldContainer[float]
    unacked: int
    vote_for: int
    relayed_ms_ago: float
    def __init__(self, domain: _Optional[int] = ..., instance: _Optional[int] = ..., heard_ms_ago: _Optional[_Iterable[float]] = ..., unacked: _Optional[int] = ..., vote_for: _Optional[int] = ..., relayed_ms_ago: _Optional[float] = ...) -> None: ...
