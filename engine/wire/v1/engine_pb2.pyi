from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_CURRENT: _ClassVar[ProtocolVersion]

class NodeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_KIND_UNSPECIFIED: _ClassVar[NodeKind]
    NODE_KIND_CALL: _ClassVar[NodeKind]
    NODE_KIND_MAP: _ClassVar[NodeKind]
    NODE_KIND_REDUCE: _ClassVar[NodeKind]
    NODE_KIND_APPLICATION: _ClassVar[NodeKind]
    NODE_KIND_SIGNAL: _ClassVar[NodeKind]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_FUNCTION_ERROR: _ClassVar[FailureKind]
    FAILURE_KIND_REQUEST_ERROR: _ClassVar[FailureKind]
    FAILURE_KIND_TIMEOUT: _ClassVar[FailureKind]
    FAILURE_KIND_OUT_OF_MEMORY: _ClassVar[FailureKind]
    FAILURE_KIND_EXECUTOR_LOST: _ClassVar[FailureKind]
    FAILURE_KIND_DEPENDENCY_FAILED: _ClassVar[FailureKind]
    FAILURE_KIND_CANCELLED: _ClassVar[FailureKind]
    FAILURE_KIND_INTERNAL: _ClassVar[FailureKind]
    FAILURE_KIND_BUDGET_EXCEEDED: _ClassVar[FailureKind]
    FAILURE_KIND_SIGNAL_TIMEOUT: _ClassVar[FailureKind]

class ReturnWhen(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETURN_WHEN_UNSPECIFIED: _ClassVar[ReturnWhen]
    RETURN_WHEN_ALL_COMPLETED: _ClassVar[ReturnWhen]
    RETURN_WHEN_FIRST_COMPLETED: _ClassVar[ReturnWhen]
    RETURN_WHEN_FIRST_FAILURE: _ClassVar[ReturnWhen]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_CURRENT: ProtocolVersion
NODE_KIND_UNSPECIFIED: NodeKind
NODE_KIND_CALL: NodeKind
NODE_KIND_MAP: NodeKind
NODE_KIND_REDUCE: NodeKind
NODE_KIND_APPLICATION: NodeKind
NODE_KIND_SIGNAL: NodeKind
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_FUNCTION_ERROR: FailureKind
FAILURE_KIND_REQUEST_ERROR: FailureKind
FAILURE_KIND_TIMEOUT: FailureKind
FAILURE_KIND_OUT_OF_MEMORY: FailureKind
FAILURE_KIND_EXECUTOR_LOST: FailureKind
FAILURE_KIND_DEPENDENCY_FAILED: FailureKind
FAILURE_KIND_CANCELLED: FailureKind
FAILURE_KIND_INTERNAL: FailureKind
FAILURE_KIND_BUDGET_EXCEEDED: FailureKind
FAILURE_KIND_SIGNAL_TIMEOUT: FailureKind
RETURN_WHEN_UNSPECIFIED: ReturnWhen
RETURN_WHEN_ALL_COMPLETED: ReturnWhen
RETURN_WHEN_FIRST_COMPLETED: ReturnWhen
RETURN_WHEN_FIRST_FAILURE: ReturnWhen

class Payload(_message.Message):
    __slots__ = ("data", "blob", "size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    blob: str
    size: int
    def __init__(self, data: _Optional[bytes] = ..., blob: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class Arg(_message.Message):
    __slots__ = ("value", "ref", "list")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    value: Payload
    ref: str
    list: ArgList
    def __init__(self, value: _Optional[_Union[Payload, _Mapping]] = ..., ref: _Optional[str] = ..., list: _Optional[_Union[ArgList, _Mapping]] = ...) -> None: ...

class ArgList(_message.Message):
    __slots__ = ("items", "is_tuple")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    IS_TUPLE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Arg]
    is_tuple: bool
    def __init__(self, items: _Optional[_Iterable[_Union[Arg, _Mapping]]] = ..., is_tuple: _Optional[bool] = ...) -> None: ...

class Arguments(_message.Message):
    __slots__ = ("args", "kwargs")
    class KwargsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Arg
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Arg, _Mapping]] = ...) -> None: ...
    ARGS_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    args: _containers.RepeatedCompositeFieldContainer[Arg]
    kwargs: _containers.MessageMap[str, Arg]
    def __init__(self, args: _Optional[_Iterable[_Union[Arg, _Mapping]]] = ..., kwargs: _Optional[_Mapping[str, Arg]] = ...) -> None: ...

class SignalOptions(_message.Message):
    __slots__ = ("timeout", "repeatable")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REPEATABLE_FIELD_NUMBER: _ClassVar[int]
    timeout: float
    repeatable: bool
    def __init__(self, timeout: _Optional[float] = ..., repeatable: _Optional[bool] = ...) -> None: ...

class FutureSpec(_message.Message):
    __slots__ = ("id", "kind", "function", "arguments", "signal")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: NodeKind
    function: str
    arguments: Arguments
    signal: SignalOptions
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[NodeKind, str]] = ..., function: _Optional[str] = ..., arguments: _Optional[_Union[Arguments, _Mapping]] = ..., signal: _Optional[_Union[SignalOptions, _Mapping]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("kind", "type_name", "message", "traceback", "exception", "function", "call_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    kind: FailureKind
    type_name: str
    message: str
    traceback: str
    exception: Payload
    function: str
    call_id: str
    def __init__(self, kind: _Optional[_Union[FailureKind, str]] = ..., type_name: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., exception: _Optional[_Union[Payload, _Mapping]] = ..., function: _Optional[str] = ..., call_id: _Optional[str] = ...) -> None: ...

class InitializeRequest(_message.Message):
    __slots__ = ("protocol_version", "function", "code_zip", "code_digest", "module", "callback_address", "concurrency", "credential")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CODE_ZIP_FIELD_NUMBER: _ClassVar[int]
    CODE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    protocol_version: ProtocolVersion
    function: str
    code_zip: bytes
    code_digest: str
    module: str
    callback_address: str
    concurrency: int
    credential: str
    def __init__(self, protocol_version: _Optional[_Union[ProtocolVersion, str]] = ..., function: _Optional[str] = ..., code_zip: _Optional[bytes] = ..., code_digest: _Optional[str] = ..., module: _Optional[str] = ..., callback_address: _Optional[str] = ..., concurrency: _Optional[int] = ..., credential: _Optional[str] = ...) -> None: ...

class InitializeResponse(_message.Message):
    __slots__ = ("python_version",)
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    python_version: str
    def __init__(self, python_version: _Optional[str] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("run_id", "call_id", "attempt", "arguments", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    call_id: str
    attempt: int
    arguments: Arguments
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., call_id: _Optional[str] = ..., attempt: _Optional[int] = ..., arguments: _Optional[_Union[Arguments, _Mapping]] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RunRequests(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RunRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RunRequest, _Mapping]]] = ...) -> None: ...

class RunResponses(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RunResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RunResponse, _Mapping]]] = ...) -> None: ...

class TailCall(_message.Message):
    __slots__ = ("root_id", "futures")
    ROOT_ID_FIELD_NUMBER: _ClassVar[int]
    FUTURES_FIELD_NUMBER: _ClassVar[int]
    root_id: str
    futures: _containers.RepeatedCompositeFieldContainer[FutureSpec]
    def __init__(self, root_id: _Optional[str] = ..., futures: _Optional[_Iterable[_Union[FutureSpec, _Mapping]]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("value", "tail_call", "failure", "logs", "call_id", "metrics")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TAIL_CALL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    value: Payload
    tail_call: TailCall
    failure: Failure
    logs: str
    call_id: str
    metrics: CallMetrics
    def __init__(self, value: _Optional[_Union[Payload, _Mapping]] = ..., tail_call: _Optional[_Union[TailCall, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., logs: _Optional[str] = ..., call_id: _Optional[str] = ..., metrics: _Optional[_Union[CallMetrics, _Mapping]] = ...) -> None: ...

class CallMetrics(_message.Message):
    __slots__ = ("counters", "timers")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TimersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TimerStats
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TimerStats, _Mapping]] = ...) -> None: ...
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    TIMERS_FIELD_NUMBER: _ClassVar[int]
    counters: _containers.ScalarMap[str, int]
    timers: _containers.MessageMap[str, TimerStats]
    def __init__(self, counters: _Optional[_Mapping[str, int]] = ..., timers: _Optional[_Mapping[str, TimerStats]] = ...) -> None: ...

class TimerStats(_message.Message):
    __slots__ = ("count", "sum", "min", "max")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    count: int
    sum: float
    min: float
    max: float
    def __init__(self, count: _Optional[int] = ..., sum: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("running_calls",)
    RUNNING_CALLS_FIELD_NUMBER: _ClassVar[int]
    running_calls: int
    def __init__(self, running_calls: _Optional[int] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("run_id", "parent_call_id", "futures")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    FUTURES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    parent_call_id: str
    futures: _containers.RepeatedCompositeFieldContainer[FutureSpec]
    def __init__(self, run_id: _Optional[str] = ..., parent_call_id: _Optional[str] = ..., futures: _Optional[_Iterable[_Union[FutureSpec, _Mapping]]] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AwaitRequest(_message.Message):
    __slots__ = ("run_id", "parent_call_id", "ids", "return_when", "timeout")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    RETURN_WHEN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    parent_call_id: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    return_when: ReturnWhen
    timeout: float
    def __init__(self, run_id: _Optional[str] = ..., parent_call_id: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., return_when: _Optional[_Union[ReturnWhen, str]] = ..., timeout: _Optional[float] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("id", "value", "failure")
    ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    id: str
    value: Payload
    failure: Failure
    def __init__(self, id: _Optional[str] = ..., value: _Optional[_Union[Payload, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class AwaitResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class RequestInfoRequest(_message.Message):
    __slots__ = ("run_id", "call_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    call_id: str
    def __init__(self, run_id: _Optional[str] = ..., call_id: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class RequestInfoResponse(_message.Message):
    __slots__ = ("headers",)
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    def __init__(self, headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("run_id", "call_id", "key")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    call_id: str
    key: str
    def __init__(self, run_id: _Optional[str] = ..., call_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("found", "value")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: Payload
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...

class SetStateRequest(_message.Message):
    __slots__ = ("run_id", "call_id", "key", "value")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    call_id: str
    key: str
    value: Payload
    def __init__(self, run_id: _Optional[str] = ..., call_id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...

class SetStateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProgressRequest(_message.Message):
    __slots__ = ("run_id", "call_id", "current", "total", "message", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    call_id: str
    current: float
    total: float
    message: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., call_id: _Optional[str] = ..., current: _Optional[float] = ..., total: _Optional[float] = ..., message: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ProgressResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class GetBlobRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class PutBlobResponse(_message.Message):
    __slots__ = ("digest", "size")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class AdoptBlobRequest(_message.Message):
    __slots__ = ("name", "result")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    result: bool
    def __init__(self, name: _Optional[str] = ..., result: _Optional[bool] = ...) -> None: ...
