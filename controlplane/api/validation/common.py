"""Validators shared by every kind: object metadata, names, labels, selectors,
int-or-string values, quantities and fields Corral does not know.

Pure functions over protobuf messages; each appends to an `Errors` with the
field path it checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from controlplane.api.validation.errors import Errors
from corral import quantity
from corral.errors import Invalid
from corral.names import (
    check_dns1123_label,
    check_dns1123_subdomain,
    check_label_value,
    check_port_name,
    check_qualified_name,
)
from corral.selectors import from_proto
from corral.v1 import meta_pb2

NameCheck = Callable[[str], list[str]]

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes' limit on the sum of all annotation keys and values.
TOTAL_ANNOTATION_BYTES = 256 * 1024
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def check_dns1035_label(value: str) -> list[str]:
    """Service names: like a DNS-1123 label, but starting with a letter."""
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1035_LABEL.match(value):
        problems.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
            "start with an alphabetic character, and end with an alphanumeric character "
            "(e.g. 'my-name', or 'abc-123')"
        )
    return problems


def check_config_key(value: str) -> list[str]:
    """ConfigMap and Secret data keys (they become file names)."""
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not _CONFIG_KEY.match(value):
        problems.append("a valid config key must consist of alphanumeric characters, '-', '_' "
                        "or '.' (e.g. 'key.name', or 'KEY_NAME', or 'key-name')")
    elif value in (".", ".."):
        problems.append(f"must not be {value!r}")
    return problems


def name_check(value: str, path: str, errs: Errors, check: NameCheck) -> None:
    if not value:
        errs.required(path)
        return
    for p in check(value):
        errs.add(path, f"invalid value {value!r}: {p}")


def check_labels(labels: Mapping[str, str], path: str, errs: Errors) -> None:
    for key in sorted(labels):
        for p in check_qualified_name(key):
            errs.add(path, f"invalid label key {key!r}: {p}")
        for p in check_label_value(labels[key]):
            errs.add(f"{path}[{key}]", f"invalid label value {labels[key]!r}: {p}")


def check_annotations(annotations: Mapping[str, str], path: str, errs: Errors) -> None:
    total = 0
    for key in sorted(annotations):
        total += len(key) + len(annotations[key])
        for p in check_qualified_name(key.lower()):
            errs.add(path, f"invalid annotation key {key!r}: {p}")
    if total > TOTAL_ANNOTATION_BYTES:
        errs.add(path, f"too long: must have at most {TOTAL_ANNOTATION_BYTES} bytes, "
                       f"got {total}")


def check_metadata(meta: meta_pb2.ObjectMeta, namespaced: bool, name_rule: NameCheck,
                   errs: Errors, path: str = "metadata") -> None:
    """Name, namespace, labels, annotations, owner references and finalizers."""
    if meta.name:
        name_check(meta.name, f"{path}.name", errs, name_rule)
    elif meta.generate_name:
        # The random suffix makes the final name; only the prefix can be checked.
        prefix = meta.generate_name.rstrip("-") or "a"
        for p in name_rule(prefix):
            errs.add(f"{path}.generateName", f"invalid value {meta.generate_name!r}: {p}")
    else:
        errs.required(f"{path}.name", "name or generateName is required")
    if namespaced:
        name_check(meta.namespace, f"{path}.namespace", errs, check_dns1123_label)
    elif meta.namespace:
        errs.add(f"{path}.namespace", "not allowed on this type (it is cluster-scoped)")
    check_labels(meta.labels, f"{path}.labels", errs)
    check_annotations(meta.annotations, f"{path}.annotations", errs)
    controllers = 0
    for i, ref in enumerate(meta.owner_references):
        rp = f"{path}.ownerReferences[{i}]"
        for fld in ("api_version", "kind", "name", "uid"):
            if not getattr(ref, fld):
                errs.required(f"{rp}.{_camel(fld)}")
        if ref.HasField("controller") and ref.controller:
            controllers += 1
    if controllers > 1:
        errs.add(f"{path}.ownerReferences", "only one reference can have controller set to "
                                            "true")
    seen: set[str] = set()
    for i, fin in enumerate(meta.finalizers):
        for p in check_qualified_name(fin):
            errs.add(f"{path}.finalizers[{i}]", f"invalid value {fin!r}: {p}")
        if fin in seen:
            errs.add(f"{path}.finalizers[{i}]", f"duplicate value {fin!r}")
        seen.add(fin)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


def check_label_selector(sel: meta_pb2.LabelSelector, path: str, errs: Errors,
                         *, required: bool = True) -> bool:
    """A LabelSelector message; returns False when it is invalid or empty-but-required."""
    if required and not sel.match_labels and not sel.match_expressions:
        errs.required(path, "a selector with matchLabels or matchExpressions")
        return False
    check_labels(sel.match_labels, f"{path}.matchLabels", errs)
    try:
        from_proto(sel, path)
    except Invalid as err:
        errs.add(err.field, err.reason)
        return False
    return True


def int_or_string(value: struct_pb2.Value, path: str, errs: Errors, *,
                  allow_percent: bool = False, allow_name: bool = False) -> int | str | None:
    """A Kubernetes IntOrString held in a google.protobuf.Value.

    Returns the int, the string, or None when unset or invalid.
    """
    which = value.WhichOneof("kind")
    if which is None or which == "null_value":
        return None
    if which == "number_value":
        n = value.number_value
        if n != int(n):
            errs.add(path, f"must be an integer, got {n}")
            return None
        return int(n)
    if which == "string_value":
        s = value.string_value
        if allow_percent and re.fullmatch(r"[0-9]+%", s):
            return s
        if allow_name and not check_port_name(s):
            return s
        if allow_name:
            for p in check_port_name(s):
                errs.add(path, f"invalid port name {s!r}: {p}")
            return None
        if allow_percent and s.isdigit():
            return int(s)
        errs.add(path, f"must be an integer{' or a percentage' if allow_percent else ''}, "
                       f"got {s!r}")
        return None
    errs.add(path, f"must be an integer or a string, got a {which.replace('_value', '')}")
    return None


def check_quantity(value: str, path: str, errs: Errors) -> None:
    try:
        q = quantity.parse(value, path)
    except Invalid as err:
        errs.add(path, err.reason)
        return
    if q < 0:
        errs.add(path, f"must be greater than or equal to 0, got {value!r}")


def check_unknown_fields(msg: Message, path: str, errs: Errors) -> None:
    """Fields the sender set that this version of Corral does not know.

    JSON clients get this from protobuf's parser; binary clients built from a
    newer .proto would otherwise have them dropped silently.
    """
    unknown = UnknownFieldSet(msg)
    if len(unknown):
        numbers = sorted({f.field_number for f in unknown})
        errs.add(path or "object", f"unknown field number(s) {numbers}: not supported by "
                                   "this server")
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        name = fd.json_name
        sub = f"{path}.{name}" if path else name
        if fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].message_type is not None:
                for k, v in value.items():
                    check_unknown_fields(v, f"{sub}[{k}]", errs)
        elif fd.is_repeated:
            for i, item in enumerate(value):
                check_unknown_fields(item, f"{sub}[{i}]", errs)
        else:
            check_unknown_fields(value, sub, errs)


def at_least(value: int, minimum: int, path: str, errs: Errors) -> None:
    if value < minimum:
        errs.add(path, f"must be greater than or equal to {minimum}, got {value}")


def port_number(value: int, path: str, errs: Errors, *, allow_zero: bool = False) -> None:
    if allow_zero and value == 0:
        return
    if not 1 <= value <= 65535:
        errs.add(path, f"must be between 1 and 65535, got {value}")


__all__ = [
    "at_least",
    "check_annotations",
    "check_config_key",
    "check_dns1035_label",
    "check_dns1123_label",
    "check_dns1123_subdomain",
    "check_label_selector",
    "check_labels",
    "check_metadata",
    "check_quantity",
    "check_unknown_fields",
    "int_or_string",
    "name_check",
    "port_number",
]
