"""Job: run pods until enough of them succeed, within limits.

`reconcile` is pure: (Job, pods of its namespace, now, back-off) -> actions.
- Pods: from the template, generateName "JOB-NAME-", labels job-name and
  controller-uid (and their batch.kubernetes.io/ forms), owned by the Job.
  restartPolicy is the template's: Never (a failed pod is replaced by a new
  one) or OnFailure (the node agent restarts the container in place).
- Active pods are kept at min(parallelism, completions - succeeded). With
  completions unset and parallelism set, the Job is a work queue: it completes
  once a pod succeeded and none is active (Kubernetes' rule).
- A failed pod is replaced after a back-off that doubles per failure
  (`job_backoff_base`, capped at `job_backoff_max`; Kubernetes: 10 s .. 6 min).
- Failed=True, reason BackoffLimitExceeded, once failed pods exceed
  backoffLimit (default 6; with OnFailure: container restarts reach it), or
  DeadlineExceeded once activeDeadlineSeconds passed since startTime; its
  active pods are deleted. Complete=True once completions pods succeeded.
- ttlSecondsAfterFinished: the finished Job is deleted (foreground, so its pods
  go first) that many seconds after it finished.
- suspend: active pods are deleted and Suspended=True until resumed.
- Status: startTime, completionTime, active, ready, succeeded, failed,
  conditions; events SuccessfulCreate, SuccessfulDelete, Completed,
  BackoffLimitExceeded, DeadlineExceeded.

Threads model: the controller's workers (see base.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from corral import selectors
from corral.errors import Invalid
from corral.v1 import batch_pb2, core_pb2

from .actions import Create, Delete, Emit, Result, UpdateStatus, event
from .base import Controller, ns_key
from .clock import from_timestamp, is_set, to_timestamp
from .informers import Handlers
from .podutil import (
    condition_true,
    controller_ref,
    copy,
    created,
    get_condition,
    is_active,
    is_ready,
    is_terminating,
    pod_from_template,
    set_condition,
)
from .replicaset import claim_pods, deletion_rank

JOB_NAME = "job-name"
CONTROLLER_UID = "controller-uid"


def is_finished(job: batch_pb2.Job) -> bool:
    return condition_true(job.status.conditions, "Complete") or \
        condition_true(job.status.conditions, "Failed")


def finished_at(job: batch_pb2.Job) -> float:
    if is_set(job.status.completion_time):
        return from_timestamp(job.status.completion_time)
    for type_ in ("Complete", "Failed"):
        c = get_condition(job.status.conditions, type_)
        if c is not None and c.status == "True":
            return from_timestamp(c.last_transition_time)
    return 0.0


def selector_of(job: batch_pb2.Job) -> selectors.Selector:
    sel = job.spec.selector
    if sel.match_labels or sel.match_expressions:
        return selectors.from_proto(sel, "spec.selector")
    return selectors.from_match_labels({CONTROLLER_UID: job.metadata.uid})


def pod_failed_at(pod: core_pb2.Pod) -> float:
    latest = 0.0
    for cs in pod.status.container_statuses:
        if is_set(cs.state.terminated.finished_at):
            latest = max(latest, from_timestamp(cs.state.terminated.finished_at))
    return latest or created(pod)


def restarts_on_failure(job: batch_pb2.Job, pods: list[core_pb2.Pod]) -> int:
    if job.spec.template.spec.restart_policy != "OnFailure":
        return 0
    total = 0
    for p in pods:
        if p.status.phase in ("Running", "Pending", ""):
            total += sum(cs.restart_count for cs in p.status.init_container_statuses)
            total += sum(cs.restart_count for cs in p.status.container_statuses)
    return total


def reconcile(job: batch_pb2.Job, pods: Iterable[core_pb2.Pod], now: float, *,
              backoff_base: float = 10.0, backoff_max: float = 360.0) -> Result:
    result = Result()
    try:
        selector = selector_of(job)
    except Invalid as err:
        result.why = f"invalid selector: {err}"
        return result
    owned = claim_pods(job, selector, pods, result)
    spec = job.spec
    status = copy(job.status)
    active = [p for p in owned if is_active(p)]
    succeeded_pods = [p for p in owned if p.status.phase == "Succeeded"]
    failed_pods = [p for p in owned if p.status.phase == "Failed"]
    status.succeeded = max(status.succeeded, len(succeeded_pods))
    status.failed = max(status.failed, len(failed_pods))
    parallelism = spec.parallelism if spec.HasField("parallelism") else 1
    if spec.HasField("completions"):
        completions: int | None = spec.completions
    else:
        completions = None if spec.HasField("parallelism") else 1
    backoff_limit = spec.backoff_limit if spec.HasField("backoff_limit") else 6

    def delete_all(pods_: list[core_pb2.Pod]) -> None:
        for p in pods_:
            result.add(Delete.of(p, event=event(job, "SuccessfulDelete",
                                                f"Deleted pod: {p.metadata.name}")))

    def finish(type_: str, reason: str, message: str, warning: bool) -> None:
        set_condition(status.conditions, type_, "True", reason, message, now)
        if type_ == "Complete":
            status.completion_time.CopyFrom(to_timestamp(now))
        delete_all(active)
        status.active = 0
        status.ready = 0
        result.add(Emit(event(job, "Completed" if type_ == "Complete" else reason,
                              "Job completed" if type_ == "Complete" else message,
                              "Warning" if warning else "Normal")))
        result.why = f"job {type_.lower()}: {message}"

    if is_finished(job):
        # Anything still running after the end (e.g. seen late) is stopped.
        delete_all(active)
        status.active = 0
    elif spec.HasField("suspend") and spec.suspend:
        delete_all(active)
        status.active = 0
        status.ready = 0
        if set_condition(status.conditions, "Suspended", "True", "JobSuspended",
                         "Job suspended", now):
            result.add(Emit(event(job, "Suspended", "Job suspended")))
    else:
        if condition_true(status.conditions, "Suspended"):
            set_condition(status.conditions, "Suspended", "False", "JobResumed", "Job resumed",
                          now)
            result.add(Emit(event(job, "Resumed", "Job resumed")))
            status.start_time.CopyFrom(to_timestamp(now))
        if not is_set(status.start_time):
            status.start_time.CopyFrom(to_timestamp(now))
        started = from_timestamp(status.start_time)
        restarts = restarts_on_failure(job, active)
        over_limit = len(failed_pods) > backoff_limit or (
            spec.template.spec.restart_policy == "OnFailure"
            and (restarts > 0 if backoff_limit == 0 else restarts >= backoff_limit))
        deadline = spec.active_deadline_seconds if spec.HasField("active_deadline_seconds") \
            else None
        if over_limit:
            finish("Failed", "BackoffLimitExceeded",
                   "Job has reached the specified backoff limit", True)
        elif deadline is not None and now - started >= deadline:
            finish("Failed", "DeadlineExceeded",
                   "Job was active longer than specified deadline", True)
        elif (completions is not None and status.succeeded >= completions) or \
                (completions is None and status.succeeded > 0 and not active):
            finish("Complete", "CompletionsReached",
                   "Reached expected number of succeeded pods", False)
        else:
            if deadline is not None:
                result.requeue(started + deadline - now + 0.05)
            _manage(job, active, failed_pods, parallelism, completions, status, now,
                    backoff_base, backoff_max, result)
    if status != job.status:
        new = copy(job)
        new.status.CopyFrom(status)
        result.add(UpdateStatus(new))
    # After the status write: a TTL of 0 deletes the Job in the same sync.
    if is_terminating(job):
        pass  # already being deleted (by the TTL or by a user)
    elif is_finished(job):
        _ttl(job, now, result)
    elif condition_true(status.conditions, "Complete") or \
            condition_true(status.conditions, "Failed"):
        _ttl_after(job, now, now, result)
    return result


def _manage(job: batch_pb2.Job, active: list[core_pb2.Pod], failed_pods: list[core_pb2.Pod],
            parallelism: int, completions: int | None, status: batch_pb2.JobStatus,
            now: float, backoff_base: float, backoff_max: float, result: Result) -> None:
    if completions is None:
        # A work queue: after the first success, let what runs finish, start nothing.
        want = len(active) if status.succeeded > 0 else parallelism
    else:
        want = max(min(parallelism, completions - status.succeeded), 0)
    diff = want - len(active)
    status.ready = sum(1 for p in active if is_ready(p))
    if diff > 0:
        if failed_pods:
            delay = min(backoff_base * 2 ** (len(failed_pods) - 1), backoff_max)
            last = max(pod_failed_at(p) for p in failed_pods)
            if now < last + delay:
                result.requeue(last + delay - now)
                result.why = f"back-off after {len(failed_pods)} failed pod(s)"
                status.active = len(active)
                return
        labels = {JOB_NAME: job.metadata.name, f"batch.kubernetes.io/{JOB_NAME}":
                  job.metadata.name, CONTROLLER_UID: job.metadata.uid,
                  f"batch.kubernetes.io/{CONTROLLER_UID}": job.metadata.uid}
        for _ in range(diff):
            pod = pod_from_template(job.spec.template, job,
                                    generate_name=f"{job.metadata.name}-", extra_labels=labels)
            result.add(Create(pod, event=event(job, "SuccessfulCreate", "Created pod: {name}"),
                              failed_event=event(job, "FailedCreate", "Error creating: {error}",
                                                 "Warning")))
        result.why = f"{len(active)} active, want {want}"
    elif diff < 0:
        for p in sorted(active, key=deletion_rank)[:-diff]:
            result.add(Delete.of(p, event=event(job, "SuccessfulDelete",
                                                f"Deleted pod: {p.metadata.name}")))
    status.active = len(active) + diff


def _ttl(job: batch_pb2.Job, now: float, result: Result) -> None:
    _ttl_after(job, finished_at(job) or now, now, result)


def _ttl_after(job: batch_pb2.Job, finished: float, now: float, result: Result) -> None:
    if not job.spec.HasField("ttl_seconds_after_finished"):
        return
    expires = finished + job.spec.ttl_seconds_after_finished
    if now >= expires:
        result.add(Delete.of(job, propagation_policy="Foreground"))
        result.why = "ttlSecondsAfterFinished passed"
    else:
        result.requeue(expires - now + 0.05)


class JobController(Controller):
    name = "job"

    def setup(self) -> None:
        inf = self.ctx.informers
        inf["Job"].subscribe(Handlers(
            lambda j: self.queue.add(ns_key(j)),
            lambda old, new: self.queue.add(ns_key(new)),
            lambda j: None))
        inf["Pod"].subscribe(Handlers(self._pod, lambda old, new: self._pod(new), self._pod))

    def _pod(self, pod: core_pb2.Pod) -> None:
        ref = controller_ref(pod)
        if ref is not None and ref.kind == "Job":
            self.queue.add((pod.metadata.namespace, ref.name))

    def resync_keys(self) -> Iterable[tuple[str, str]]:
        return [ns_key(j) for j in self.ctx.informers["Job"].items()]

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        job = self.ctx.informers["Job"].get(name, ns)
        if job is None:
            return None
        cfg = self.ctx.config
        return reconcile(job, self.ctx.informers["Pod"].in_namespace(ns), self.ctx.clock.time(),
                         backoff_base=cfg.job_backoff_base, backoff_max=cfg.job_backoff_max)
