"""The state table's local store: the changelog's latest record per key, on disk, with the offset
it is complete to, so that a restart reads its own file plus the changelog's tail.

SQLite (standard library, one file per worker in ``KPI_DATA_DIR``): a table of records keyed by
the state key (with its partition), and the changelog offset each partition's records are
complete to. Two writers, each committing records and offset in one transaction:

* Faust's changelog recovery (``apply_changelog_batch``): the tail of an active partition before
  it is handed over, and every record of a standby partition as it comes;
* the worker's own writes, once the broker has acknowledged them (``mirror``): the live state's
  records are not read back from the changelog.

Faust starts each partition's recovery after ``persisted_offset`` instead of at 0, so a restart
costs the live records of the worker's partitions plus what was written since its last mirrored
batch, not the whole history. The file is only a cache of the changelog: ``verify`` (before the
worker starts) drops a partition whose file is ahead of the changelog or disagrees with the
record at its offset (a recreated topic, a reset broker), and a corrupt file is set aside.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from faust.stores import memory
from faust.types import TP

from stream.codec import partition_of_key

log = logging.getLogger(__name__)
SCHEMA = 1
# Records queued for the file at most before the worker's writes wait for it (``wait_for_room``):
# what a crash then leaves to read from the changelog (Faust's recovery: ~5,200 records/s here).
MAX_QUEUED_RECORDS = 5_000
LOCK_WAIT_SECONDS = 30.0


def record_digest(key: bytes, value: bytes | None) -> bytes:
    """What identifies a changelog record at an offset (checked against the broker's)."""
    return hashlib.blake2b(key + b"\x00" + (value or b""), digest_size=12).digest()


class LocalRecords:
    """The SQLite file: records by key, and per partition the offset they are complete to.

    Safe to call from several threads: one lock around each call (``LocalStore`` writes on a
    thread of its own while Faust reads offsets on the event loop; a transaction on a shared
    connection must not see another's statements)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open()
        except sqlite3.OperationalError:
            raise  # locked or unreachable, not corrupt: a live file is never set aside
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_suffix(f".corrupt-{int(time.time())}")
            log.warning("local store %s unreadable (%s): set aside as %s", self.path, exc, aside)
            os.replace(self.path, aside)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        # Two connections write the file at a restart (the store's, and the head start's:
        # agents.prewarm): a write waits for the other's commit rather than fail at once.
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_SECONDS
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a crash loses the last commits, never order
        db.execute(
            "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, partition INTEGER "
            "NOT NULL, value BLOB NOT NULL) WITHOUT ROWID"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT "
            "NULL, offset INTEGER NOT NULL, digest BLOB, PRIMARY KEY (topic, partition))"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER)")
        # The partitions the worker last owned (not standbys): what a restart builds early.
        db.execute("CREATE TABLE IF NOT EXISTS owned (partition INTEGER PRIMARY KEY)")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA,))
        (schema,) = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if schema != SCHEMA:
            raise sqlite3.DatabaseError(f"schema {schema}, this version reads {SCHEMA}")
        return db

    def offset(self, topic: str, partition: int) -> tuple[int, bytes | None] | None:
        with self._lock:
            row = self.db.execute(
                "SELECT offset, digest FROM offsets WHERE topic = ? AND partition = ?",
                (topic, partition),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def partitions(self, topic: str) -> dict[int, tuple[int, bytes | None]]:
        with self._lock:
            return self._partitions(topic)

    def _partitions(self, topic: str) -> dict[int, tuple[int, bytes | None]]:
        return {
            p: (o, d)
            for p, o, d in self.db.execute(
                "SELECT partition, offset, digest FROM offsets WHERE topic = ?", (topic,)
            )
        }

    def apply(
        self,
        topic: str,
        partition: int,
        records: Iterable[tuple[bytes, bytes | None]],
        last_offset: int,
        last_digest: bytes | None,
        continues: int | None = None,
    ) -> bool:
        """Records of one changelog partition, complete to ``last_offset``, in one commit.

        A run of records the file already holds past (its offset at or beyond ``last_offset``:
        the worker's own writes acknowledged late, after a standby's recovery wrote the owner's
        newer ones) is not written: older values would replace newer ones. A run that ends past
        the file's offset is written whole: it holds every change after the file's offset, in
        order. With ``continues`` (the offset the run follows), a run is refused (False) unless
        the file holds the partition at least that far: after a drop it would leave a gap."""
        latest = dict(records)  # a key written twice (then deleted, say): its last record
        upserts, deletes = [], []
        for key, value in latest.items():
            if value is None:
                deletes.append((key,))
            else:
                upserts.append((key, partition, value))
        with self._lock:
            return self._apply(
                topic, partition, upserts, deletes, last_offset, last_digest, continues
            )

    def _apply(
        self,
        topic: str,
        partition: int,
        upserts: list[tuple[bytes, int, bytes]],
        deletes: list[tuple[bytes]],
        last_offset: int,
        last_digest: bytes | None,
        continues: int | None = None,
    ) -> bool:
        db = self.db
        # IMMEDIATE: the offset is read under the write lock, so another connection (a restart's
        # head start, agents.prewarm) cannot write between the check and the write.
        db.execute("BEGIN IMMEDIATE")
        try:
            held = db.execute(
                "SELECT offset FROM offsets WHERE topic = ? AND partition = ?", (topic, partition)
            ).fetchone()
            if continues is not None and (held is None or held[0] < continues):
                db.execute("COMMIT")
                return False
            if held is not None and held[0] >= last_offset:
                db.execute("COMMIT")
                return True
            if deletes:
                db.executemany("DELETE FROM records WHERE key = ?", deletes)
            if upserts:
                db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", upserts)
            db.execute(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?, ?)",
                (topic, partition, last_offset, last_digest),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return True

    def records(self, partitions: Iterable[int]) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return self._records(partitions)

    def _records(self, partitions: Iterable[int]) -> list[tuple[bytes, bytes]]:
        wanted = sorted(set(partitions))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        return self.db.execute(
            f"SELECT key, value FROM records WHERE partition IN ({marks})", wanted
        ).fetchall()

    def owned_snapshot(self, topic: str) -> tuple[dict[int, int], list[tuple[bytes, bytes]]]:
        """The partitions last owned that the file holds: each one's offset, and their records,
        read in one transaction (the records are those complete to those offsets)."""
        with self._lock:
            db = self.db
            db.execute("BEGIN")
            try:
                marks = self._owned_offsets(topic)
                return marks, self._records(marks)
            finally:
                db.execute("COMMIT")

    def owned_offsets(self, topic: str) -> dict[int, int]:
        """The partitions last owned that the file holds, and where each is complete to."""
        with self._lock:
            return self._owned_offsets(topic)

    def _owned_offsets(self, topic: str) -> dict[int, int]:
        owned = {p for (p,) in self.db.execute("SELECT partition FROM owned")}
        return {p: o for p, (o, _) in self._partitions(topic).items() if p in owned}

    def set_owned(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self._in_transaction(
                ("DELETE FROM owned", ()),
                ("INSERT INTO owned VALUES (?)", [(p,) for p in sorted(partitions)]),
            )

    def _in_transaction(self, *statements: tuple[str, Any]) -> None:
        """Statements in one commit, rolled back on any error (the shared connection must not
        stay inside a failed transaction: every later write would fail)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, parameters in statements:
                if isinstance(parameters, list):
                    db.executemany(sql, parameters)
                else:
                    db.execute(sql, parameters)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition (its file disagrees with the changelog)."""
        with self._lock:
            self._in_transaction(
                ("DELETE FROM records WHERE partition = ?", (partition,)),
                ("DELETE FROM offsets WHERE topic = ? AND partition = ?", (topic, partition)),
            )

    def close(self) -> None:
        with self._lock:
            self.db.close()


class LocalStore(memory.Store):
    """Faust's store for the state table: recovery writes to disk (``LocalRecords``), not to a
    dict, and starts where the file is complete to.

    Every write goes through one thread of its own (``writer``), in the order it was handed
    over, off the event loop: the worker's mirrored batches and recovery's batches, which for a
    standby partition arrive all the time (up to 10,000 records a batch). A read that must see
    them (a hand-over's ``take_records``) runs on the same thread, after them."""

    local: LocalRecords | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local = LocalRecords(local_path(str(self.app.conf.datadir), self.table_name))
        self.read_from_changelog = 0  # records recovery read since the last assignment
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="local-store")
        self.queued = 0  # records handed to the writer and not yet written
        self._queued_lock = threading.Lock()
        self.failed: dict[int, str] = {}  # partition -> a write that did not reach the file

    def persisted_offset(self, tp: TP) -> int | None:
        """Where the file is complete to. A write still queued is not counted: recovery then
        reads its records again, and applies them after it (the same records, in order)."""
        assert self.local is not None
        found = self.local.offset(tp.topic, tp.partition)
        return None if found is None else found[0]

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Faust's own write path (unused: the table writes its batches itself)."""

    def write(
        self,
        topic: str,
        partition: int,
        items: list[tuple[bytes, bytes | None]],
        last_offset: int,
        last_digest: bytes | None,
    ) -> Future:
        """Queue one partition's records, complete to ``last_offset``, for the file."""
        local = self.local
        assert local is not None

        def apply() -> None:
            if partition in self.failed:  # a gap before these: the file cannot hold them
                return
            try:
                local.apply(topic, partition, items, last_offset, last_digest)
            except Exception as exc:
                log.error("local store: partition %s not written: %r", partition, exc)
                self.failed[partition] = repr(exc)
                try:
                    local.drop(topic, partition)  # the next start reads it whole
                except Exception as again:
                    log.error("local store: partition %s not dropped: %r", partition, again)

        return self._submit(apply, len(items))

    def _submit(self, work: Callable[[], None], records: int) -> Future:
        with self._queued_lock:
            self.queued += records

        def done(_: Future) -> None:
            with self._queued_lock:
                self.queued -= records

        future = self.writer.submit(work)
        future.add_done_callback(done)
        return future

    async def wait_for_room(self, limit: int = MAX_QUEUED_RECORDS) -> None:
        """Until at most ``limit`` records wait for the writer: a fold faster than the file
        otherwise grew the queue without bound (bench/restart.py: the file 540,721 records
        behind after 4M events at full speed), and a crash read all of them again."""
        while self.queued > limit:
            await asyncio.wrap_future(self.writer.submit(lambda: None))

    def forget(self, topic: str, partition: int, reason: str) -> Future:
        """Queue dropping a partition from the file: its next start reads it from the changelog.
        Until then the file holds none of it (later writes would leave a gap before them) and a
        hand-over of it here is refused (Faust's recovery resumes from where it read last)."""
        local = self.local
        assert local is not None

        def drop() -> None:
            self.failed[partition] = reason
            try:
                local.drop(topic, partition)
            except Exception as exc:  # a disk that fails this: the error names the partition
                log.error("local store: partition %s not dropped: %r", partition, exc)

        return self.writer.submit(drop)

    def note_owned(self, partitions: Iterable[int]) -> Future:
        """Queue recording which partitions this worker owns (a restart builds those early)."""
        local = self.local
        assert local is not None
        owned = sorted(partitions)
        return self.writer.submit(local.set_owned, owned)

    def offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Where the file is complete to for each of ``partitions`` it holds and can be handed
        over from (not ``failed``); call it on the writer thread, to see every queued write."""
        assert self.local is not None
        held = self.local.partitions(topic)
        return {p: held[p][0] for p in partitions if p in held and p not in self.failed}

    def apply_changelog_batch(
        self,
        batch: Iterable[Any],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        by_tp: dict[tuple[str, int], list] = {}
        for event in batch:
            message = event.message
            by_tp.setdefault((message.topic, message.partition), []).append(message)
            self.read_from_changelog += 1
        for (topic, partition), messages in by_tp.items():
            last = messages[-1]
            self.write(
                topic,
                partition,
                [(m.key, m.value) for m in messages],
                last.offset,
                record_digest(last.key, last.value),
            )

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Nothing in memory to drop: standby partitions stay on disk for a takeover."""

    def take_records(self, partitions: set[int]) -> list[tuple[bytes, bytes]]:
        """The file's records of ``partitions`` (on the writer thread: after the queued writes)."""
        assert self.local is not None
        broken = sorted(set(partitions) & set(self.failed))
        if broken:
            raise RuntimeError(
                f"local store: partitions {broken} could not be written to "
                f"{self.local.path} ({self.failed[broken[0]]}); restart the worker: it then "
                "reads them from the changelog"
            )
        return self.local.records(partitions)

    def reset_state(self) -> None:
        if self.local is not None:
            path = self.local.path
            self.writer.submit(lambda: None).result()  # the queued writes first
            self.local.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self.local = LocalRecords(path)
            self.failed = {}


def local_path(datadir: str, table_name: str) -> Path:
    return Path(datadir) / f"{table_name}.state.sqlite"


def partition_records(
    records: Iterable[tuple[bytes, bytes | None]],
) -> dict[int, list[tuple[bytes, bytes | None]]]:
    out: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value in records:
        out.setdefault(partition_of_key(key), []).append((key, value))
    return out


def verify(settings: Any, topic: str, path: str | Path, timeout_s: float = 10.0) -> list[int]:
    """Before the worker starts: drop every partition of the local file that the changelog does
    not continue (the record at its offset is not the one the file was complete to: a topic
    recreated or a broker reset; or the offset is past the changelog's end). Returns them."""
    if not Path(path).exists():
        return []
    return asyncio.run(_verify(settings, topic, path, timeout_s))


async def _verify(settings: Any, topic: str, path: str | Path, timeout_s: float) -> list[int]:
    local = LocalRecords(path)
    try:
        held = local.partitions(topic)
        if not held:
            return []
        try:
            confirmed = await _continued(settings, topic, held, timeout_s)
        except Exception as exc:  # the broker could not say: read the changelog whole
            log.warning("local store: could not check %s against %s: %r", path, topic, exc)
            confirmed = set()
        dropped = sorted(set(held) - confirmed)
        for partition in dropped:
            log.warning(
                "local store: partition %s of %s does not continue the changelog: read whole",
                partition,
                topic,
            )
            local.drop(topic, partition)
        return dropped
    finally:
        local.close()


async def _continued(
    settings: Any, topic: str, held: dict[int, tuple[int, bytes | None]], timeout_s: float
) -> set[int]:
    """The partitions whose changelog holds, at the file's offset, the record the file ends with."""
    from aiokafka import TopicPartition

    # Past the end: nothing comes, and the high watermark says so.
    consumer = changelog_reader(settings, auto_offset_reset="latest")
    await consumer.start()
    confirmed: set[int] = set()
    try:
        known = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(held) if p in known]
        if not tps:
            return confirmed
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, held[tp.partition][0])
        pending = set(tps)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=len(tps))
            for tp, records in batches.items():
                offset, digest = held[tp.partition]
                first = records[0]
                if (
                    first.offset == offset
                    and record_digest(first.key or b"", first.value) == digest
                ):
                    confirmed.add(tp.partition)
                pending.discard(tp)
            for tp in list(pending):
                mark = consumer.highwater(tp)
                if mark is not None and mark <= held[tp.partition][0]:
                    pending.discard(tp)  # the changelog ends before the file's offset
    finally:
        await stop_quietly(consumer)
    return confirmed


def changelog_reader(settings: Any, **options: Any) -> Any:
    """A consumer outside any group, to read the changelog's partitions directly."""
    from aiokafka import AIOKafkaConsumer

    from .kafka_auth import aiokafka_kwargs
    from .topics import bootstrap_servers

    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        group_id=None,
        enable_auto_commit=False,
        **options,
        **aiokafka_kwargs(settings),
    )


async def stop_quietly(consumer: Any, timeout_s: float = 20.0) -> None:
    try:
        await asyncio.wait_for(consumer.stop(), timeout_s)
    except (Exception, asyncio.CancelledError) as exc:
        log.debug("stopping a changelog reader: %r", exc)
