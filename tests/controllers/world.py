"""An in-memory stand-in for the store, to drive pure reconcile functions in tests.

`World.apply(result)` applies a reconcile's actions the way the API would
(generateName, uid, resourceVersion CAS, status kept on Update, graceful
deletion of bound pods), so a test can run several controllers' reconcile
functions in turn and watch a rollout unfold step by step, with no cluster.
"""

from __future__ import annotations

import itertools
from typing import Any

from controlplane.controllers.actions import Create, Delete, Emit, Result, Update, UpdateStatus
from controlplane.controllers.clock import to_timestamp
from controlplane.controllers.podutil import copy
from corral import kinds


class ConflictError(Exception):
    pass


class World:
    def __init__(self, now: float) -> None:
        self.now = now
        self.objects: dict[tuple[str, str, str], Any] = {}
        self._rv = itertools.count(100)
        self._names = itertools.count(1)
        self.events: list[str] = []
        self.log: list[str] = []
        self.conflicts = 0

    def add(self, obj: Any) -> Any:
        obj.metadata.resource_version = str(next(self._rv))
        if not obj.metadata.uid:
            obj.metadata.uid = f"w-{next(self._names)}"
        if not obj.metadata.creation_timestamp.seconds:
            obj.metadata.creation_timestamp.CopyFrom(to_timestamp(self.now))
        self.objects[kinds.key_of(obj)] = obj
        return obj

    def list(self, kind: str, namespace: str = "default") -> list[Any]:
        return [copy(o) for (k, ns, _), o in sorted(self.objects.items())
                if k == kind and (ns == namespace or kind == "Node")]

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        obj = self.objects.get((kind, "" if kind == "Node" else namespace, name))
        return copy(obj) if obj is not None else None

    def apply(self, result: Result) -> None:
        for a in result.actions:
            self.log.append(str(a))
            try:
                self._apply(a)
            except ConflictError:
                self.conflicts += 1

    def _apply(self, a: Any) -> None:
        if isinstance(a, Create):
            obj = copy(a.obj)
            if not obj.metadata.name:
                obj.metadata.name = f"{obj.metadata.generate_name}{next(self._names):05d}"
            key = kinds.key_of(obj)
            if key in self.objects:
                raise ConflictError(f"{key} exists")
            self.add(obj)
            obj.metadata.generation = 1
            if a.event:
                self.events.append(f"{a.event.reason}: "
                                   f"{a.event.message.replace('{name}', obj.metadata.name)}")
        elif isinstance(a, Update | UpdateStatus):
            key = kinds.key_of(a.obj)
            cur = self.objects.get(key)
            if cur is None or cur.metadata.resource_version != a.obj.metadata.resource_version:
                raise ConflictError(str(key))
            new = copy(a.obj)
            if isinstance(a, Update):
                new.status.CopyFrom(cur.status) if hasattr(cur, "status") else None
                if hasattr(cur, "spec") and cur.spec != new.spec:
                    new.metadata.generation = cur.metadata.generation + 1
                else:
                    new.metadata.generation = cur.metadata.generation
            else:
                new.metadata.CopyFrom(cur.metadata)
                new.spec.CopyFrom(cur.spec)
            new.metadata.resource_version = str(next(self._rv))
            self.objects[key] = new
            if isinstance(a, Update) and new.metadata.deletion_timestamp.seconds and \
                    not new.metadata.finalizers:
                del self.objects[key]
        elif isinstance(a, Delete):
            key = (a.kind, a.namespace, a.name)
            cur = self.objects.get(key)
            if cur is None:
                return
            if a.uid and cur.metadata.uid != a.uid:
                raise ConflictError(str(key))
            graceful = a.kind == "Pod" and cur.spec.node_name and a.grace_period_seconds != 0
            if graceful or cur.metadata.finalizers:
                if not cur.metadata.deletion_timestamp.seconds:
                    cur.metadata.deletion_timestamp.CopyFrom(to_timestamp(self.now))
                    cur.metadata.resource_version = str(next(self._rv))
            else:
                del self.objects[key]
            if a.event:
                self.events.append(f"{a.event.reason}: {a.event.message}")
        elif isinstance(a, Emit):
            self.events.append(f"{a.event.reason}: {a.event.message}")

    # ---- a fake kubelet ---------------------------------------------------------
    def kubelet(self, *, ready: bool = True, node: str = "n1", slow: bool = False) -> None:
        """Bind every unbound pod, make pending pods Running (and Ready), and finish
        the graceful deletion of pods being deleted. `slow`: a pod becomes Ready
        one call after it started Running."""
        for key, pod in list(self.objects.items()):
            if key[0] != "Pod":
                continue
            if pod.metadata.deletion_timestamp.seconds:
                del self.objects[key]
                continue
            if not pod.spec.node_name:
                pod.spec.node_name = node
            started = False
            if pod.status.phase in ("", "Pending"):
                pod.status.phase = "Running"
                pod.status.pod_ip = f"10.244.0.{next(self._names) % 250 + 1}"
                started = True
                pod.metadata.resource_version = str(next(self._rv))
            if ready and not (slow and started) and not any(
                    c.type == "Ready" for c in pod.status.conditions):
                c = pod.status.conditions.add(type="Ready", status="True")
                c.last_transition_time.CopyFrom(to_timestamp(self.now))
                pod.metadata.resource_version = str(next(self._rv))
