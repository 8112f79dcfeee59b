"""`corral rollout status|history|undo|pause|resume` and `corral scale`, as kubectl.

A Deployment's revisions are its ReplicaSets' "deployment.kubernetes.io/revision"
annotations; history's CHANGE-CAUSE is their "kubernetes.io/change-cause";
undo copies a revision's pod template back into the Deployment (the controller
of issue 5 then rolls to it); pause/resume set spec.paused; status follows the
object until the rollout is done or its progress deadline is exceeded.

The decisions (`deployment_status`, `daemon_set_status`, `stateful_set_status`,
`revisions`, `rollback_template`) are pure; run_* do the I/O.
Threads model: main thread only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral import kinds, printers
from corral.cli import describers, objects
from corral.cli.context import Context, UsageError
from corral.errors import CorralError, NotFound

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
POD_TEMPLATE_HASH = "pod-template-hash"
SCALABLE = ("Deployment", "ReplicaSet", "StatefulSet")
STATUS_KINDS = ("Deployment", "DaemonSet", "StatefulSet")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser("rollout", help="Follow, list, undo, pause or resume rollouts")
    verbs = r.add_subparsers(dest="rollout_verb", metavar="VERB", required=True,
                             parser_class=type(r))

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("targets", nargs="+", metavar="deployment NAME|deployment/NAME")

    s = verbs.add_parser("status", parents=[common], help="Follow a rollout until it is done")
    target(s)
    s.add_argument("-w", "--watch", nargs="?", const="true", default="true",
                   type=objects.parse_bool, help="follow until done (--watch=false: once)")
    s.add_argument("--timeout", type=objects.parse_duration, default=None,
                   help="give up after this long (e.g. 5m); default: no limit")
    s.set_defaults(run=run_status)

    h = verbs.add_parser("history", parents=[common], help="List a Deployment's revisions")
    target(h)
    h.add_argument("--revision", type=int, default=0, help="show this revision's pod template")
    h.set_defaults(run=run_history)

    u = verbs.add_parser("undo", parents=[common], help="Roll back to an earlier revision")
    target(u)
    u.add_argument("--to-revision", type=int, default=0,
                   help="the revision to go back to (0: the previous one)")
    u.set_defaults(run=run_undo)

    for verb, text in (("pause", "Pause a Deployment's rollouts"),
                       ("resume", "Resume a paused Deployment")):
        p = verbs.add_parser(verb, parents=[common], help=text)
        target(p)
        p.set_defaults(run=run_pause if verb == "pause" else run_resume)

    sc = sub.add_parser("scale", parents=[common], help="Set the replicas of a workload",
                        description="corral scale deployment NAME --replicas N (also "
                                    "replicaset, statefulset; or KIND/NAME).")
    sc.add_argument("targets", nargs="+", metavar="KIND NAME|KIND/NAME")
    sc.add_argument("--replicas", type=int, required=True)
    sc.add_argument("--current-replicas", type=int, default=-1,
                    help="only scale if the replicas are this many now")
    sc.set_defaults(run=run_scale)


def _target(ctx: Context, allowed: Sequence[str]) -> tuple[kinds.KindInfo, str]:
    pairs = objects.split_targets(ctx.args.targets)
    if len(pairs) != 1:
        raise UsageError("give exactly one object: KIND NAME or KIND/NAME")
    info, name = pairs[0]
    if info.kind not in allowed:
        raise UsageError(f"{info.plural} are not supported here (supported: "
                         f"{', '.join(k.lower() for k in allowed)})")
    return info, name


def _replicas(spec: Any) -> int:
    return spec.replicas if spec.HasField("replicas") else 1


# ------------------------------------------------------------------- status


@dataclass(frozen=True)
class RolloutState:
    message: str
    done: bool = False
    failed: bool = False


def _condition(conditions: Sequence[Any], type_: str) -> Any | None:
    return next((c for c in conditions if c.type == type_), None)


def deployment_status(d: Any) -> RolloutState:
    """kubectl's DeploymentStatusViewer, plus readiness: done when updated, ready and
    available all reach the desired replicas and no old replicas remain."""
    name, st = d.metadata.name, d.status
    if d.metadata.generation > st.observed_generation:
        return RolloutState("Waiting for deployment spec update to be observed...")
    cond = _condition(st.conditions, "Progressing")
    if cond is not None and cond.reason == "ProgressDeadlineExceeded":
        return RolloutState(f'deployment "{name}" exceeded its progress deadline', failed=True)
    want = _replicas(d.spec)
    if st.updated_replicas < want:
        return RolloutState(f'Waiting for deployment "{name}" rollout to finish: '
                            f"{st.updated_replicas} out of {want} new replicas have been "
                            f"updated...")
    if st.replicas > st.updated_replicas:
        return RolloutState(f'Waiting for deployment "{name}" rollout to finish: '
                            f"{st.replicas - st.updated_replicas} old replicas are pending "
                            f"termination...")
    if st.ready_replicas < st.updated_replicas:
        return RolloutState(f'Waiting for deployment "{name}" rollout to finish: '
                            f"{st.ready_replicas} of {st.updated_replicas} updated replicas "
                            f"are ready...")
    if st.available_replicas < st.updated_replicas:
        return RolloutState(f'Waiting for deployment "{name}" rollout to finish: '
                            f"{st.available_replicas} of {st.updated_replicas} updated "
                            f"replicas are available...")
    return RolloutState(f'deployment "{name}" successfully rolled out', done=True)


def daemon_set_status(ds: Any) -> RolloutState:
    name, st = ds.metadata.name, ds.status
    if (ds.spec.update_strategy.type or "RollingUpdate") != "RollingUpdate":
        return RolloutState("rollout status is only available for RollingUpdate strategy "
                            "type", failed=True)
    if ds.metadata.generation > st.observed_generation:
        return RolloutState("Waiting for daemon set spec update to be observed...")
    if st.updated_number_scheduled < st.desired_number_scheduled:
        return RolloutState(f'Waiting for daemon set "{name}" rollout to finish: '
                            f"{st.updated_number_scheduled} out of "
                            f"{st.desired_number_scheduled} new pods have been updated...")
    if st.number_available < st.desired_number_scheduled:
        return RolloutState(f'Waiting for daemon set "{name}" rollout to finish: '
                            f"{st.number_available} of {st.desired_number_scheduled} updated "
                            f"pods are available...")
    return RolloutState(f'daemon set "{name}" successfully rolled out', done=True)


def stateful_set_status(ss: Any) -> RolloutState:
    st = ss.status
    if (ss.spec.update_strategy.type or "RollingUpdate") != "RollingUpdate":
        return RolloutState("rollout status is only available for RollingUpdate strategy "
                            "type", failed=True)
    if st.observed_generation == 0 or ss.metadata.generation > st.observed_generation:
        return RolloutState("Waiting for statefulset spec update to be observed...")
    want = _replicas(ss.spec)
    if st.ready_replicas < want:
        return RolloutState(f"Waiting for {want - st.ready_replicas} pods to be ready...")
    if st.update_revision and st.update_revision != st.current_revision:
        return RolloutState(f"waiting for statefulset rolling update to complete "
                            f"{st.updated_replicas} pods at revision {st.update_revision}...")
    return RolloutState(f"statefulset rolling update complete {st.current_replicas or want} "
                        f"pods at revision {st.current_revision}...", done=True)


_STATUS = {"Deployment": deployment_status, "DaemonSet": daemon_set_status,
           "StatefulSet": stateful_set_status}


def run_status(ctx: Context) -> int:
    info, name = _target(ctx, STATUS_KINDS)
    ns = ctx.namespace
    judge = _STATUS[info.kind]
    items, rv = ctx.client.list(info, ns, field_selector=f"metadata.name={name}")
    if not items:
        raise CorralError(objects.not_found(info, name))
    last = ""

    def show(obj: Any) -> RolloutState:
        nonlocal last
        state = judge(obj)
        if state.message != last and not state.failed:
            ctx.out(state.message)
        last = state.message
        return state

    state = show(items[0])
    if state.done or state.failed or not ctx.args.watch:
        return _finish(ctx, state)
    for event in objects.watch(ctx.client, info, ns, resource_version=rv,
                               field_selector=f"metadata.name={name}",
                               timeout=ctx.args.timeout):
        if event.type == "DELETED":
            raise CorralError(f'{objects.kind_ref(info)} "{name}" was deleted')
        state = show(event.object)
        if state.done or state.failed:
            return _finish(ctx, state)
    raise CorralError("timed out waiting for the rollout to finish")


def _finish(ctx: Context, state: RolloutState) -> int:
    if state.failed:
        raise CorralError(state.message)
    return 0


# ------------------------------------------------------------------- history / undo


def revision_of(rs: Any) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def revisions(deployment: Any, replica_sets: Sequence[Any]) -> list[tuple[int, Any]]:
    """(revision, ReplicaSet) of the ReplicaSets this Deployment controls, oldest first."""
    uid = deployment.metadata.uid
    owned = [rs for rs in replica_sets
             if any(o.uid == uid and o.controller for o in rs.metadata.owner_references)]
    return sorted(((revision_of(rs), rs) for rs in owned if revision_of(rs) > 0),
                  key=lambda pair: pair[0])


def history_table(history: Sequence[tuple[int, Any]]) -> str:
    rows = [[str(rev), rs.metadata.annotations.get(CHANGE_CAUSE, "") or printers.NONE]
            for rev, rs in history]
    return printers.format_table(["REVISION", "CHANGE-CAUSE"], rows)


def _strip_hash(template: Any) -> Any:
    out = type(template)()
    out.CopyFrom(template)
    out.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    return out


def rollback_template(deployment: Any, history: Sequence[tuple[int, Any]],
                      to_revision: int) -> tuple[int, Any]:
    """(revision, its pod template without pod-template-hash) to roll back to; raises
    CorralError when there is none, as kubectl words it."""
    name = deployment.metadata.name
    if deployment.spec.paused:
        raise CorralError(f"you cannot rollback a paused deployment; resume it first with "
                          f"`corral rollout resume deployment/{name}` and try again")
    if not history:
        raise CorralError(f'no rollout history found for deployment "{name}"')
    if to_revision:
        match = [rs for rev, rs in history if rev == to_revision]
        if not match:
            raise CorralError(f"unable to find specified revision {to_revision} in history")
        return to_revision, _strip_hash(match[0].spec.template)
    if len(history) < 2:
        raise CorralError(f'no previous revision to roll back to for deployment "{name}"')
    rev, rs = history[-2]
    return rev, _strip_hash(rs.spec.template)


def _deployment_and_history(ctx: Context, name: str) -> tuple[Any, list[tuple[int, Any]]]:
    try:
        d = ctx.client.get("Deployment", name, ctx.namespace)
    except NotFound:
        raise CorralError(objects.not_found(kinds.by_kind("Deployment"), name)) from None
    replica_sets, _ = ctx.client.list("ReplicaSet", ctx.namespace)
    return d, revisions(d, replica_sets)


def run_history(ctx: Context) -> int:
    info, name = _target(ctx, ("Deployment",))
    _, history = _deployment_and_history(ctx, name)
    if ctx.args.revision:
        match = [rs for rev, rs in history if rev == ctx.args.revision]
        if not match:
            raise CorralError(f"unable to find the specified revision {ctx.args.revision}")
        ctx.out(f"{printers.name_of(info, name)} with revision #{ctx.args.revision}")
        text = describers.describe_template(match[0].spec.template)
        ctx.out(text)
        return 0
    ctx.out(printers.name_of(info, name))
    ctx.out(history_table(history) if history else "No rollout history found.")
    return 0


def run_undo(ctx: Context) -> int:
    info, name = _target(ctx, ("Deployment",))
    d, history = _deployment_and_history(ctx, name)
    revision, template = rollback_template(d, history, ctx.args.to_revision)
    cause = next((rs.metadata.annotations.get(CHANGE_CAUSE) for rev, rs in history
                  if rev == revision), None)

    def change(obj: Any) -> bool:
        if obj.metadata.uid != d.metadata.uid:
            raise CorralError(f'deployment "{name}" was replaced meanwhile; try again')
        if _strip_hash(obj.spec.template) == template:
            return False
        obj.spec.template.CopyFrom(template)
        # As kubectl: the change-cause is the one recorded with that revision (or none).
        if cause:
            obj.metadata.annotations[CHANGE_CAUSE] = cause
        else:
            obj.metadata.annotations.pop(CHANGE_CAUSE, None)
        return True

    _, changed = objects.modify(ctx.client, info, name, ctx.namespace, change)
    if not changed:
        ctx.out(f"{printers.name_of(info, name)} skipped rollback (current template already "
                f"matches revision {revision})")
    else:
        ctx.out(f"{printers.name_of(info, name)} rolled back")
    return 0


def _set_paused(ctx: Context, paused: bool) -> int:
    info, name = _target(ctx, ("Deployment",))

    def change(obj: Any) -> bool:
        if obj.spec.paused == paused:
            return False
        obj.spec.paused = paused
        return True

    try:
        _, changed = objects.modify(ctx.client, info, name, ctx.namespace, change)
    except NotFound:
        raise CorralError(objects.not_found(info, name)) from None
    if not changed:
        raise CorralError(f'{objects.kind_ref(info)} "{name}" is '
                          f"{'already paused' if paused else 'not paused'}")
    ctx.out(f"{printers.name_of(info, name)} {'paused' if paused else 'resumed'}")
    return 0


def run_pause(ctx: Context) -> int:
    return _set_paused(ctx, True)


def run_resume(ctx: Context) -> int:
    return _set_paused(ctx, False)


# ------------------------------------------------------------------- scale


def run_scale(ctx: Context) -> int:
    a = ctx.args
    info, name = _target(ctx, SCALABLE)
    if a.replicas < 0:
        raise UsageError("--replicas must be 0 or more")

    def change(obj: Any) -> bool:
        if a.current_replicas >= 0 and _replicas(obj.spec) != a.current_replicas:
            raise CorralError(f"expected replicas to be {a.current_replicas}, was "
                              f"{_replicas(obj.spec)}")
        if obj.spec.HasField("replicas") and obj.spec.replicas == a.replicas:
            return False
        obj.spec.replicas = a.replicas
        return True

    try:
        objects.modify(ctx.client, info, name, ctx.namespace, change)
    except NotFound:
        raise CorralError(objects.not_found(info, name)) from None
    ctx.out(f"{printers.name_of(info, name)} scaled")
    return 0
