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
    __slots__ = ("name", "unit", "builtin", "source", "interval_ms", "desc", "errors", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    unit: str
    builtin: bool
    source: str
    interval_ms: int
    desc: str
    errors: int
    last_error: str
    def __init__(self, name: _Optional[str] = ..., unit: _Optional[str] = ..., builtin: _Optional[bool] = ..., source: _Optional[str] = ..., interval_ms: _Optional[int] = ..., desc: _Optional[str] = ..., errors: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("watermarks", "refusing_new")
    WATERMARKS_FIELD_NUMBER: _ClassVar[int]
    REFUSING_NEW_FIELD_NUMBER: _ClassVar[int]
    watermarks: _containers.RepeatedCompositeFieldContainer[Watermark]
    refusing_new: bool
    def __init__(self, watermarks: _Optional[_Iterable[_Union[Watermark, _Mapping]]] = ..., refusing_new: _Optional[bool] = ...) -> None: ...

class Watermark(_message.Message):
    __slots__ = ("probe", "name", "threshold", "direction", "action", "script", "armed", "last_fired_unix_ns", "last_exit_status", "hysteresis", "sustain", "fired_count", "config_file", "config_line", "last_result")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    ARMED_FIELD_NUMBER: _ClassVar[int]
    LAST_FIRED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    HYSTERESIS_FIELD_NUMBER: _ClassVar[int]
    SUSTAIN_FIELD_NUMBER: _ClassVar[int]
    FIRED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FILE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_LINE_FIELD_NUMBER: _ClassVar[int]
    LAST_RESULT_FIELD_NUMBER: _ClassVar[int]
    probe: str
    name: str
    threshold: float
    direction: Direction
    action: WatermarkAction
    script: str
    armed: bool
    last_fired_unix_ns: int
    last_exit_status: int
    hysteresis: float
    sustain: int
    fired_count: int
    config_file: str
    config_line: int
    last_result: str
    def __init__(self, probe: _Optional[str] = ..., name: _Optional[str] = ..., threshold: _Optional[float] = ..., direction: _Optional[_Union[Direction, str]] = ..., action: _Optional[_Union[WatermarkAction, str]] = ..., script: _Optional[str] = ..., armed: _Optional[bool] = ..., last_fired_unix_ns: _Optional[int] = ..., last_exit_status: _Optional[int] = ..., hysteresis: _Optional[float] = ..., sustain: _Optional[int] = ..., fired_count: _Optional[int] = ..., config_file: _Optional[str] = ..., config_line: _Optional[int] = ..., last_result: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("probes", "watermarks")
    PROBES_FIELD_NUMBER: _ClassVar[int]
    WATERMARKS_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[Probe]
    watermarks: _containers.RepeatedCompositeFieldContainer[Watermark]
    def __init__(self, probes: _Optional[_Iterable[_Union[Probe, _Mapping]]] = ..., watermarks: _Optional[_Iterable[_Union[Watermark, _Mapping]]] = ...) -> None: ...

class GetEmonStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EmonStats(_message.Message):
    __slots__ = ("samples", "probe_errors", "published", "publish_failures", "publish_dropped", "bus_reachable", "watermarks_fired", "scripts_run", "cpu_seconds", "started_unix_ns", "publishing")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PROBE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_DROPPED_FIELD_NUMBER: _ClassVar[int]
    BUS_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    WATERMARKS_FIRED_FIELD_NUMBER: _ClassVar[int]
    SCRIPTS_RUN_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHING_FIELD_NUMBER: _ClassVar[int]
    samples: int
    probe_errors: int
    published: int
    publish_failures: int
    publish_dropped: int
    bus_reachable: bool
    watermarks_fired: int
    scripts_run: int
    cpu_seconds: float
    started_unix_ns: int
    publishing: bool
    def __init__(self, samples: _Optional[int] = ..., probe_errors: _Optional[int] = ..., published: _Optional[int] = ..., publish_failures: _Optional[int] = ..., publish_dropped: _Optional[int] = ..., bus_reachable: _Optional[bool] = ..., watermarks_fired: _Optional[int] = ..., scripts_run: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., started_unix_ns: _Optional[int] = ..., publishing: _Optional[bool] = ...) -> None: ...
