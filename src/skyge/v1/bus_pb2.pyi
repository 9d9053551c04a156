from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateBusRequest(_message.Message):
    __slots__ = ("domain", "name", "slot", "retain_messages", "max_payload_bytes")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    RETAIN_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    domain: int
    name: str
    slot: int
    retain_messages: int
    max_payload_bytes: int
    def __init__(self, domain: _Optional[int] = ..., name: _Optional[str] = ..., slot: _Optional[int] = ..., retain_messages: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ...) -> None: ...

class BusInfo(_message.Message):
    __slots__ = ("domain", "name", "slot", "retain_messages", "max_payload_bytes", "last_sequence", "subscribers", "type", "oldest_sequence", "magic", "published", "missed")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    RETAIN_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAGIC_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    domain: int
    name: str
    slot: int
    retain_messages: int
    max_payload_bytes: int
    last_sequence: int
    subscribers: int
    type: str
    oldest_sequence: int
    magic: int
    published: int
    missed: int
    def __init__(self, domain: _Optional[int] = ..., name: _Optional[str] = ..., slot: _Optional[int] = ..., retain_messages: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., last_sequence: _Optional[int] = ..., subscribers: _Optional[int] = ..., type: _Optional[str] = ..., oldest_sequence: _Optional[int] = ..., magic: _Optional[int] = ..., published: _Optional[int] = ..., missed: _Optional[int] = ...) -> None: ...

class ListBusesRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: int
    def __init__(self, domain: _Optional[int] = ...) -> None: ...

class ListBusesResponse(_message.Message):
    __slots__ = ("buses",)
    BUSES_FIELD_NUMBER: _ClassVar[int]
    buses: _containers.RepeatedCompositeFieldContainer[BusInfo]
    def __init__(self, buses: _Optional[_Iterable[_Union[BusInfo, _Mapping]]] = ...) -> None: ...

class DeleteBusRequest(_message.Message):
    __slots__ = ("domain", "name")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    domain: int
    name: str
    def __init__(self, domain: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteBusResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: BusInfo
    def __init__(self, deleted: _Optional[_Union[BusInfo, _Mapping]] = ...) -> None: ...

class InitBusesRequest(_message.Message):
    __slots__ = ("domain", "subsystems")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SUBSYSTEMS_FIELD_NUMBER: _ClassVar[int]
    domain: int
    subsystems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, domain: _Optional[int] = ..., subsystems: _Optional[_Iterable[str]] = ...) -> None: ...

class InitBusesResponse(_message.Message):
    __slots__ = ("buses", "created")
    BUSES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    buses: _containers.RepeatedCompositeFieldContainer[BusInfo]
    created: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, buses: _Optional[_Iterable[_Union[BusInfo, _Mapping]]] = ..., created: _Optional[_Iterable[str]] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("data", "content_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    content_type: str
    def __init__(self, data: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("domain", "name", "messages")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    domain: int
    name: str
    messages: _containers.RepeatedCompositeFieldContainer[Payload]
    def __init__(self, domain: _Optional[int] = ..., name: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Payload, _Mapping]]] = ...) -> None: ...

class PublishAck(_message.Message):
    __slots__ = ("first_sequence", "count")
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    first_sequence: int
    count: int
    def __init__(self, first_sequence: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class RelayAck(_message.Message):
    __slots__ = ("ack", "status_code", "status_message")
    ACK_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ack: PublishAck
    status_code: int
    status_message: str
    def __init__(self, ack: _Optional[_Union[PublishAck, _Mapping]] = ..., status_code: _Optional[int] = ..., status_message: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("domain", "name", "from_sequence", "max_batch", "flow_control")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    FLOW_CONTROL_FIELD_NUMBER: _ClassVar[int]
    domain: int
    name: str
    from_sequence: int
    max_batch: int
    flow_control: bool
    def __init__(self, domain: _Optional[int] = ..., name: _Optional[str] = ..., from_sequence: _Optional[int] = ..., max_batch: _Optional[int] = ..., flow_control: _Optional[bool] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("messages", "missed")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[BusMessage]
    missed: int
    def __init__(self, messages: _Optional[_Iterable[_Union[BusMessage, _Mapping]]] = ..., missed: _Optional[int] = ...) -> None: ...

class BusMessage(_message.Message):
    __slots__ = ("sequence", "sender_domain", "time_unix_ns", "data", "content_type")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SENDER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    sender_domain: int
    time_unix_ns: int
    data: bytes
    content_type: str
    def __init__(self, sequence: _Optional[int] = ..., sender_domain: _Optional[int] = ..., time_unix_ns: _Optional[int] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...
