from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Document(_message.Message):
    __slots__ = ("file", "yaml")
    FILE_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    file: str
    yaml: str
    def __init__(self, file: _Optional[str] = ..., yaml: _Optional[str] = ...) -> None: ...

class ResourceRef(_message.Message):
    __slots__ = ("kind", "namespace", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("ref", "action", "resource_version")
    REF_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    action: str
    resource_version: int
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., action: _Optional[str] = ..., resource_version: _Optional[int] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("documents", "dry_run", "namespace")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    dry_run: bool
    namespace: str
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., dry_run: _Optional[bool] = ..., namespace: _Optional[str] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("changes", "revision", "refusal", "warnings")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    revision: int
    refusal: Refusal
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., revision: _Optional[int] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("documents", "refs", "ignore_not_found", "dry_run", "namespace")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    refs: _containers.RepeatedCompositeFieldContainer[ResourceRef]
    ignore_not_found: bool
    dry_run: bool
    namespace: str
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., refs: _Optional[_Iterable[_Union[ResourceRef, _Mapping]]] = ..., ignore_not_found: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., namespace: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("changes", "revision", "refusal")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    revision: int
    refusal: Refusal
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., revision: _Optional[int] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("code", "message", "problems", "more")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    more: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., more: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("kind", "namespace", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("ref", "json", "resource_version", "generation", "creation_timestamp")
    REF_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ref: ResourceRef
    json: str
    resource_version: int
    generation: int
    creation_timestamp: str
    def __init__(self, ref: _Optional[_Union[ResourceRef, _Mapping]] = ..., json: _Optional[str] = ..., resource_version: _Optional[int] = ..., generation: _Optional[int] = ..., creation_timestamp: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("resources", "revision")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    revision: int
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("file", "document", "line", "kind", "name", "field", "message", "hint", "text")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    file: str
    document: int
    line: int
    kind: str
    name: str
    field: str
    message: str
    hint: str
    text: str
    def __init__(self, file: _Optional[str] = ..., document: _Optional[int] = ..., line: _Optional[int] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ..., hint: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ProblemList(_message.Message):
    __slots__ = ("problems",)
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    def __init__(self, problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ...) -> None: ...

class ProxyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TypeStatus(_message.Message):
    __slots__ = ("type_url", "state", "sent_version", "acked_version", "error", "last_change")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    state: str
    sent_version: str
    acked_version: str
    error: str
    last_change: float
    def __init__(self, type_url: _Optional[str] = ..., state: _Optional[str] = ..., sent_version: _Optional[str] = ..., acked_version: _Optional[str] = ..., error: _Optional[str] = ..., last_change: _Optional[float] = ...) -> None: ...

class Proxy(_message.Message):
    __slots__ = ("node_id", "node_cluster", "peer", "connected_since", "types", "synced", "api", "version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_cluster: str
    peer: str
    connected_since: float
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    synced: bool
    api: str
    version: str
    def __init__(self, node_id: _Optional[str] = ..., node_cluster: _Optional[str] = ..., peer: _Optional[str] = ..., connected_since: _Optional[float] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ..., synced: _Optional[bool] = ..., api: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ProxyStatusResponse(_message.Message):
    __slots__ = ("proxies", "versions", "replicas")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[Proxy]
    versions: _containers.ScalarMap[str, str]
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    def __init__(self, proxies: _Optional[_Iterable[_Union[Proxy, _Mapping]]] = ..., versions: _Optional[_Mapping[str, str]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("id", "admin", "xds")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    XDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    admin: str
    xds: str
    def __init__(self, id: _Optional[str] = ..., admin: _Optional[str] = ..., xds: _Optional[str] = ...) -> None: ...

class ProxyConfigRequest(_message.Message):
    __slots__ = ("node_id", "type_url")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    type_url: str
    def __init__(self, node_id: _Optional[str] = ..., type_url: _Optional[str] = ...) -> None: ...

class ProxyConfigResponse(_message.Message):
    __slots__ = ("node_id", "type_url", "version", "names", "json", "node_json")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    NODE_JSON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    type_url: str
    version: str
    names: _containers.RepeatedScalarFieldContainer[str]
    json: _containers.RepeatedScalarFieldContainer[str]
    node_json: str
    def __init__(self, node_id: _Optional[str] = ..., type_url: _Optional[str] = ..., version: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., json: _Optional[_Iterable[str]] = ..., node_json: _Optional[str] = ...) -> None: ...
