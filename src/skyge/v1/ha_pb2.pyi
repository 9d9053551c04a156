from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TakeoverOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TAKEOVER_ORDER_UNSPECIFIED: _ClassVar[TakeoverOrder]
    TAKEOVER_RANDOM: _ClassVar[TakeoverOrder]
    TAKEOVER_FIFO: _ClassVar[TakeoverOrder]
    TAKEOVER_STACK: _ClassVar[TakeoverOrder]

class ServiceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_STATE_UNSPECIFIED: _ClassVar[ServiceState]
    SERVICE_STOPPED: _ClassVar[ServiceState]
    SERVICE_WAITING: _ClassVar[ServiceState]
    SERVICE_STARTING: _ClassVar[ServiceState]
    SERVICE_RUNNING: _ClassVar[ServiceState]
    SERVICE_STOPPING: _ClassVar[ServiceState]
    SERVICE_RELEASED: _ClassVar[ServiceState]
    SERVICE_FAILED: _ClassVar[ServiceState]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_ADD: _ClassVar[Action]
    ACTION_START: _ClassVar[Action]
    ACTION_STOP: _ClassVar[Action]
    ACTION_RELEASE: _ClassVar[Action]
    ACTION_REMOVE: _ClassVar[Action]
    ACTION_SWITCH: _ClassVar[Action]
TAKEOVER_ORDER_UNSPECIFIED: TakeoverOrder
TAKEOVER_RANDOM: TakeoverOrder
TAKEOVER_FIFO: TakeoverOrder
TAKEOVER_STACK: TakeoverOrder
SERVICE_STATE_UNSPECIFIED: ServiceState
SERVICE_STOPPED: ServiceState
SERVICE_WAITING: ServiceState
SERVICE_STARTING: ServiceState
SERVICE_RUNNING: ServiceState
SERVICE_STOPPING: ServiceState
SERVICE_RELEASED: ServiceState
SERVICE_FAILED: ServiceState
ACTION_UNSPECIFIED: Action
ACTION_ADD: Action
ACTION_START: Action
ACTION_STOP: Action
ACTION_RELEASE: Action
ACTION_REMOVE: Action
ACTION_SWITCH: Action

class ServiceConfig(_message.Message):
    __slots__ = ("type", "slot", "name", "desc", "script", "fips", "stores", "start_timeout_s", "stop_timeout_s", "release_timeout_s", "onstart", "check_interval_s", "check_failures", "force_load", "force_reboot", "pulse_timeout_ms", "pidfile", "domain", "config_path", "restarts", "failure_backoff_s", "failure_backoff_max_s", "failure_timeout_s")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    FIPS_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    START_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    STOP_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    ONSTART_FIELD_NUMBER: _ClassVar[int]
    CHECK_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    CHECK_FAILURES_FIELD_NUMBER: _ClassVar[int]
    FORCE_LOAD_FIELD_NUMBER: _ClassVar[int]
    FORCE_REBOOT_FIELD_NUMBER: _ClassVar[int]
    PULSE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PIDFILE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_BACKOFF_S_FIELD_NUMBER: _ClassVar[int]
    FAILURE_BACKOFF_MAX_S_FIELD_NUMBER: _ClassVar[int]
    FAILURE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    type: TakeoverOrder
    slot: int
    name: str
    desc: str
    script: str
    fips: _containers.RepeatedCompositeFieldContainer[FloatingIp]
    stores: _containers.RepeatedCompositeFieldContainer[Store]
    start_timeout_s: int
    stop_timeout_s: int
    release_timeout_s: int
    onstart: bool
    check_interval_s: int
    check_failures: int
    force_load: bool
    force_reboot: bool
    pulse_timeout_ms: int
    pidfile: str
    domain: int
    config_path: str
    restarts: int
    failure_backoff_s: int
    failure_backoff_max_s: int
    failure_timeout_s: int
    def __init__(self, type: _Optional[_Union[TakeoverOrder, str]] = ..., slot: _Optional[int] = ..., name: _Optional[str] = ..., desc: _Optional[str] = ..., script: _Optional[str] = ..., fips: _Optional[_Iterable[_Union[FloatingIp, _Mapping]]] = ..., stores: _Optional[_Iterable[_Union[Store, _Mapping]]] = ..., start_timeout_s: _Optional[int] = ..., stop_timeout_s: _Optional[int] = ..., release_timeout_s: _Optional[int] = ..., onstart: _Optional[bool] = ..., check_interval_s: _Optional[int] = ..., check_failures: _Optional[int] = ..., force_load: _Optional[bool] = ..., force_reboot: _Optional[bool] = ..., pulse_timeout_ms: _Optional[int] = ..., pidfile: _Optional[str] = ..., domain: _Optional[int] = ..., config_path: _Optional[str] = ..., restarts: _Optional[int] = ..., failure_backoff_s: _Optional[int] = ..., failure_backoff_max_s: _Optional[int] = ..., failure_timeout_s: _Optional[int] = ...) -> None: ...

class FloatingIp(_message.Message):
    __slots__ = ("nic", "ip", "netmask", "broadcast", "label")
    NIC_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    NETMASK_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    nic: str
    ip: str
    netmask: str
    broadcast: str
    label: str
    def __init__(self, nic: _Optional[str] = ..., ip: _Optional[str] = ..., netmask: _Optional[str] = ..., broadcast: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class Store(_message.Message):
    __slots__ = ("array_ip", "device", "mountpoint", "mode", "user", "group")
    ARRAY_IP_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MOUNTPOINT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    array_ip: str
    device: str
    mountpoint: str
    mode: int
    user: str
    group: str
    def __init__(self, array_ip: _Optional[str] = ..., device: _Optional[str] = ..., mountpoint: _Optional[str] = ..., mode: _Optional[int] = ..., user: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: int
    def __init__(self, domain: _Optional[int] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceConfig]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceConfig, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("services", "warnings", "maintenance_domains")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    maintenance_domains: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., maintenance_domains: _Optional[_Iterable[int]] = ...) -> None: ...

class ServiceStatus(_message.Message):
    __slots__ = ("type", "slot", "name", "state", "active_domain", "waiting_domains", "since_unix_ns", "fencing_token", "reason", "failed_checks", "fail_count", "nodes")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    WAITING_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    FAIL_COUNT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    type: TakeoverOrder
    slot: int
    name: str
    state: ServiceState
    active_domain: int
    waiting_domains: _containers.RepeatedScalarFieldContainer[int]
    since_unix_ns: int
    fencing_token: int
    reason: str
    failed_checks: int
    fail_count: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeServiceStatus]
    def __init__(self, type: _Optional[_Union[TakeoverOrder, str]] = ..., slot: _Optional[int] = ..., name: _Optional[str] = ..., state: _Optional[_Union[ServiceState, str]] = ..., active_domain: _Optional[int] = ..., waiting_domains: _Optional[_Iterable[int]] = ..., since_unix_ns: _Optional[int] = ..., fencing_token: _Optional[int] = ..., reason: _Optional[str] = ..., failed_checks: _Optional[int] = ..., fail_count: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeServiceStatus, _Mapping]]] = ...) -> None: ...

class NodeServiceStatus(_message.Message):
    __slots__ = ("domain", "state", "since_unix_ns", "reason", "holds_lock", "fencing_token", "failed_checks", "fail_count", "unmanaged", "last_start_ms")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HOLDS_LOCK_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    FAIL_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNMANAGED_FIELD_NUMBER: _ClassVar[int]
    LAST_START_MS_FIELD_NUMBER: _ClassVar[int]
    domain: int
    state: ServiceState
    since_unix_ns: int
    reason: str
    holds_lock: bool
    fencing_token: int
    failed_checks: int
    fail_count: int
    unmanaged: bool
    last_start_ms: int
    def __init__(self, domain: _Optional[int] = ..., state: _Optional[_Union[ServiceState, str]] = ..., since_unix_ns: _Optional[int] = ..., reason: _Optional[str] = ..., holds_lock: _Optional[bool] = ..., fencing_token: _Optional[int] = ..., failed_checks: _Optional[int] = ..., fail_count: _Optional[int] = ..., unmanaged: _Optional[bool] = ..., last_start_ms: _Optional[int] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusEvent(_message.Message):
    __slots__ = ("time_unix_ns", "snapshot", "changed", "removed")
    TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    time_unix_ns: int
    snapshot: StatusSnapshot
    changed: ServiceStatus
    removed: ServiceStatus
    def __init__(self, time_unix_ns: _Optional[int] = ..., snapshot: _Optional[_Union[StatusSnapshot, _Mapping]] = ..., changed: _Optional[_Union[ServiceStatus, _Mapping]] = ..., removed: _Optional[_Union[ServiceStatus, _Mapping]] = ...) -> None: ...

class StatusSnapshot(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ...) -> None: ...

class CommandRequest(_message.Message):
    __slots__ = ("domain", "type", "slot", "action")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    domain: int
    type: TakeoverOrder
    slot: int
    action: Action
    def __init__(self, domain: _Optional[int] = ..., type: _Optional[_Union[TakeoverOrder, str]] = ..., slot: _Optional[int] = ..., action: _Optional[_Union[Action, str]] = ...) -> None: ...

class CommandReply(_message.Message):
    __slots__ = ("status", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: ServiceStatus
    message: str
    def __init__(self, status: _Optional[_Union[ServiceStatus, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class StopAllRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopAllResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ...) -> None: ...

class PulseRequest(_message.Message):
    __slots__ = ("type", "slot", "name")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    type: TakeoverOrder
    slot: int
    name: str
    def __init__(self, type: _Optional[_Union[TakeoverOrder, str]] = ..., slot: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class PulseResponse(_message.Message):
    __slots__ = ("pulse_timeout_ms", "deadline_unix_ns")
    PULSE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    pulse_timeout_ms: int
    deadline_unix_ns: int
    def __init__(self, pulse_timeout_ms: _Optional[int] = ..., deadline_unix_ns: _Optional[int] = ...) -> None: ...

class SetRefuseNewRequest(_message.Message):
    __slots__ = ("refuse", "reason")
    REFUSE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    refuse: bool
    reason: str
    def __init__(self, refuse: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class SetRefuseNewResponse(_message.Message):
    __slots__ = ("refusing", "services_affected")
    REFUSING_FIELD_NUMBER: _ClassVar[int]
    SERVICES_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    refusing: bool
    services_affected: int
    def __init__(self, refusing: _Optional[bool] = ..., services_affected: _Optional[int] = ...) -> None: ...

class SetMaintenanceRequest(_message.Message):
    __slots__ = ("on", "domain", "all_members")
    ON_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ALL_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    on: bool
    domain: int
    all_members: bool
    def __init__(self, on: _Optional[bool] = ..., domain: _Optional[int] = ..., all_members: _Optional[bool] = ...) -> None: ...

class SetMaintenanceResponse(_message.Message):
    __slots__ = ("maintenance_domains",)
    MAINTENANCE_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    maintenance_domains: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, maintenance_domains: _Optional[_Iterable[int]] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatusResponse(_message.Message):
    __slots__ = ("domain", "services", "maintenance")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_FIELD_NUMBER: _ClassVar[int]
    domain: int
    services: _containers.RepeatedCompositeFieldContainer[LocalService]
    maintenance: bool
    def __init__(self, domain: _Optional[int] = ..., services: _Optional[_Iterable[_Union[LocalService, _Mapping]]] = ..., maintenance: _Optional[bool] = ...) -> None: ...

class LocalService(_message.Message):
    __slots__ = ("config", "status")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    config: ServiceConfig
    status: NodeServiceStatus
    def __init__(self, config: _Optional[_Union[ServiceConfig, _Mapping]] = ..., status: _Optional[_Union[NodeServiceStatus, _Mapping]] = ...) -> None: ...

class StopLocalRequest(_message.Message):
    __slots__ = ("waiting_only",)
    WAITING_ONLY_FIELD_NUMBER: _ClassVar[int]
    waiting_only: bool
    def __init__(self, waiting_only: _Optional[bool] = ...) -> None: ...

class StopLocalResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[LocalService]
    def __init__(self, services: _Optional[_Iterable[_Union[LocalService, _Mapping]]] = ...) -> None: ...

class SetLocalMaintenanceRequest(_message.Message):
    __slots__ = ("on",)
    ON_FIELD_NUMBER: _ClassVar[int]
    on: bool
    def __init__(self, on: _Optional[bool] = ...) -> None: ...

class SetLocalMaintenanceResponse(_message.Message):
    __slots__ = ("maintenance",)
    MAINTENANCE_FIELD_NUMBER: _ClassVar[int]
    maintenance: bool
    def __init__(self, maintenance: _Optional[bool] = ...) -> None: ...
