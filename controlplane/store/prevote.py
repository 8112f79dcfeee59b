"""PreVote (Raft thesis §9.6): ask before standing for election.

pysyncobj starts an election as soon as a follower's election timer runs out
(and it is connected to anyone): it raises its term, and any member that
later hears that term steps down, the live leader included. A member cut off
by a silent partition (its TCP connections not yet seen as dead) therefore
ran its term up election after election, and on heal deposed the healthy
leader with it.

With PreVote a member whose timer runs out first asks every peer "would you
vote for me in term T+1?" without changing any term. A peer says yes only if

- T+1 is above its own term,
- the asker's log is at least as up to date as its own (Raft's vote rule), and
- it has not heard from a live leader within the minimum election timeout
  (it is not the leader itself, and its leader's last append_entries is older
  than that, or it has already forgotten the leader because the leader's
  connection dropped: a crashed leader is still replaced at once).

Only with yes from a majority (the asker included) does pysyncobj's own
election go ahead, at the next tick. A cut-off member never gets that
majority, so its term stays put and its return disturbs nobody. A "no" that
carries a higher term teaches the asker that term (standard Raft: any higher
term is adopted), so a member that fell behind in terms can win later rounds.

This module holds the messages, the grant rule and the round bookkeeping;
`raftnode.RaftNode` wires it into pysyncobj's tick and message handler.

Threading: used only from the Raft tick thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRE_VOTE = "corral_pre_vote"
PRE_VOTE_REPLY = "corral_pre_vote_reply"


@dataclass(frozen=True)
class LogPosition:
    """The last entry of a log: Raft compares logs by (term, index)."""

    term: int
    index: int

    def at_least(self, other: LogPosition) -> bool:
        return self.term > other.term or (self.term == other.term and self.index >= other.index)


def grants(*, asked_term: int, asker_log: LogPosition, my_term: int, my_log: LogPosition,
           leader_alive: bool) -> bool:
    """The grant rule of a pre-vote: pure, see the module docstring."""
    return asked_term > my_term and not leader_alive and asker_log.at_least(my_log)


def request(round_id: int, next_term: int, log: LogPosition) -> dict[str, Any]:
    return {"type": PRE_VOTE, "round": round_id, "term": next_term,
            "last_log_index": log.index, "last_log_term": log.term}


def asked(message: dict[str, Any]) -> tuple[int, LogPosition]:
    """The term and log position a PRE_VOTE message asks with."""
    return int(message["term"]), LogPosition(int(message["last_log_term"]),
                                             int(message["last_log_index"]))


def reply(message: dict[str, Any], my_term: int, granted: bool) -> dict[str, Any]:
    return {"type": PRE_VOTE_REPLY, "round": message["round"], "term": my_term,
            "granted": granted}


class PreVoteRounds:
    """The asking side: one round at a time; a round's yes votes, and the approval
    it yields (good for the next tick only)."""

    def __init__(self, members: int) -> None:
        self._members = members  # the whole cluster, this member included
        self._round = 0
        self._term = 0  # the term the current round asks for
        self._yes: set[str] = set()
        self._approved = False
        self.rounds = 0  # rounds started (status, tests)
        self.elections = 0  # rounds that reached a majority

    def start(self, next_term: int) -> int:
        """Begin a round asking for `next_term`; returns its id."""
        self._round += 1
        self._term = next_term
        self._yes = set()
        self._approved = False
        self.rounds += 1
        return self._round

    def on_reply(self, peer: str, message: dict[str, Any]) -> bool:
        """Count a reply; True when this reply completes a majority."""
        if message.get("round") != self._round or not message.get("granted") or self._approved:
            return False
        self._yes.add(peer)
        if 1 + len(self._yes) > self._members // 2:
            self._approved = True
            self.elections += 1
            return True
        return False

    def alone_wins(self) -> bool:
        """A one-member cluster needs nobody's yes."""
        return self._members == 1

    def take_approval(self) -> bool:
        """True once after a round reached a majority: the election may run now."""
        approved, self._approved = self._approved, False
        if approved:
            self._round += 1  # late replies to the finished round count for nothing
        return approved
