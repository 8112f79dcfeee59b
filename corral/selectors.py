"""Label and field selectors: Kubernetes' syntax, parsed once, matched many times.

Label selector strings (as `-l` and ListRequest.label_selector):
    app=web  app==web  app!=web  tier in (a,b)  tier notin (a,b)  canary  !canary
    replicas>2  replicas<5
joined by commas (AND). `!=` and `notin` also match objects without the key,
as in Kubernetes. The same `Selector` is built from a LabelSelector message
(matchLabels + matchExpressions) or a Service's plain selector map.

Field selectors (`spec.nodeName=n1,status.phase!=Running`) support = == and !=
over the fields each kind exports (see controlplane's field index); an empty
value matches an empty or missing field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from corral.errors import Invalid
from corral.names import check_label_value, check_qualified_name
from corral.v1 import meta_pb2

_SET_OPS = {"in", "notin"}


@dataclass(frozen=True)
class Requirement:
    key: str
    # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op == "=":
            return labels.get(self.key) == self.values[0]
        if op == "!=":
            return labels.get(self.key) != self.values[0]
        if op == "in":
            return self.key in labels and labels[self.key] in self.values
        if op == "notin":
            return self.key not in labels or labels[self.key] not in self.values
        value = labels.get(self.key)
        if value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if op == "gt" else number < bound

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in _SET_OPS:
            return f"{self.key} {self.op} ({','.join(self.values)})"
        symbol = {"gt": ">", "lt": "<"}.get(self.op, self.op)
        return f"{self.key}{symbol}{self.values[0]}"


@dataclass(frozen=True)
class Selector:
    """ANDed requirements. The empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = Selector()


class _Nothing(Selector):
    def matches(self, labels: Mapping[str, str]) -> bool:
        return False

    def __str__(self) -> str:
        return "<nothing>"


# A selector that matches no object (Kubernetes: a nil selector on a Service).
NOTHING: Selector = _Nothing((Requirement("", "!"),))


def _check_key(key: str, where: str) -> None:
    problems = check_qualified_name(key)
    if problems:
        raise Invalid(f"invalid label key {key!r}: {problems[0]}", where)


def _check_value(value: str, where: str) -> None:
    problems = check_label_value(value)
    if problems:
        raise Invalid(f"invalid label value {value!r}: {problems[0]}", where)


_TOKEN = re.compile(
    r"\s*(?:(?P<lparen>\()|(?P<rparen>\))|(?P<comma>,)|(?P<op>==|!=|=|!|>|<)|"
    r"(?P<word>[^\s,()=!<>]+))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise Invalid(f"unable to parse label selector {text!r} at character {pos}",
                          "labelSelector")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse_label_selector(text: str) -> Selector:
    """Parse Kubernetes' label selector syntax; raises Invalid with the position."""
    where = "labelSelector"
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def expect(kind: str) -> str:
        nonlocal i
        if i >= len(toks) or toks[i][0] != kind:
            got = toks[i][1] if i < len(toks) else "end of input"
            raise Invalid(f"in label selector {text!r}: expected {kind}, found {got!r}", where)
        value = toks[i][1]
        i += 1
        return value

    while i < len(toks):
        kind, value = toks[i]
        if kind == "op" and value == "!":
            i += 1
            key = expect("word")
            _check_key(key, where)
            reqs.append(Requirement(key, "!"))
        elif kind == "word":
            key = value
            _check_key(key, where)
            i += 1
            nxt = toks[i] if i < len(toks) else ("comma", ",")
            if nxt[0] == "comma":
                reqs.append(Requirement(key, "exists"))
            elif nxt[0] == "op":
                i += 1
                op = {"==": "=", ">": "gt", "<": "lt"}.get(nxt[1], nxt[1])
                if op == "!":
                    raise Invalid(f"in label selector {text!r}: '!' must precede a key", where)
                val = toks[i][1] if i < len(toks) and toks[i][0] == "word" else ""
                if val:
                    i += 1
                if op in ("gt", "lt"):
                    try:
                        int(val)
                    except ValueError:
                        raise Invalid(
                            f"in label selector {text!r}: {key}{nxt[1]} needs an integer",
                            where,
                        ) from None
                else:
                    _check_value(val, where)
                reqs.append(Requirement(key, op, (val,)))
            elif nxt[0] == "word" and nxt[1] in _SET_OPS:
                i += 1
                op = nxt[1]
                expect("lparen")
                values: list[str] = []
                while True:
                    if i < len(toks) and toks[i][0] == "word":
                        _check_value(toks[i][1], where)
                        values.append(toks[i][1])
                        i += 1
                    if i < len(toks) and toks[i][0] == "comma":
                        i += 1
                        continue
                    expect("rparen")
                    break
                if not values:
                    raise Invalid(f"in label selector {text!r}: {key} {op} () needs values",
                                  where)
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise Invalid(
                    f"in label selector {text!r}: unexpected {nxt[1]!r} after {key!r}", where
                )
        else:
            raise Invalid(f"in label selector {text!r}: unexpected {value!r}", where)
        if i < len(toks):
            expect("comma")
            if i >= len(toks):
                raise Invalid(f"in label selector {text!r}: trailing ','", where)
    return Selector(tuple(reqs))


_EXPRESSION_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def from_match_labels(labels: Mapping[str, str]) -> Selector:
    """A Service's `selector:` map (or matchLabels alone)."""
    return Selector(tuple(Requirement(k, "=", (v,)) for k, v in sorted(labels.items())))


def from_proto(sel: meta_pb2.LabelSelector, where: str = "selector") -> Selector:
    """A LabelSelector message (matchLabels AND matchExpressions); validates operators."""
    reqs = list(from_match_labels(sel.match_labels).requirements)
    for i, expr in enumerate(sel.match_expressions):
        path = f"{where}.matchExpressions[{i}]"
        _check_key(expr.key, f"{path}.key")
        op = _EXPRESSION_OPS.get(expr.operator)
        if op is None:
            raise Invalid(
                f"unsupported operator {expr.operator!r} (use In, NotIn, Exists, DoesNotExist)",
                f"{path}.operator",
            )
        values = tuple(expr.values)
        if op in _SET_OPS and not values:
            raise Invalid(f"must be non-empty for operator {expr.operator}", f"{path}.values")
        if op not in _SET_OPS and values:
            raise Invalid(f"must be empty for operator {expr.operator}", f"{path}.values")
        for v in values:
            _check_value(v, f"{path}.values")
        reqs.append(Requirement(expr.key, op, values))
    return Selector(tuple(reqs))


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Plain map selector (Service, nodeSelector): every pair present and equal."""
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        actual = fields.get(self.field, "")
        return (actual == self.value) == (self.op == "=")


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def fields(self) -> Iterable[str]:
        return (r.field for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(f"{r.field}{r.op}{r.value}" for r in self.requirements)


def parse_field_selector(text: str) -> FieldSelector:
    reqs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\[\]'/-]+)\s*(==|!=|=)\s*(.*)", part)
        if m is None:
            raise Invalid(
                f"invalid field selector {part!r}: expected FIELD=VALUE or FIELD!=VALUE",
                "fieldSelector",
            )
        op = "=" if m.group(2) in ("=", "==") else "!="
        reqs.append(FieldRequirement(m.group(1), op, m.group(3).strip()))
    return FieldSelector(tuple(reqs))
