from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_ABOVE: _ClassVar[Direction]
    DIRECTION_BELOW: _ClassVar[Direction]
    DIRECTION_EQUAL: _ClassVar[Direction]

class WatermarkAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATERMARK_ACTION_UNSPECIFIED: _ClassVar[WatermarkAction]
    WATERMARK_SCRIPT: _ClassVar[WatermarkAction]
    WATERMARK_SWITCH: _ClassVar[WatermarkAction]
    WATERMARK_REFUSE_NEW: _ClassVar[WatermarkAction]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_ABOVE: Direction
DIRECTION_BELOW: Direction
DIRECTION_EQUAL: Direction
WATERMARK_ACTION_UNSPECIFIED: WatermarkAction
WATERMARK_SCRIPT: WatermarkAction
WATERMARK_SWITCH: WatermarkAction
WATERMARK_REFUSE_NEW: WatermarkAction

class ListProbesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProbesResponse(_message.Message):
    __slots__ = ("probes",)
    PROBES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[Probe]
    def __init__(self, probes: _Optional[_Iterable[_Union[Probe, _Mapping]]] = ...) -> None: ...

class Probe(_message.Message):
    __slots__ = ("name", "unit", "builtin", "source", "interval_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    unit: str
    builtin: bool
    source: str
    interval_ms: int
    def __init__(self, name: _Optional[str] = ..., unit: _Optional[str] = ..., builtin: _Optional[bool] = ..., source: _Optional[str] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("probe", "value", "unit", "time_unix_ns")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    probe: str
    value: float
    unit: str
    time_unix_ns: int
    def __init__(self, probe: _Optional[str] = ..., value: _Optional[float] = ..., unit: _Optional[str] = ..., time_unix_ns: _Optional[int] = ...) -> None: ...

class GetCurrentRequest(_message.Message):
    __slots__ = ("probes",)
    PROBES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, probes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCurrentResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("probe", "limit")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    probe: str
    limit: int
    def __init__(self, probe: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("probes",)
    PROBES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, probes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListWatermarksRequest(_message.Message):
    __slots__ = ("probe",)
    PROBE_FIELD_NUMBER: _ClassVar[int]
    probe: str
    def __init__(self, probe: _Optional[str] = ...) -> None: ...

class ListWatermarksResponse(_message.Message):
    __slots__ = ("watermarks",)
    WATERMARKS_FIELD_NUMBER: _ClassVar[int]
    watermarks: _containers.RepeatedCompositeFieldContainer[Watermark]
    def __init__(self, watermarks: _Optional[_Iterable[_Union[Watermark, _Mapping]]] = ...) -> None: ...

class Watermark(_message.Message):
    __slots__ = ("probe", "name", "threshold", "direction", "action", "script", "armed", "last_fired_unix_ns", "last_exit_status")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    ARMED_FIELD_NUMBER: _ClassVar[int]
    LAST_FIRED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    probe: str
    name: str
    threshold: float
    direction: Direction
    action: WatermarkAction
    script: str
    armed: bool
    last_fired_unix_ns: int
    last_exit_status: int
    def __init__(self, probe: _Optional[str] = ..., name: _Optional[str] = ..., threshold: _Optional[float] = ..., direction: _Optional[_Union[Direction, str]] = ..., action: _Optional[_Union[WatermarkAction, str]] = ..., script: _Optional[str] = ..., armed: _Optional[bool] = ..., last_fired_unix_ns: _Optional[int] = ..., last_exit_status: _Optional[int] = ...) -> None: ...
