"""What a reconcile function asks for: plain values, applied by `executor.py`.

Reconcile functions are pure (cache snapshot and clock in, a `Result` out), so
tests compare actions instead of watching a cluster. Every Update and
UpdateStatus carries the resourceVersion the decision was based on: the store
rejects it if the object moved on (or if this replica lost leadership and the
new leader already wrote), so a stale decision is never written.

Threads model: values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral import kinds


@dataclass(frozen=True)
class Ref:
    """The object an Event is about."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = ""

    @staticmethod
    def of(obj: Any) -> Ref:
        info = kinds.of(obj)
        m = obj.metadata
        return Ref(info.kind, m.namespace, m.name, m.uid, info.api_version)


@dataclass(frozen=True)
class EventSpec:
    ref: Ref
    type: str  # "Normal" or "Warning"
    reason: str
    # "{name}" is replaced with the name of the object a Create made (generateName).
    message: str


@dataclass(eq=False)
class Create:
    obj: Any
    event: EventSpec | None = None
    failed_event: EventSpec | None = None

    def __str__(self) -> str:
        m = self.obj.metadata
        return f"create {kinds.of(self.obj).kind} {m.namespace}/{m.name or m.generate_name + '*'}"


@dataclass(eq=False)
class Update:
    """Replace metadata and spec, only if still at obj.metadata.resourceVersion."""

    obj: Any
    event: EventSpec | None = None

    def __str__(self) -> str:
        return f"update {kinds.describe(self.obj)}"


@dataclass(eq=False)
class UpdateStatus:
    obj: Any

    def __str__(self) -> str:
        return f"status {kinds.describe(self.obj)}"


@dataclass(eq=False)
class Delete:
    kind: str
    namespace: str
    name: str
    uid: str = ""  # precondition: only this incarnation
    grace_period_seconds: int | None = None
    propagation_policy: str = ""
    event: EventSpec | None = None

    @staticmethod
    def of(obj: Any, *, grace_period_seconds: int | None = None, propagation_policy: str = "",
           event: EventSpec | None = None) -> Delete:
        m = obj.metadata
        return Delete(kinds.of(obj).kind, m.namespace, m.name, m.uid, grace_period_seconds,
                      propagation_policy, event)

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        force = " (force)" if self.grace_period_seconds == 0 else ""
        return f"delete {self.kind} {where}{force}"


@dataclass(eq=False)
class Emit:
    event: EventSpec

    def __str__(self) -> str:
        return f"event {self.event.reason}: {self.event.message}"


Action = Create | Update | UpdateStatus | Delete | Emit


@dataclass
class Result:
    actions: list[Action] = field(default_factory=list)
    # Sync again after this many seconds even if nothing changes (minReadySeconds,
    # deadlines, timers).
    requeue_after: float | None = None
    # A sentence for the log: why these actions (Patroni-style).
    why: str = ""

    def add(self, action: Action) -> None:
        self.actions.append(action)

    def requeue(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds

    def of_type(self, cls: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, cls)]

    def __str__(self) -> str:
        return "; ".join(str(a) for a in self.actions) or "nothing"


def event(obj: Any, reason: str, message: str, type_: str = "Normal") -> EventSpec:
    return EventSpec(Ref.of(obj), type_, reason, message)
