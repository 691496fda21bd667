"""The reference pauser's ledger: every decision it received and what it did, in SQLite.

An action is recorded as ``started`` before the command runs and with its outcome after, and
both before the Kafka offset is committed: a pauser killed anywhere in between finds the
decision again on restart, sees ``started``, and runs the command again with the same decision
id (the command answers exit 3, "already in that state", if it had finished). Every other
decision (replayed, expired, noted, shadow) is recorded once, so the ledger is the audit trail;
so is every message that is not a decision the pauser can judge (``refused``, keyed by its place
on the topic, its raw body kept) and every decision whose handling failed unexpectedly
(``error``: final, so a command that may have run is not run again).

Running the command is claimed atomically (``claim``): one SQLite write transaction checks that
the decision has no outcome and no other pauser's live claim, takes it, and records ``started``.
Pausers sharing a ledger file therefore run the command once per decision between them, and
their limits (pauses per hour, share paused) are counted over the one ledger.

A claim names its owner by a token unique to one pauser process (not by host and pid: two
containers may share a hostname and a pid). The owner renews it while it acts (``renew``: its
``beat`` goes up). Another pauser takes a claim over only once it has watched it unchanged (same
owner, beat and renewal time) for ``lease_ms`` of its own monotonic clock, or when its
``owner_gone`` knows the owner has ended: that is the crash case, and the command runs again
with the same decision id. No wall clock decides a takeover. The outcomes of an action are
recorded only by the claim's holder (``record(owner=...)``): a pauser whose claim was taken over
cannot overwrite the new holder's.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import orjson

from .policy import Known

HOUR_MS = 3_600_000
FINAL = (
    "done",
    "already",
    "given_up",
    "skipped",
    "dropped",
    "noted",
    "shadow",
    "undone",
    "refused",
    "error",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    decision_id TEXT PRIMARY KEY,
    campaign TEXT NOT NULL,
    rule TEXT NOT NULL,
    verdict TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    acted_at_ms INTEGER,
    outcome TEXT NOT NULL,          -- started, done, already, failed, given_up, dropped, noted,
                                    -- shadow, undone, refused, error
    reason TEXT NOT NULL DEFAULT '',
    action TEXT,                    -- pause | resume: what the command was asked to do
    prior_state TEXT,               -- running | paused: what undo restores
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL              -- the decision JSON, evidence included
);
CREATE INDEX IF NOT EXISTS entries_campaign ON entries (campaign, seq);
CREATE TABLE IF NOT EXISTS claims (
    decision_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,            -- the token of the pauser that runs the command
    claimed_at_ms INTEGER NOT NULL, -- wall clock of the last renewal: for people, not a lease
    beat INTEGER NOT NULL DEFAULT 0 -- +1 at each renewal: what another pauser watches
);
CREATE TABLE IF NOT EXISTS partition_sizes (
    partition INTEGER PRIMARY KEY,
    campaigns INTEGER NOT NULL
);
"""


class Entry(NamedTuple):
    decision_id: str
    campaign: str
    rule: str
    verdict: str
    seq: int
    received_at_ms: int
    acted_at_ms: int | None
    outcome: str
    reason: str
    action: str | None
    prior_state: str | None
    exit_code: int | None
    attempts: int
    body: str

    @property
    def decision(self) -> dict:
        """The decision as received; a refused body that is not a JSON object: ``{}``."""
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


class Claim(NamedTuple):
    won: bool
    outcome: str | None  # the decision's final outcome, if it has one
    holder: str | None  # the owner of the claim (this pauser if won)
    taken_from: str | None = None  # won by taking over this owner's claim


log = logging.getLogger("kpi_monitor.pauser")


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)  # autocommit: each write durable
        self.db.execute("PRAGMA busy_timeout=10000")  # another pauser's write: wait, not fail
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._migrate()
        # The claims of other owners this pauser waits on: decision id -> the claim as last seen
        # (owner, beat, claimed_at_ms) and when it was first seen so, on the caller's monotonic
        # clock. A claim seen unchanged for a lease has not been renewed for a lease.
        self._watch: dict[str, tuple[tuple, int]] = {}

    def _migrate(self) -> None:
        """Ledgers written before claims had a ``beat``: add it (once, under the write lock)."""
        if "beat" in self._claim_columns():
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if "beat" not in self._claim_columns():
                self.db.execute("ALTER TABLE claims ADD COLUMN beat INTEGER NOT NULL DEFAULT 0")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _claim_columns(self) -> set[str]:
        return {row[1] for row in self.db.execute("PRAGMA table_info(claims)")}

    def close(self) -> None:
        self.db.close()

    def get(self, decision_id: str) -> Entry | None:
        row = self.db.execute(
            "SELECT * FROM entries WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        return Entry(*row) if row else None

    def known(self, decision: dict, now_ms: int) -> Known:
        entry = self.get(decision["decision_id"])
        outcome = entry.outcome if entry and entry.outcome in FINAL else None
        (last_seq,) = self.db.execute(
            "SELECT max(seq) FROM entries WHERE campaign = ? AND decision_id != ?",
            (decision["campaign_id"], decision["decision_id"]),
        ).fetchone()
        (pauses,) = self.db.execute(
            "SELECT count(*) FROM entries WHERE action = 'pause' AND outcome = 'done' "
            "AND acted_at_ms > ?",
            (now_ms - HOUR_MS,),
        ).fetchone()
        return Known(
            outcome,
            last_seq,
            pauses,
            self.paused_campaigns(),
            self.campaigns_seen(),
            self.pausing_rules(decision["campaign_id"]),
        )

    def pausing_rules(self, campaign: str) -> frozenset[str]:
        """The rules whose pause of ``campaign`` this pauser made and still holds, from the
        ledger in the order it was written: a pause it ran (``done``) takes the campaign; a pause
        of another rule while the campaign is ours joins it (``already``: it was paused by us);
        a resume of a rule releases that rule (run, already, or skipped because others still
        hold it); a pause undone, or a resume run, releases them all. A pause the campaign
        already had when nothing of ours held it (a human's) is never ours."""
        ours: set[str] = set()
        # In the order things happened: an undo updates its pause's entry with its own time.
        rows = self.db.execute(
            "SELECT rule, verdict, action, outcome FROM entries WHERE campaign = ? "
            "AND verdict IN ('pause', 'resume') "
            "ORDER BY coalesce(acted_at_ms, received_at_ms), rowid",
            (campaign,),
        )
        for rule, verdict, action, outcome in rows:
            if verdict == "pause":
                # A pause whose command may have run and was never finished (its pauser killed,
                # the decision expired) counts as ours: its resume is then run (the command
                # answers "already" if it had not paused), not left paused for good.
                maybe = outcome in ("started", "failed") and action == "pause"
                if outcome == "done" or maybe or (outcome == "already" and ours):
                    ours.add(rule)
                elif outcome == "undone":
                    ours.clear()
            elif verdict == "resume":
                if action == "resume" and outcome == "done":
                    ours.clear()
                elif outcome in ("already", "skipped"):
                    ours.discard(rule)
        return frozenset(ours)

    def paused_campaigns(self) -> int:
        """Campaigns whose latest command this pauser ran was a pause it made (not undone)."""
        (count,) = self.db.execute("""
            SELECT count(*) FROM (
                SELECT campaign, action, outcome, max(acted_at_ms) FROM entries
                WHERE outcome IN ('done', 'already', 'undone') AND action IS NOT NULL
                GROUP BY campaign)
            WHERE action = 'pause' AND outcome = 'done'""").fetchone()
        return count

    def campaigns_seen(self) -> int:
        (count,) = self.db.execute(
            "SELECT coalesce(sum(campaigns), 0) FROM partition_sizes"
        ).fetchone()
        return count

    def note_partition_size(self, partition: int, campaigns: int) -> None:
        self.db.execute(
            "INSERT INTO partition_sizes VALUES (?, ?) ON CONFLICT(partition) "
            "DO UPDATE SET campaigns = excluded.campaigns",
            (partition, campaigns),
        )

    def record(
        self,
        decision: dict,
        now_ms: int,
        outcome: str,
        reason: str = "",
        *,
        action: str | None = None,
        acted_at_ms: int | None = None,
        prior_state: str | None = None,
        exit_code: int | None = None,
        attempts: int = 0,
        owner: str | None = None,
        keep_final: bool = False,
        keep_attempt: bool = False,
    ) -> bool:
        """Write the decision's outcome; whether it was written. With ``owner``: only if that
        owner holds the decision's claim (an action's outcome, recorded by whoever ran it last).
        With ``keep_final``: never over a final outcome (another pauser's, recorded meanwhile);
        with ``keep_attempt`` too, nor over an action that may have run (``started``,
        ``failed``). An action already recorded is kept when the new outcome names none."""
        values = (
            decision["decision_id"],
            decision["campaign_id"],
            decision["rule"],
            decision["verdict"],
            decision["seq"],
            now_ms,
            acted_at_ms,
            outcome,
            reason,
            action,
            prior_state,
            exit_code,
            attempts,
            orjson.dumps(decision).decode(),
        )
        if outcome in FINAL:
            self._watch.pop(decision["decision_id"], None)  # no claim of it is waited on now
        if owner is None:
            return self._write(values, keep_final, keep_attempt)
        self.db.execute("BEGIN IMMEDIATE")  # the claim cannot change hands before the write
        try:
            holder = self.holder(decision["decision_id"])
            if holder != owner:
                self.db.execute("ROLLBACK")
                log.error(
                    "decision %s: claim lost to %s: outcome %s not recorded",
                    decision["decision_id"],
                    holder,
                    outcome,
                )
                return False
            self._write(values, keep_final, keep_attempt)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return True

    def _write(self, values: tuple, keep_final: bool, keep_attempt: bool = False) -> bool:
        protected = ", ".join(f"'{outcome}'" for outcome in FINAL)
        if keep_attempt:
            # An action that may have run ('started', 'failed': a holder killed mid-command,
            # its decision expired before the lease ran out): that row and its action stay.
            protected += ", 'started', 'failed'"
        cursor = self.db.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(decision_id) DO UPDATE SET outcome = excluded.outcome, "
            "reason = excluded.reason, action = coalesce(excluded.action, entries.action), "
            "acted_at_ms = excluded.acted_at_ms, prior_state = excluded.prior_state, "
            "exit_code = excluded.exit_code, attempts = excluded.attempts"
            + (f" WHERE entries.outcome NOT IN ({protected})" if keep_final else ""),
            values,
        )
        return cursor.rowcount > 0

    def holder(self, decision_id: str) -> str | None:
        """The owner of the decision's claim, if anyone ever claimed it."""
        row = self.db.execute(
            "SELECT owner FROM claims WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        return row[0] if row else None

    def renew(self, decision_id: str, owner: str, now_ms: int) -> bool:
        """Renew ``owner``'s claim on the decision (its beat goes up); False: it holds none now,
        another pauser took it over."""
        cursor = self.db.execute(
            "UPDATE claims SET beat = beat + 1, claimed_at_ms = ? "
            "WHERE decision_id = ? AND owner = ?",
            (now_ms, decision_id, owner),
        )
        return cursor.rowcount == 1

    def claim(
        self,
        decision: dict,
        owner: str,
        now_ms: int,
        lease_ms: int,
        *,
        monotonic_ms: int,
        action: str,
        attempts: int,
        owner_gone: Callable[[str], bool] = lambda owner: False,
    ) -> Claim:
        """Take the decision for ``owner`` and record it ``started``, in one write transaction,
        unless it has a final outcome or another owner holds a live claim on it.

        Another owner's claim is live until this ledger has seen it unchanged (same owner, same
        beat) for ``lease_ms`` of ``monotonic_ms`` (the caller's monotonic clock, not the wall
        clock: a clock step changes nothing), or until ``owner_gone(owner)`` says its owner has
        ended. The first look at a claim starts the watch. ``now_ms`` is only written down."""
        decision_id = decision["decision_id"]
        self.db.execute("BEGIN IMMEDIATE")  # the write lock first: no one else checks meanwhile
        try:
            entry = self.get(decision_id)
            if entry is not None and entry.outcome in FINAL:
                self.db.execute("ROLLBACK")
                self._watch.pop(decision_id, None)
                return Claim(False, entry.outcome, None)
            row = self.db.execute(
                "SELECT owner, beat, claimed_at_ms FROM claims WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
            taken_from = None
            if row is not None and row[0] != owner:
                holder, seen = row[0], tuple(row)
                watched = self._watch.get(decision_id)
                if watched is None or watched[0] != seen:
                    self._watch[decision_id] = watched = (seen, monotonic_ms)
                if monotonic_ms - watched[1] < lease_ms and not owner_gone(holder):
                    self.db.execute("ROLLBACK")
                    return Claim(False, None, holder)
                taken_from = holder
            # A takeover goes on counting beats: an (owner, beat) pair is never seen twice.
            self.db.execute(
                "INSERT INTO claims (decision_id, owner, claimed_at_ms, beat) VALUES (?, ?, ?, 0) "
                "ON CONFLICT(decision_id) DO UPDATE SET owner = excluded.owner, "
                "claimed_at_ms = excluded.claimed_at_ms, beat = claims.beat + 1",
                (decision_id, owner, now_ms),
            )
            self.record(decision, now_ms, "started", action=action, attempts=attempts)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._watch.pop(decision_id, None)
        return Claim(True, None, owner, taken_from)

    def refuse(self, decision_id: str, now_ms: int, reason: str, body: str) -> None:
        """A message that is not a decision the pauser can judge, kept as it came."""
        self.db.execute(
            "INSERT INTO entries (decision_id, campaign, rule, verdict, seq, received_at_ms, "
            "outcome, reason, body) VALUES (?, '', '', '', 0, ?, 'refused', ?, ?) "
            "ON CONFLICT(decision_id) DO NOTHING",
            (decision_id, now_ms, reason, body),
        )

    def history(self, campaign: str | None = None, limit: int = 100) -> list[Entry]:
        query = "SELECT * FROM entries"
        args: tuple = ()
        if campaign:
            query += " WHERE campaign = ?"
            args = (campaign,)
        query += " ORDER BY received_at_ms DESC, seq DESC LIMIT ?"
        return [Entry(*row) for row in self.db.execute(query, (*args, limit))]
