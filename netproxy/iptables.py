"""The kernel side: `iptables-restore --noflush`, `iptables-save`, conntrack cleanup.

Threads model: called from the sync thread only; every call is a child process
with a deadline (`timeout`), so a wedged iptables never wedges the proxy: the
call fails, the sync is counted as failed, and the next one is a full sync.

What the tools do here (iptables 1.8.9, nf_tables backend, read from behaviour
measured on this machine and kept in tests/netproxy/test_kernel.py):
- a restore is one nf_tables transaction per table: it applies whole or not at
  all, so traffic never sees a half-written ruleset, and a failed payload
  leaves the kernel as it was;
- with --noflush, `:CHAIN - [0:0]` creates a chain or flushes an existing one,
  and tables and chains not named are left alone (others' rules survive);
- --noflush restores cost grow faster than linearly with the number of chains
  they declare (about 2 s for 11,000 chains, 60 s for 55,000), which is why
  syncs write only the chains that differ;
- `iptables-save` prints rules in a canonical form (rules.py renders exactly
  that form), user chains sorted by name.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence

from netproxy.rules import TABLES, ChainId

log = logging.getLogger(__name__)


class IptablesError(Exception):
    """A restore, save or conntrack call failed; the message says which and why."""


def parse_save(text: str, table: str | None = None) -> dict[ChainId, tuple[str, ...]]:
    """Every chain of `iptables-save` output -> its rule lines ("-A CHAIN ...")."""
    chains: dict[ChainId, list[str]] = {}
    current = table or ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            current = line[1:]
        elif line.startswith(":"):
            chains.setdefault((current, line[1:].split(" ", 1)[0]), [])
        elif line.startswith("-A "):
            chain = line[3:].split(" ", 1)[0]
            chains.setdefault((current, chain), []).append(line)
    return {cid: tuple(lines) for cid, lines in chains.items()}


class Iptables:
    """Runs the iptables tools, optionally behind a command prefix.

    `prefix` is for tests and tools that act on another network namespace
    (["ip", "netns", "exec", NAME]); the proxy itself runs in its host's.
    """

    def __init__(self, *, restore: str = "iptables-restore", save: str = "iptables-save",
                 conntrack: str = "conntrack", timeout: float = 300.0,
                 prefix: Sequence[str] = ()) -> None:
        self.restore_cmd = restore
        self.save_cmd = save
        self.conntrack_cmd = conntrack
        self.timeout = timeout
        self.prefix = list(prefix)

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([*self.prefix, *args], input=stdin, capture_output=True,
                                  text=True, timeout=self.timeout)
        except FileNotFoundError as err:
            raise IptablesError(f"{args[0]}: not found ({err.strerror}); "
                                "install it with `apt-get install iptables conntrack`") from None
        except subprocess.TimeoutExpired:
            raise IptablesError(f"{' '.join(args)}: no answer within {self.timeout:g} s") from None

    def restore(self, payload: str) -> None:
        """Apply `payload` atomically with --noflush; IptablesError if refused."""
        proc = self._run([self.restore_cmd, "--noflush"], stdin=payload)
        if proc.returncode != 0:
            detail = " ".join(proc.stderr.split())[:500] or f"exit status {proc.returncode}"
            raise IptablesError(f"{self.restore_cmd} --noflush: {detail}")

    def save(self, tables: Sequence[str] = TABLES) -> dict[ChainId, tuple[str, ...]]:
        """Every chain of `tables` as the kernel holds it now (one iptables-save of
        every table: one process instead of one per table is what a small sync
        costs most)."""
        proc = self._run([self.save_cmd])
        if proc.returncode != 0:
            detail = proc.stderr.strip()[:300] or f"exit status {proc.returncode}"
            raise IptablesError(f"{self.save_cmd}: {detail}")
        return {cid: lines for cid, lines in parse_save(proc.stdout).items()
                if cid[0] in tables}

    def clear_udp_flows(self, orig_dst: str, dst_nat: str = "") -> None:
        """Forget UDP conntrack entries to a VIP (optionally only those NATed to one
        endpoint), so UDP "connections" do not stick to an endpoint that went away
        or to the REJECT a Service without endpoints gave. Best effort: logged."""
        args = [self.conntrack_cmd, "-D", "-p", "udp", "--orig-dst", orig_dst]
        if dst_nat:
            args += ["--dst-nat", dst_nat]
        try:
            proc = self._run(args)
        except IptablesError as err:
            log.warning("conntrack cleanup: %s", err)
            return
        # Exit status 1 with "0 flow entries have been deleted" is the normal "none".
        if proc.returncode not in (0, 1):
            log.warning("%s: %s", " ".join(args), proc.stderr.strip()[:300])
