"""The scheduler: binds each unbound pod to a node that fits.

The decision is pure (`core.schedule`: pods + a snapshot of nodes and bound
pods in, a plan of bindings and failures out), built from small feasibility
predicates (`predicates.py`) and scorers (`ranking.py`), as Nomad's scheduler
and kube-scheduler's plugins. The runtime (`runner.py`) keeps the snapshot's
inputs in informers, batches the queue of unbound pods against one snapshot,
assumes each decision at once (so the next pod of the batch sees it), and
writes each binding as a conditional Update of the pod.
"""
