"""The reference pauser's ledger: every decision it received and what it did, in SQLite.

An action is recorded as ``started`` before the command runs and with its outcome after, and
both before the Kafka offset is committed: a pauser killed anywhere in between finds the
decision again on restart, sees ``started``, and runs the command again with the same decision
id (the command answers exit 3, "already in that state", if it had finished). Every other
decision (replayed, expired, noted, shadow) is recorded once, so the ledger is the audit trail.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import NamedTuple

import orjson

from .policy import Known

HOUR_MS = 3_600_000
FINAL = ("done", "already", "given_up", "skipped", "dropped", "noted", "shadow", "undone")
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
                                    -- shadow, undone
    reason TEXT NOT NULL DEFAULT '',
    action TEXT,                    -- pause | resume: what the command was asked to do
    prior_state TEXT,               -- running | paused: what undo restores
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL              -- the decision JSON, evidence included
);
CREATE INDEX IF NOT EXISTS entries_campaign ON entries (campaign, seq);
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
        return orjson.loads(self.body)


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)  # autocommit: each write durable
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

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
        return Known(outcome, last_seq, pauses, self.paused_campaigns(), self.campaigns_seen())

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
    ) -> None:
        self.db.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(decision_id) DO UPDATE SET outcome = excluded.outcome, "
            "reason = excluded.reason, action = excluded.action, "
            "acted_at_ms = excluded.acted_at_ms, prior_state = excluded.prior_state, "
            "exit_code = excluded.exit_code, attempts = excluded.attempts",
            (
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
            ),
        )

    def history(self, campaign: str | None = None, limit: int = 100) -> list[Entry]:
        query = "SELECT * FROM entries"
        args: tuple = ()
        if campaign:
            query += " WHERE campaign = ?"
            args = (campaign,)
        query += " ORDER BY received_at_ms DESC, seq DESC LIMIT ?"
        return [Entry(*row) for row in self.db.execute(query, (*args, limit))]
