"""The controllers of the Raft leader: Kubernetes' workload semantics on Corral's store.

Each kind has its own module with a pure `reconcile` function (informer snapshot and
clock in, actions out) and a small Controller class (base.py) that feeds it from
shared informers through a work queue. `manager.build` is the leader-only hook that
`controlplane.main` calls when this replica gains leadership; see docs/controllers.md.
"""
