"""Read a stopped replica's data folder: its state as it is on disk.

    python -m controlplane.store.inspect DATA_DIR [--to-log-end] [--json]

Loads the snapshot, then replays the journal's entries after it (up to the
commit index recorded in the journal's metadata, or to the end of the log
with `--to-log-end`) into a fresh state machine, and prints the revision, the
digest (the same as `Store.digest()`), the record count per kind and the Raft
positions. Tests use it to compare replicas' durable state; operators can use
it to check a replica before bringing it back.

Run it only on a stopped replica: opening the journal drops a torn tail, as
the replica itself would on start. Nothing else is written.

Threading: single-threaded, no background work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pysyncobj.pickle as sync_pickle

from controlplane.store import snapshotfile
from controlplane.store.journal import DurableJournal
from controlplane.store.raft import _Machine
from controlplane.store.state import StoreState
from controlplane.store.watch import WatchHub

_REGULAR = 0  # pysyncobj's _COMMAND_TYPE.REGULAR


@dataclass(frozen=True)
class ReplicaImage:
    revision: int
    digest: str
    kinds: dict[str, int]
    snapshot_index: int
    replayed_to: int
    commit_index: int
    log_first: int
    log_last: int
    term: int
    state: StoreState


def method_ids(machine: object) -> dict[int, str]:
    """pysyncobj's funcID -> method name for a consumer that is the only one
    (SyncObj.__init__: replicated methods sorted by (version, consumer, name))."""
    names = []
    for m in dir(machine):
        attr = getattr(machine, m)
        if callable(attr) and getattr(attr, "replicated", False) and m != attr.origName:
            names.append((attr.ver, m))
    return {i: name for i, (_, name) in enumerate(sorted(names))}


def load(data_dir: str, *, to_log_end: bool = False) -> ReplicaImage:
    state = StoreState()
    lock = threading.RLock()
    machine = _Machine(state, lock, WatchHub(state, lock))
    ids = method_ids(machine)
    journal_path = os.path.join(data_dir, "raft.journal")
    if not os.path.exists(journal_path):
        raise FileNotFoundError(f"{data_dir} holds no Raft journal (raft.journal)")
    snap_path = os.path.join(data_dir, "raft.snapshot")
    snapshot_index = 1
    if os.path.exists(snap_path):
        raft_data, snap = snapshotfile.decode(snapshotfile.read(snap_path))
        state.restore(snap)
        snapshot_index = raft_data[0][1]
    journal = DurableJournal(journal_path)
    try:
        commit = journal.getRaftCommitIndex()
        last = journal.last_index
        limit = last if to_log_end else commit
        replayed = snapshot_index
        for i in range(len(journal)):
            command, idx, _term = journal[i]
            if idx <= snapshot_index or idx > limit:
                continue
            if command[0] == _REGULAR:
                cmd = sync_pickle.loads(command[1:])
                func_id, args, kwargs = _split(cmd)
                getattr(machine, ids[func_id])(*args, _doApply=True, **kwargs)
            replayed = idx
        first = journal[0][1] if len(journal) else 0
        term = journal.getCurrentTerm()
    finally:
        journal._destroy()
    rev, digest = state.digest()
    kinds = Counter(r.kind for k in state.kinds() for r in state.list(k))
    return ReplicaImage(rev, digest, dict(sorted(kinds.items())), snapshot_index, replayed,
                        commit, first, last, term, state)


def _split(cmd: Any) -> tuple[int, tuple[Any, ...], dict[str, Any]]:
    if not isinstance(cmd, tuple):
        return cmd, (), {}
    if len(cmd) == 2:
        return cmd[0], tuple(cmd[1]), {}
    return cmd[0], tuple(cmd[1]), dict(cmd[2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.store.inspect",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--to-log-end", action="store_true",
                   help="replay every journal entry, not only those known committed")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        print(f"inspect: {args.data_dir} is not a folder", file=sys.stderr)
        return 1
    img = load(args.data_dir, to_log_end=args.to_log_end)
    out = {
        "revision": img.revision, "digest": img.digest, "kinds": img.kinds,
        "snapshotIndex": img.snapshot_index, "replayedTo": img.replayed_to,
        "commitIndex": img.commit_index, "logFirst": img.log_first, "logLast": img.log_last,
        "term": img.term,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
