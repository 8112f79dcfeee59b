"""A real Corral control plane in the lab: three `corral-controlplane` replicas, each
on its own host (network namespace), Raft over the lab switch, clients on the
machine through each host's unix socket. Power loss of the leader's host, and a
partition, with the promises of issue 3 checked:

- a leader is elected; a write through any host's socket works;
- kill the leader's host: a new leader within 2 s, writes continue, the host
  started again catches up (its applied index reaches the leader's);
- partition one host: the majority keeps accepting writes, the cut-off replica
  accepts none (and its refused write is not there after heal), it catches up.

Every test brings the lab down and checks nothing is left (tests/labfixture.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest

from corral.client import Client
from corral.errors import NotFound, Timeout, Unavailable
from corral.lab import Lab
from corral.v1 import core_pb2, meta_pb2

pytestmark = pytest.mark.lab

FAILOVER_BUDGET = 2.0


def configmap(name: str, value: str = "v") -> core_pb2.ConfigMap:
    return core_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(name=name, namespace="default"),
                              data={"k": value})


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> float:
    """Poll `cond` until true; return how long it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def applied(lab: Lab, host: str) -> int:
    view = lab.member_status(host)
    return view.status.applied_index if view.status is not None else -1


def leader_seen_by(lab: Lab, hosts: Sequence[str]) -> str:
    """The leader every one of `hosts` names, or ""."""
    names = set()
    for h in hosts:
        view = lab.member_status(h, timeout=0.5)
        names.add(view.status.leader if view.status is not None else "")
    return names.pop() if len(names) == 1 else ""


def only(lab: Lab, host: str, **kwargs: float) -> Client:
    return lab.client([host], **kwargs)


def stale_names(lab: Lab, host: str) -> set[str]:
    """The ConfigMaps in `default` as `host`'s replica has applied them."""
    with only(lab, host, retry_for=0.0, timeout=3.0) as c:
        items, _ = c.list("ConfigMap", "default", stale=True)
    return {i.metadata.name for i in items}


def test_a_leader_is_elected_and_writes_through_each_hosts_socket_work(cp_lab: Lab) -> None:
    lab = cp_lab
    leader = lab.leader()
    assert leader in {"h1", "h2", "h3"}
    for h in ("h1", "h2", "h3"):
        with only(lab, h) as c:
            made = c.create(configmap(f"via-{h}", h))
            assert made.metadata.resource_version
    wanted = {"via-h1", "via-h2", "via-h3"}
    # Committed means on every replica: each one's own applied state has all three.
    for h in ("h1", "h2", "h3"):
        def has_all(host: str = h) -> bool:
            return wanted <= stale_names(lab, host)

        wait_until(f"{h} to apply all writes", has_all)
    with lab.client() as c:
        st = c.cluster_status()
    assert st.leader == leader
    assert {m.name for m in st.members} == {"h1", "h2", "h3"}
    assert all(m.reachable for m in st.members)


def test_power_loss_of_the_leader_host_fails_over_within_2s_and_it_catches_up(
        cp_lab: Lab) -> None:
    lab = cp_lab
    old = lab.leader()
    survivors = [h for h in ("h1", "h2", "h3") if h != old]
    with lab.client() as c:
        for i in range(20):
            c.create(configmap(f"before-{i}"))

    loss = lab.kill(old)
    wait_until("a new leader among the survivors",
               lambda: leader_seen_by(lab, survivors) not in ("", old), timeout=10)
    failover = time.monotonic() - loss.at
    new = leader_seen_by(lab, survivors)
    print(f"failover from {old} to {new} in {failover:.2f} s")
    assert failover < FAILOVER_BUDGET, f"new leader after {failover:.2f} s"

    # Writes continue through the survivors' sockets.
    with lab.client(survivors) as c:
        for i in range(50):
            c.create(configmap(f"after-{i}"))

    # Powered on again with the same state folder, it catches up.
    lab.start(old)
    target = applied(lab, new)
    wait_until(f"{old} to reach the leader's applied index {target}",
               lambda: applied(lab, old) >= target, timeout=30)
    names = stale_names(lab, old)
    assert {f"before-{i}" for i in range(20)} <= names
    assert {f"after-{i}" for i in range(50)} <= names
    # And it takes part again: a write through its own socket commits.
    with only(lab, old) as c:
        c.create(configmap("through-the-restarted-host"))


@pytest.mark.parametrize("cut", ["leader", "follower"])
def test_a_partitioned_replica_accepts_no_write_and_catches_up_after_heal(
        cp_lab: Lab, cut: str) -> None:
    lab = cp_lab
    leader = lab.leader()
    alone = leader if cut == "leader" else next(h for h in ("h1", "h2", "h3") if h != leader)
    majority = [h for h in ("h1", "h2", "h3") if h != alone]
    lab.partition([alone])

    # The majority keeps (or, when the leader was cut off, soon regains) a leader
    # and accepts writes through its sockets.
    wait_until("a leader on the majority side",
               lambda: leader_seen_by(lab, majority) in majority, timeout=15)
    with lab.client(majority) as c:
        for i in range(30):
            c.create(configmap(f"majority-{i}"))

    # The cut-off replica accepts none: the write fails or times out.
    with only(lab, alone, timeout=3.0, retry_for=0.0) as c, \
            pytest.raises((Unavailable, Timeout)):
        c.create(configmap("split-brain"))
    # Not even in its own applied state: only committed entries are applied.
    assert "split-brain" not in stale_names(lab, alone)

    lab.heal()
    new_leader = leader_seen_by(lab, majority)
    target = applied(lab, new_leader)
    wait_until(f"{alone} to catch up to applied index {target}",
               lambda: applied(lab, alone) >= target and leader_seen_by(lab, ["h1", "h2", "h3"])
               == new_leader, timeout=30)
    # No split brain: the refused write is nowhere, the majority's writes everywhere.
    for h in ("h1", "h2", "h3"):
        names = stale_names(lab, h)
        assert "split-brain" not in names, h
        assert {f"majority-{i}" for i in range(30)} <= names, h
    with lab.client() as c, pytest.raises(NotFound):
        c.get("ConfigMap", "split-brain", "default")
