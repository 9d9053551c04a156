from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_UNSPECIFIED: _ClassVar[Scope]
    SCOPE_NODE: _ClassVar[Scope]
    SCOPE_CLUSTER: _ClassVar[Scope]

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_EMERG: _ClassVar[LogLevel]
    LOG_ALERT: _ClassVar[LogLevel]
    LOG_CRIT: _ClassVar[LogLevel]
    LOG_ERR: _ClassVar[LogLevel]
    LOG_WARNING: _ClassVar[LogLevel]
    LOG_NOTICE: _ClassVar[LogLevel]
    LOG_INFO: _ClassVar[LogLevel]
    LOG_DEBUG: _ClassVar[LogLevel]
SCOPE_UNSPECIFIED: Scope
SCOPE_NODE: Scope
SCOPE_CLUSTER: Scope
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_EMERG: LogLevel
LOG_ALERT: LogLevel
LOG_CRIT: LogLevel
LOG_ERR: LogLevel
LOG_WARNING: LogLevel
LOG_NOTICE: LogLevel
LOG_INFO: LogLevel
LOG_DEBUG: LogLevel

class NodeId(_message.Message):
    __slots__ = ("netid", "domain")
    NETID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    netid: int
    domain: int
    def __init__(self, netid: _Optional[int] = ..., domain: _Optional[int] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("node", "daemon", "level", "time_unix_ns", "message", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    DAEMON_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    node: NodeId
    daemon: str
    level: LogLevel
    time_unix_ns: int
    message: str
    fields: _containers.ScalarMap[str, str]
    def __init__(self, node: _Optional[_Union[NodeId, _Mapping]] = ..., daemon: _Optional[str] = ..., level: _Optional[_Union[LogLevel, str]] = ..., time_unix_ns: _Optional[int] = ..., message: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DaemonInfo(_message.Message):
    __slots__ = ("daemon", "version", "pid", "started_unix_ns", "node_root")
    DAEMON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    NODE_ROOT_FIELD_NUMBER: _ClassVar[int]
    daemon: str
    version: str
    pid: int
    started_unix_ns: int
    node_root: str
    def __init__(self, daemon: _Optional[str] = ..., version: _Optional[str] = ..., pid: _Optional[int] = ..., started_unix_ns: _Optional[int] = ..., node_root: _Optional[str] = ...) -> None: ...
