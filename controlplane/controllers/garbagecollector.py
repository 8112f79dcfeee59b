"""Garbage collection by ownerReferences, with Kubernetes' three propagation policies.

- Background (the API's default): the owner is removed at once; its
  dependents then have an owner that no longer exists and are deleted here.
- Foreground: the API keeps the owner, with deletionTimestamp and the
  "foregroundDeletion" finalizer; here its dependents are deleted (in the
  foreground too), and once none is left the finalizer is removed, which lets
  the API remove the owner.
- Orphan: the API keeps the owner with the "orphan" finalizer; here the
  owner's reference is removed from each dependent, then the finalizer.
An owner is "gone" only after a linearizable GET confirms it (missing, or a
new object with another uid under the same name): informer caches of
different kinds lag each other, and a dependent seen before its owner must
not be collected (Kubernetes' GC does the same "virtual delete" check).
A dependent with several owners loses only the dangling references.

`plan_dependent` and `plan_owner` are pure; the controller feeds them from the
informers of every kind that takes part.

Threads model: the controller's workers (see base.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from corral import kinds
from corral.errors import NotFound

from .actions import Delete, Result, Update
from .base import Controller
from .informers import Handlers
from .podutil import copy, is_terminating

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
KINDS = ("Pod", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "Service",
         "Endpoints", "PersistentVolumeClaim")


def plan_dependent(obj: Any, owner_exists: Callable[[Any], bool | None]) -> Result:
    """`owner_exists(ref)`: True, False (confirmed gone) or None (unknown: do nothing)."""
    result = Result()
    refs = list(obj.metadata.owner_references)
    if not refs or is_terminating(obj):
        return result
    dangling = []
    for ref in refs:
        exists = owner_exists(ref)
        if exists is None:
            return result
        if not exists:
            dangling.append(ref.uid)
    if not dangling:
        return result
    if len(dangling) == len(refs):
        result.add(Delete.of(obj, propagation_policy="Background"))
        result.why = "every owner is gone"
    else:
        new = copy(obj)
        kept = [r for r in new.metadata.owner_references if r.uid not in dangling]
        del new.metadata.owner_references[:]
        new.metadata.owner_references.extend(kept)
        result.add(Update(new))
        result.why = "some owners are gone"
    return result


def plan_owner(owner: Any, dependents: Iterable[Any]) -> Result:
    """For an owner being deleted with the orphan or foreground finalizer."""
    result = Result()
    if not is_terminating(owner):
        return result
    finalizers = list(owner.metadata.finalizers)
    uid = owner.metadata.uid
    deps = [d for d in dependents
            if any(r.uid == uid for r in d.metadata.owner_references)]
    if ORPHAN in finalizers:
        for d in deps:
            new = copy(d)
            kept = [r for r in new.metadata.owner_references if r.uid != uid]
            del new.metadata.owner_references[:]
            new.metadata.owner_references.extend(kept)
            result.add(Update(new))
        if not deps:
            result.add(Update(_without(owner, ORPHAN)))
            result.why = "dependents orphaned: removing the orphan finalizer"
        else:
            # The finalizer goes only once no dependent points here any more.
            result.why = f"orphaning {len(deps)} dependents"
            result.requeue(0.2)
        return result
    if FOREGROUND in finalizers:
        live = [d for d in deps if not is_terminating(d)]
        for d in live:
            result.add(Delete.of(d, propagation_policy="Foreground"))
        if not deps:
            result.add(Update(_without(owner, FOREGROUND)))
            result.why = "dependents gone: removing the foreground finalizer"
        else:
            result.why = f"waiting for {len(deps)} dependents"
            result.requeue(1.0)
    return result


def _without(obj: Any, finalizer: str) -> Any:
    new = copy(obj)
    kept = [f for f in new.metadata.finalizers if f != finalizer]
    del new.metadata.finalizers[:]
    new.metadata.finalizers.extend(kept)
    return new


class GarbageCollector(Controller):
    name = "garbagecollector"

    def setup(self) -> None:
        for kind in KINDS:
            self.ctx.informers[kind].subscribe(Handlers(
                lambda o, k=kind: self._seen(k, o),
                lambda old, new, k=kind: self._seen(k, new),
                lambda o, k=kind: self._gone(o)))

    def _seen(self, kind: str, obj: Any) -> None:
        m = obj.metadata
        if m.owner_references:
            self.queue.add(("dependent", kind, m.namespace, m.name))
        if is_terminating(obj) and (FOREGROUND in m.finalizers or ORPHAN in m.finalizers):
            self.queue.add(("owner", kind, m.namespace, m.name))

    def _gone(self, obj: Any) -> None:
        # Dependents of a removed owner, and an owner waiting for its last dependents.
        uid = obj.metadata.uid
        for kind in KINDS:
            for o in self.ctx.informers[kind].in_namespace(obj.metadata.namespace):
                m = o.metadata
                if any(r.uid == uid for r in m.owner_references):
                    self.queue.add(("dependent", kind, m.namespace, m.name))
        for ref in obj.metadata.owner_references:
            info = _kind(ref.kind)
            if info is not None:
                self.queue.add(("owner", info, obj.metadata.namespace, ref.name))

    def resync_keys(self) -> Iterable[tuple[str, str, str, str]]:
        keys = []
        for kind in KINDS:
            for o in self.ctx.informers[kind].items():
                m = o.metadata
                if m.owner_references:
                    keys.append(("dependent", kind, m.namespace, m.name))
                if is_terminating(o) and (FOREGROUND in m.finalizers or ORPHAN in m.finalizers):
                    keys.append(("owner", kind, m.namespace, m.name))
        return keys

    def _owner_exists(self, namespace: str, ref: Any) -> bool | None:
        kind = _kind(ref.kind)
        info = kinds.by_kind(kind) if kind else None
        ns = namespace if info is None or info.namespaced else ""
        if kind in KINDS:
            cached = self.ctx.informers[kind].get(ref.name, ns)
            if cached is not None and cached.metadata.uid == ref.uid:
                return True
        if kind is None:
            return None  # a kind Corral does not serve: leave the reference alone
        try:
            live = self.ctx.client.get(kind, ref.name, ns)
        except NotFound:
            return False
        except Exception:
            return None
        return bool(live.metadata.uid == ref.uid)

    def sync(self, key: tuple[str, str, str, str]) -> Result | None:
        tag, kind, ns, name = key
        obj = self.ctx.informers[kind].get(name, ns)
        if obj is None:
            return None
        if tag == "dependent":
            return plan_dependent(obj, lambda ref: self._owner_exists(ns, ref))
        deps: list[Any] = []
        for k in KINDS:
            deps.extend(self.ctx.informers[k].in_namespace(ns))
        return plan_owner(obj, deps)


def _kind(kind: str) -> str | None:
    try:
        return kinds.by_kind(kind).kind
    except Exception:
        return None
