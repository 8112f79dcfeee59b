"""Manifests: Kubernetes-style YAML or JSON in, corral.v1 kind messages out, and back.

Reading walks every document against its message descriptor before protobuf's
JSON mapping (`json_format.ParseDict`) sees it, so each problem is reported as
one line naming the document and the field in manifest spelling:

    app.yaml: document 2 (Deployment web): spec.template.spec.containers[0].portz:
        unknown field (Corral does not support it)

The walk also does what Kubernetes' decoder does and protobuf's does not: YAML
timestamps stay strings, resource quantities written as numbers (`cpu: 1`)
become strings, IntOrString fields (google.protobuf.Value) take an integer or a
string only, and duplicate keys are refused. Values under a Secret's `data` and
`stringData` never appear in an error.

Writing (`to_dict`, `dump_yaml`, `dump_json`) gives Kubernetes-shaped output:
camelCase, apiVersion and kind first, then metadata, spec, status; int64 and
IntOrString numbers as integers; no zero-value noise.

Pure functions, no threads; the only side effects are reading the files named.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

import yaml
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from corral import kinds, quantity
from corral.errors import CorralError, Invalid

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"

# map<string,string> fields holding resource quantities: YAML numbers become strings.
_QUANTITY_MAPS = {
    ("corral.v1.ResourceRequirements", "limits"),
    ("corral.v1.ResourceRequirements", "requests"),
    ("corral.v1.NodeStatus", "capacity"),
    ("corral.v1.NodeStatus", "allocatable"),
    ("corral.v1.PersistentVolumeClaimStatus", "capacity"),
}
# Fields of a Secret whose values must never be echoed.
_SECRET_FIELDS = ("data", "stringData")

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


# Descriptors are typed loosely: protobuf's stubs make message_type and enum_type
# Optional, while the walk only reaches them for fields of those types.
Field = Any
Desc = Any


class ManifestError(Invalid):
    """A bad manifest. The message is one line: where, the field path, what is wrong."""

    def __init__(self, where: str, reason: str, field: str = "") -> None:
        CorralError.__init__(
            self, f"{where}: {field}: {reason}" if field else f"{where}: {reason}"
        )
        self.where = where
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Document:
    """One object read from a manifest."""

    source: str  # the file as the user named it, or "<stdin>"
    index: int  # 1-based position of the YAML/JSON document in its source
    info: kinds.KindInfo
    obj: Any  # the kind message
    item: int | None = None  # position inside a `kind: List` document

    @property
    def name(self) -> str:
        return str(self.obj.metadata.name)

    @property
    def where(self) -> str:
        """How errors name this document: 'app.yaml: document 2 (Deployment web)'."""
        return _where(self.source, self.index, self.item, self.info.kind, self.name)


def _where(source: str, index: int, item: int | None, kind: str, name: str) -> str:
    text = f"{source}: document {index}"
    if item is not None:
        text += f" items[{item}]"
    if kind and name:
        text += f" ({kind} {name})"
    elif kind:
        text += f" ({kind})"
    return text


# --------------------------------------------------------------------------- reading


def load(paths: Sequence[str], stdin: IO[str] | None = None) -> list[Document]:
    """Every document of every path: files, folders (their *.yaml, *.yml, *.json,
    sorted, not recursive) or "-" for stdin. Raises ManifestError on the first problem."""
    docs: list[Document] = []
    for path in paths:
        for source, text in _read_sources(path, stdin):
            docs.extend(parse_text(text, source))
    return docs


def _read_sources(path: str, stdin: IO[str] | None) -> Iterator[tuple[str, str]]:
    if path == STDIN:
        if stdin is None:
            raise ManifestError("<stdin>", "no standard input to read")
        yield "<stdin>", stdin.read()
        return
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(MANIFEST_SUFFIXES))
        files = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
        if not files:
            raise ManifestError(
                path, f"no manifests in this folder (looked for {', '.join(MANIFEST_SUFFIXES)})"
            )
        for file in files:
            yield file, _read_file(file)
        return
    yield path, _read_file(path)


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ManifestError(path, "no such file or folder") from None
    except UnicodeDecodeError as err:
        raise ManifestError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ManifestError(path, f"cannot read: {err.strerror}") from None


def parse_text(text: str, source: str) -> list[Document]:
    """The documents of one YAML stream or JSON text (one object, a List, or a stream)."""
    docs: list[Document] = []
    for index, data in enumerate(_raw_documents(text, source), start=1):
        if data is None:  # an empty YAML document (`---` twice) holds nothing
            continue
        docs.extend(_documents_of(data, source, index))
    return docs


def _raw_documents(text: str, source: str) -> Iterator[Any]:
    stripped = text.lstrip()
    if source.endswith(".json") or stripped.startswith(("{", "[")):
        yield from _json_documents(text, source)
    else:
        yield from _yaml_documents(text, source)


def _json_documents(text: str, source: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    pos, index = 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        index += 1
        try:
            data, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise ManifestError(
                f"{source}: document {index}",
                f"JSON syntax error at line {err.lineno}, column {err.colno}: {err.msg}",
            ) from None
        yield data


def _yaml_documents(text: str, source: str) -> Iterator[Any]:
    index = 0
    try:
        for data in yaml.load_all(text, Loader=_Loader):
            index += 1
            yield data
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = err.problem or err.context or "invalid YAML"
        raise ManifestError(
            f"{source}: document {index + 1}", f"YAML syntax error{at}: {what}"
        ) from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{source}: document {index + 1}", f"YAML error: {err}") from None


_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader that keeps timestamps as strings (as Kubernetes does) and refuses
    duplicate keys instead of silently keeping the last one."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # resolves `<<` merge keys first
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in result
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _documents_of(data: Any, source: str, index: int) -> Iterator[Document]:
    where = f"{source}: document {index}"
    if isinstance(data, dict) and data.get("kind") == "List":
        items = data.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            raise ManifestError(where + " (List)", f"expected a list, got {_show(items)}",
                                "items")
        for i, item in enumerate(items):
            yield _document(item, source, index, i)
        return
    yield _document(data, source, index, None)


def _document(data: Any, source: str, index: int, item: int | None) -> Document:
    where = _where(source, index, item, "", "")
    if not isinstance(data, dict):
        raise ManifestError(
            where, f"expected a mapping with apiVersion, kind and metadata, got {_show(data)}"
        )
    kind = data.get("kind")
    if kind is None or kind == "":
        raise ManifestError(where, "missing kind (every object needs apiVersion and kind)")
    if not isinstance(kind, str):
        raise ManifestError(where, f"expected a string, got {_show(kind)}", "kind")
    info = _kind_info(kind, where)
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    where = _where(source, index, item, kind, name if isinstance(name, str) else "")
    api_version = data.get("apiVersion")
    if api_version is None or api_version == "":
        raise ManifestError(where, f"required (for {kind}: {info.api_version})", "apiVersion")
    if api_version != info.api_version:
        raise ManifestError(
            where,
            f"{kind} is served as {info.api_version}, not {json.dumps(api_version)}",
            "apiVersion",
        )
    return Document(source, index, info, parse_object(data, info, where), item)


def _kind_info(kind: str, where: str) -> kinds.KindInfo:
    try:
        return kinds.by_kind(kind)
    except Invalid:
        known = sorted(k.kind for k in kinds.KINDS)
        hint = [k for k in known if k.lower() == kind.lower()]
        hint = hint or difflib.get_close_matches(kind, known, n=1)
        more = f" (did you mean {hint[0]}?)" if hint else f" (Corral serves: {', '.join(known)})"
        raise ManifestError(where, f"unknown kind {kind!r}{more}") from None


def parse_object(data: dict[str, Any], info: kinds.KindInfo, where: str) -> Any:
    """One object's dict into its kind message, after the walk has checked every field."""
    walk = _Walk(where, secret=info.kind == "Secret")
    cleaned = walk.message(data, info.message.DESCRIPTOR, "")
    msg = info.message()
    try:
        json_format.ParseDict(cleaned, msg)
    except json_format.ParseError as err:
        # The walk should have caught everything; keep the line shape if it did not.
        raise ManifestError(where, str(err).splitlines()[0]) from None
    return msg


def parse_dict(data: dict[str, Any], where: str = "object") -> Any:
    """A dict (as from YAML) naming its own kind into its message."""
    return _document(data, where, 1, None).obj


def _show(value: Any, redact: bool = False) -> str:
    """How an error names a value it did not expect: 'string "x"', 'integer 5'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean" if redact else f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return "an integer" if redact else f"integer {value}"
    if isinstance(value, float):
        return "a number" if redact else f"number {value}"
    if isinstance(value, str):
        if redact:
            return "a string"
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {json.dumps(shown)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Walk:
    """One document's walk: checks types against the descriptor and returns the dict
    protobuf's JSON parser should see."""

    def __init__(self, where: str, secret: bool) -> None:
        self.where = where
        self.secret = secret

    def error(self, path: str, reason: str) -> ManifestError:
        return ManifestError(self.where, reason, path)

    def redact(self, path: str) -> bool:
        return self.secret and path.split("[", 1)[0].split(".", 1)[0] in _SECRET_FIELDS

    def message(self, data: Any, desc: Desc, path: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.error(path, f"expected a mapping, got {_show(data, self.redact(path))}")
        fields = {f.json_name: f for f in desc.fields}
        out: dict[str, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise self.error(path, f"field names must be strings, got {_show(key)}")
            field = fields.get(key)
            if field is None:
                raise self.error(_join(path, key), self._unknown(key, fields))
            if value is None:  # Kubernetes reads null as "not set"
                continue
            out[key] = self.field(value, field, _join(path, key))
        return out

    @staticmethod
    def _unknown(key: str, fields: dict[str, Field]) -> str:
        by_proto = {f.name: name for name, f in fields.items()}
        hint = by_proto.get(key) or next(
            (n for n in fields if n.lower() == key.lower()), None
        )
        if hint is None:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
            hint = close[0] if close else None
        more = f"; did you mean {hint}?" if hint else ""
        return f"unknown field (Corral does not support it{more})"

    def field(self, value: Any, field: Field, path: str) -> Any:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return self.map(value, field, path)
        if field.is_repeated:
            if not isinstance(value, list):
                raise self.error(path, f"expected a list, got {_show(value, self.redact(path))}")
            items = []
            for i, item in enumerate(value):
                if item is None:
                    raise self.error(f"{path}[{i}]", "null is not allowed in a list")
                items.append(self.single(item, field, f"{path}[{i}]"))
            return items
        return self.single(value, field, path)

    def map(self, value: Any, field: Field, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {_show(value, self.redact(path))}")
        value_field = field.message_type.fields_by_name["value"]
        is_quantity = (field.containing_type.full_name, field.name) in _QUANTITY_MAPS
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, got {_show(key)} (quote it)")
            item_path = f"{path}[{key}]"
            if item is None:
                raise self.error(item_path, "expected a value, got null")
            if is_quantity:
                item = self.quantity(item, item_path)
            out[key] = self.single(item, value_field, item_path)
        return out

    def quantity(self, value: Any, path: str) -> Any:
        if isinstance(value, bool):
            return value  # the string check below reports it
        if isinstance(value, int | float):
            value = format(Decimal(repr(value)), "f")
        if isinstance(value, str):
            try:
                quantity.parse(value, path)
            except Invalid as err:
                raise self.error(path, err.reason) from None
        return value

    def single(self, value: Any, field: Field, path: str) -> Any:
        redact = self.redact(path)
        ftype = field.type
        if ftype == FieldDescriptor.TYPE_MESSAGE:
            return self.special(value, field.message_type, path)
        if ftype == FieldDescriptor.TYPE_STRING:
            if not isinstance(value, str):
                quote = "" if redact or isinstance(value, list | dict) else " (quote it)"
                raise self.error(path, f"expected a string, got {_show(value, redact)}{quote}")
            return value
        if ftype == FieldDescriptor.TYPE_BYTES:
            if not isinstance(value, str):
                raise self.error(path, f"expected a base64 string, got {_show(value, True)}")
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise self.error(path, "invalid base64 data (use stringData for plain text)"
                                 if self.secret else "invalid base64 data") from None
            return value
        if ftype == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                raise self.error(
                    path, f"expected a boolean (true or false), got {_show(value, redact)}"
                )
            return value
        if ftype in _INT_RANGES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(path, f"expected an integer, got {_show(value, redact)}")
            low, high = _INT_RANGES[ftype]
            if not low <= value <= high:
                raise self.error(path, f"{value} is out of range ({low} to {high})")
            return value
        if ftype in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(path, f"expected a number, got {_show(value, redact)}")
            return value
        if ftype == FieldDescriptor.TYPE_ENUM:
            names = [v.name for v in field.enum_type.values]
            if value not in names:
                raise self.error(path, f"expected one of {', '.join(names)}, got {_show(value)}")
            return value
        raise self.error(path, f"unsupported field type {ftype}")  # pragma: no cover

    def special(self, value: Any, desc: Desc, path: str) -> Any:
        name = desc.full_name
        if name == "google.protobuf.Value":
            # Kubernetes' IntOrString: a port number or a name, a count or "25%".
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise self.error(
                    path, f"expected an integer or a string, got {_show(value, self.redact(path))}"
                )
            return value
        if name == "google.protobuf.Timestamp":
            if not isinstance(value, str):
                raise self.error(
                    path, f"expected an RFC 3339 time string, got {_show(value)}"
                )
            try:
                timestamp_pb2.Timestamp().FromJsonString(value)
            except ValueError:
                raise self.error(
                    path, f"expected an RFC 3339 time like 2024-01-01T00:00:00Z, got {_show(value)}"
                ) from None
            return value
        if name.startswith("google.protobuf."):
            return value
        return self.message(value, desc, path)


# --------------------------------------------------------------------------- writing


def to_dict(msg: Message) -> dict[str, Any]:
    """A kind message (or any corral.v1 message) as Kubernetes prints it."""
    out = _render(msg)
    try:
        info = kinds.of(msg)
    except Invalid:
        return out
    out.pop("apiVersion", None)
    out.pop("kind", None)
    for key in ("spec", "status"):
        if out.get(key) == {}:  # an unset status is noise, not information
            del out[key]
    return {"apiVersion": info.api_version, "kind": info.kind, **out}


def _render(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.json_name] = {
                k: _render_single(value[k], value_field) for k in sorted(value)
            }
        elif field.is_repeated:
            out[field.json_name] = [_render_single(v, field) for v in value]
        else:
            out[field.json_name] = _render_single(value, field)
    return out


def _render_single(value: Any, field: Field) -> Any:
    ftype = field.type
    if ftype == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == "google.protobuf.Value":
            which = value.WhichOneof("kind")
            if which == "number_value":
                number = value.number_value
                return int(number) if number.is_integer() else number
            if which == "string_value":
                return value.string_value
            return json_format.MessageToDict(value)
        if name == "google.protobuf.Timestamp":
            return value.ToJsonString()
        if name.startswith("google.protobuf."):
            return json_format.MessageToDict(value)
        return _render(value)
    if ftype == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if ftype == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    return value


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (config files in ConfigMaps read as written)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def as_list(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as kubectl prints them: a v1 List."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items),
            "metadata": {"resourceVersion": ""}}


def dump_yaml(data: dict[str, Any]) -> str:
    return str(yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True, width=1000))


def dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
