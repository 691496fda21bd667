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

**The file never lies.** It names what it caches (``Identity``: the changelog topic, the app id,
the partition count); a file of anything else (another app's, an older format) is set aside, not
read. Every SQLite error, opening, reading or writing, is a damaged cache, never a stopped
worker: the file is set aside when it is damaged (a unique name, its WAL with it), the store goes
on without a file (``disabled``), and what the file would have given is read from the changelog
(``read_changelog``); each such fall-back is counted by reason (``FALLBACK_REASONS``). Every write
continues the offset the file holds (``continues``), or the partition is dropped from the file
and read from the changelog at its next hand-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from faust.stores import memory
from faust.types import TP

from stream.codec import partition_of_key

log = logging.getLogger(__name__)
SCHEMA = 2  # 2: the file names what it caches (``Identity``)
# Why the store fell back to the changelog (kpi_local_store_fallbacks_total{reason}).
FALLBACK_REASONS = ("foreign", "corrupt", "unwritable", "gap", "unavailable")
# Records queued for the file at most before the worker's writes wait for it (``wait_for_room``):
# what a crash then leaves to read from the changelog (Faust's recovery: ~5,200 records/s here).
MAX_QUEUED_RECORDS = 5_000
LOCK_WAIT_SECONDS = 30.0


def record_digest(key: bytes, value: bytes | None) -> bytes:
    """What identifies a changelog record at an offset (checked against the broker's)."""
    return hashlib.blake2b(key + b"\x00" + (value or b""), digest_size=12).digest()


class Identity(NamedTuple):
    """What a file caches: one app's changelog, of one partition count."""

    changelog_topic: str
    app_id: str
    partitions: int

    def rows(self) -> list[tuple[str, str]]:
        return [(name, str(value)) for name, value in self._asdict().items()]


class Foreign(sqlite3.DatabaseError):
    """The file caches something else (another app's changelog, another partition count, an
    older format): it is set aside, never read."""


def set_aside(path: Path, why: str) -> Path | None:
    """Move a file (and its WAL and shared-memory files) out of the way under a name no other
    set-aside takes; where it went (None: there was nothing to move)."""
    aside = path.with_name(f"{path.name}.{why}-{time.time_ns()}-{os.getpid()}")
    moved = None
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        try:
            os.replace(source, f"{aside}{suffix}")
            moved = moved or aside
        except FileNotFoundError:
            continue
    return moved


def fallback_reason(exc: BaseException) -> str:
    """The ``FALLBACK_REASONS`` label of a failure of the file."""
    if isinstance(exc, Foreign):
        return "foreign"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "full" in text or "readonly" in text or "read-only" in text:
            return "unwritable"
        return "unavailable"
    if isinstance(exc, sqlite3.DatabaseError):
        return "corrupt"
    return "unavailable"  # OSError: a data dir that cannot be created or read


class LocalRecords:
    """The SQLite file: records by key, and per partition the offset they are complete to.

    Safe to call from several threads: one lock around each call (``LocalStore`` writes on a
    thread of its own while Faust reads offsets on the event loop; a transaction on a shared
    connection must not see another's statements)."""

    def __init__(self, path: str | Path, identity: Identity) -> None:
        self.path = Path(path)
        self.identity = identity
        self._lock = threading.Lock()
        self.set_aside: tuple[str, Path | None] | None = None  # (reason, where), if it was
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open()
        except sqlite3.OperationalError:
            raise  # locked or unreachable, not damaged: a live file is never set aside
        except sqlite3.DatabaseError as exc:
            why = fallback_reason(exc)
            aside = set_aside(self.path, why)
            log.warning("local store %s not used (%s): set aside as %s", self.path, exc, aside)
            self.set_aside = (why, aside)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        # Two connections write the file at a restart (the store's, and the head start's:
        # agents.prewarm): a write waits for the other's commit rather than fail at once.
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_SECONDS
        )
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a crash loses the last commits, never order
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if tables and "identity" not in tables:
            raise Foreign("a file of an older format (schema 1), or not kpi-monitor's")
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
        db.execute("CREATE TABLE IF NOT EXISTS identity (name TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA,))
        (schema,) = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if schema != SCHEMA:
            raise Foreign(f"schema {schema}, this version reads {SCHEMA}")
        held = dict(db.execute("SELECT name, value FROM identity").fetchall())
        if not held:
            db.executemany("INSERT INTO identity VALUES (?, ?)", self.identity.rows())
        elif held != dict(self.identity.rows()):
            raise Foreign(f"it caches {held}, not {dict(self.identity.rows())}")

    def check(self) -> None:
        """Raise if SQLite finds the file damaged (a page a crash or a disk broke): ~10 ms."""
        with self._lock:
            rows = self.db.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise sqlite3.DatabaseError(f"quick_check: {rows[0][0] if rows else 'no answer'}")

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
            # A run from the log's start (continues -1) follows nothing.
            if continues is not None and continues >= 0 and (held is None or held[0] < continues):
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
            _rollback(db)
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
                if db.in_transaction:
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
            _rollback(db)
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


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is still open: SQLite rolls back itself on some errors (a full disk), and
    a ROLLBACK then raises "no transaction is active", hiding the error that mattered."""
    if db.in_transaction:
        db.execute("ROLLBACK")


class LocalStore(memory.Store):
    """Faust's store for the state table: recovery writes to disk (``LocalRecords``), not to a
    dict, and starts where the file is complete to.

    Every write goes through one thread of its own (``writer``), in the order it was handed
    over, off the event loop: the worker's mirrored batches and recovery's batches, which for a
    standby partition arrive all the time (up to 10,000 records a batch). A read that must see
    them (a hand-over's ``take_records``) runs on the same thread, after them.

    A file that fails (``_fails``) is dropped for the rest of the process: the store is then
    ``disabled``, a memory store as Faust's own (recovery from offset 0 into a dict), and the
    partitions the file held are ``cold``: their next hand-over reads them from the changelog
    (``read_changelog``), since recovery began where the file said it was complete."""

    local: LocalRecords | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_from_changelog = 0  # records recovery read since the last assignment
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="local-store")
        self.queued = 0  # records handed to the writer and not yet written
        self._queued_lock = threading.Lock()
        self.failed: dict[int, str] = {}  # partition -> a write that did not reach the file
        self.fallbacks: dict[str, int] = {}  # reason -> times the store fell back (a counter)
        self.on_fallback: Callable[[str], None] | None = None  # the worker's metric
        # The offset each partition's writes continue (where the file held it, then each
        # write's last): a write after anything else would leave a gap.
        self._chain: dict[int, int | None] = {}
        self.disabled = False
        self.path = local_path(str(self.app.conf.datadir), self.table_name)
        unavailable = getattr(self.table, "local_store_unavailable", None)
        try:
            if unavailable is not None:  # KPI_DATA_DIR cannot be used (agents.app)
                raise OSError(unavailable)
            self.local = LocalRecords(self.path, store_identity(self.app, self.table_name))
        except (sqlite3.Error, OSError) as exc:  # a data dir that cannot be written, say
            self.local = None
            # Nothing was read from a file: recovery fills Faust's dict from offset 0.
            self._fails(exc, "opening", cold=False)
        else:
            if self.local.set_aside is not None:
                self.count_fallback(self.local.set_aside[0])

    # -- failures ---------------------------------------------------------------------------

    def count_fallback(self, reason: str) -> None:
        """One more fall-back to the changelog, for ``reason`` (``FALLBACK_REASONS``)."""
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        if self.on_fallback is not None:
            self.on_fallback(reason)

    def _fails(self, exc: BaseException, doing: str, cold: bool = True) -> None:
        """The file failed (``doing`` it): from here on the store runs without it, every
        partition it held is read from the changelog at its next hand-over, and a damaged file
        is set aside. Never raises: the file is a cache."""
        if self.disabled:
            return
        reason = fallback_reason(exc)
        self.disabled = True
        self.count_fallback(reason)
        local, self.local = self.local, None
        if local is not None:
            try:
                local.close()
            except Exception as again:
                log.debug("local store: closing %s: %r", self.path, again)
        # Recovery of any partition may have begun where the file said: all are read whole.
        for partition in range(self.app.conf.topic_partitions) if cold else ():
            self.failed.setdefault(partition, f"the local file failed: {exc!r}")
        aside = set_aside(self.path, reason) if reason in ("corrupt", "foreign") else None
        log.error(
            "local store: %s failed while %s (%r)%s: the worker goes on and reads the "
            "changelog instead",
            self.path,
            doing,
            exc,
            f"; set aside as {aside}" if aside else "",
        )

    def _topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    # -- Faust's store ----------------------------------------------------------------------

    def persisted_offset(self, tp: TP) -> int | None:
        """Where the file is complete to. A write still queued is not counted: recovery then
        reads its records again, and applies them after it (the same records, in order)."""
        local = self.local
        self._chain[tp.partition] = None
        # A partition dropped from the file stays out of it for the process: Faust's recovery
        # of a partition it already read resumes where it read last, whatever this says, so a
        # write from there would leave a gap (its hand-over reads the changelog whole instead).
        if local is None or tp.partition in self.failed:
            return None
        try:
            found = local.offset(tp.topic, tp.partition)
        except sqlite3.Error as exc:
            self._fails(exc, "reading an offset")
            return None
        offset = None if found is None else found[0]
        self._chain[tp.partition] = offset  # recovery's first batch continues it
        return offset

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Faust's own write path (unused: the table writes its batches itself)."""

    def write(
        self,
        topic: str,
        partition: int,
        items: list[tuple[bytes, bytes | None]],
        last_offset: int,
        last_digest: bytes | None,
        continues: int | None = None,
    ) -> Future:
        """Queue one partition's records, complete to ``last_offset``, for the file. The run
        follows offset ``continues`` (None: the offset the partition's last write ended at):
        refused (the partition dropped from the file) unless the file holds it that far."""

        def apply() -> None:
            local = self.local
            if local is None or partition in self.failed:  # a gap before these
                return
            follows = self._chain.get(partition) if continues is None else continues
            try:
                written = local.apply(
                    topic, partition, items, last_offset, last_digest, continues=follows
                )
            except sqlite3.Error as exc:
                self._fails(exc, f"writing partition {partition}")
                return
            if written:
                self._chain[partition] = max(last_offset, self._chain.get(partition) or -1)
                return
            self.count_fallback("gap")
            reason = f"a write after offset {follows} found the file short of it"
            log.warning("local store: partition %s dropped from the file: %s", partition, reason)
            self.failed[partition] = reason
            try:
                local.drop(topic, partition)  # the next start reads it whole
            except sqlite3.Error as exc:
                self._fails(exc, f"dropping partition {partition}")

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
        """Queue dropping a partition from the file: its next hand-over reads it from the
        changelog. Until then the file holds none of it (later writes would leave a gap)."""

        def drop() -> None:
            self.failed[partition] = reason
            local = self.local
            if local is None:
                return
            try:
                local.drop(topic, partition)
            except sqlite3.Error as exc:
                self._fails(exc, f"dropping partition {partition}")

        return self.writer.submit(drop)

    def note_owned(self, partitions: Iterable[int]) -> Future:
        """Queue recording which partitions this worker owns (a restart builds those early)."""
        owned = sorted(partitions)

        def note() -> None:
            local = self.local
            if local is None:
                return
            try:
                local.set_owned(owned)
            except sqlite3.Error as exc:
                self._fails(exc, "noting the partitions owned")

        return self.writer.submit(note)

    def offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Where the file is complete to for each of ``partitions`` it holds and can be handed
        over from (not ``failed``); call it on the writer thread, to see every queued write."""
        local = self.local
        if local is None:
            return {}
        try:
            held = local.partitions(topic)
        except sqlite3.Error as exc:
            self._fails(exc, "reading its offsets")
            return {}
        return {p: held[p][0] for p in partitions if p in held and p not in self.failed}

    def apply_changelog_batch(
        self,
        batch: Iterable[Any],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        events = list(batch)
        self.read_from_changelog += len(events)
        if self.disabled:  # without a file: in memory, as Faust's own store
            super().apply_changelog_batch(events, to_key, to_value)
            return
        by_tp: dict[tuple[str, int], list] = {}
        for event in events:
            message = event.message
            by_tp.setdefault((message.topic, message.partition), []).append(message)
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

    def take_records(self, partitions: set[int]) -> tuple[list[tuple[bytes, bytes]], set[int]]:
        """The file's records of ``partitions`` (on the writer thread: after the queued writes),
        and the partitions it cannot give (``cold``: read them from the changelog)."""
        wanted = set(partitions)
        cold = wanted & set(self.failed.copy())  # dict.copy is atomic: _fails may be adding
        local = self.local
        if local is None:
            return self._from_memory(wanted - cold), cold
        try:
            return local.records(wanted - cold), cold
        except sqlite3.Error as exc:
            self._fails(exc, "reading records")
            return [], wanted

    def _from_memory(self, partitions: set[int]) -> list[tuple[bytes, bytes]]:
        """Recovered without a file (disabled from the start): Faust's dict, as without a
        local store; what is taken leaves it (the state holds it from here on)."""
        taken = [(k, v) for k, v in self.data.items() if partition_of_key(k) in partitions]
        for key, _ in taken:
            del self.data[key]
        return taken

    def reset_state(self) -> None:
        self.writer.submit(lambda: None).result()  # the queued writes first
        if self.local is not None:
            self.local.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.local = LocalRecords(self.path, store_identity(self.app, self.table_name))
        self.failed = {}
        self.disabled = False


def store_identity(app: Any, table_name: str) -> Identity:
    app_id = str(app.conf.id)
    return Identity(f"{app_id}-{table_name}-changelog", app_id, int(app.conf.topic_partitions))


def local_path(datadir: str, table_name: str) -> Path:
    return Path(datadir) / f"{table_name}.state.sqlite"


def partition_records(
    records: Iterable[tuple[bytes, bytes | None]],
) -> dict[int, list[tuple[bytes, bytes | None]]]:
    out: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value in records:
        out.setdefault(partition_of_key(key), []).append((key, value))
    return out


class Verified(NamedTuple):
    dropped: list[int]  # partitions the changelog does not continue: read whole
    set_aside: str | None = None  # why the file was set aside (``FALLBACK_REASONS``), if it was


def verify(
    settings: Any, identity: Identity, path: str | Path, timeout_s: float = 10.0
) -> Verified:
    """Before the worker starts: set aside a file that caches something else or is damaged,
    and drop every partition of the file that the changelog does not continue (the record at
    its offset is not the one the file was complete to: a topic recreated or a broker reset; or
    the offset is past the changelog's end). Never raises for the file: a file that cannot be
    checked is the store's to fall back from."""
    if not Path(path).exists():
        return Verified([])
    try:
        return asyncio.run(_verify(settings, identity, Path(path), timeout_s))
    except (sqlite3.Error, OSError) as exc:
        log.error("local store: %s could not be checked (%r): the worker will judge it", path, exc)
        return Verified([])


async def _verify(settings: Any, identity: Identity, path: Path, timeout_s: float) -> Verified:
    topic = identity.changelog_topic
    local = LocalRecords(path, identity)  # a file of anything else is set aside here
    aside = local.set_aside[0] if local.set_aside else None
    try:
        try:
            local.check()
        except sqlite3.DatabaseError as exc:
            local.close()
            moved = set_aside(path, "corrupt")
            log.warning("local store %s is damaged (%s): set aside as %s", path, exc, moved)
            return Verified([], "corrupt")
        held = local.partitions(topic)
        if not held:
            return Verified([], aside)
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
        return Verified(dropped, aside)
    finally:
        with contextlib.suppress(sqlite3.Error):
            local.close()


async def read_tails(
    settings: Any, topic: str, at: dict[int, int], timeout_s: float = 20.0
) -> dict[int, list[tuple[int, bytes, bytes | None]]]:
    """Per partition, the changelog's records after offset ``at[p]`` up to the fetch's high
    watermark, as (offset, key, value): what a recovery that stopped short left out (the
    embedded broker's ListOffsets answers short of the log's end). Within ``timeout_s``: a
    partition not read to its end by then gives what was read."""
    out: dict[int, list[tuple[int, bytes, bytes | None]]] = {}

    def take(partition: int, records: list) -> None:
        out.setdefault(partition, []).extend((r.offset, r.key or b"", r.value) for r in records)

    starts = {p: offset + 1 for p, offset in at.items()}
    # An offset no longer in the log raises (nothing read): the hand-over goes on without it.
    await _read_to_end(settings, topic, starts, take, timeout_s, stall=False, reset="none")
    return out


async def read_changelog(
    settings: Any, topic: str, partitions: Iterable[int], timeout_s: float = 60.0
) -> list[tuple[bytes, bytes]]:
    """The latest record per key of ``partitions`` of the changelog, read from its start to the
    fetch's high watermark (the embedded broker's ListOffsets is short): what the local file
    would have given, when it cannot (``LocalStore.failed``). Raises if the read makes no
    progress for ``timeout_s``: a partial state must not be served."""
    latest: dict[bytes, bytes | None] = {}

    def take(partition: int, records: list) -> None:
        for record in records:
            if record.key is not None:
                latest[record.key] = record.value

    # A stall, not a length: a long changelog (no compaction on the embedded broker) may take
    # minutes, and a cap would stop the worker at every restart.
    starts: dict[int, int | None] = dict.fromkeys(partitions)
    await _read_to_end(settings, topic, starts, take, timeout_s, stall=True, reset="earliest")
    return [(key, value) for key, value in latest.items() if value is not None]


async def _read_to_end(
    settings: Any,
    topic: str,
    starts: Mapping[int, int | None],
    take: Callable[[int, list], None],
    timeout_s: float,
    *,
    stall: bool,
    reset: str,
) -> None:
    """Read changelog partitions from ``starts`` (an offset, or None: the log's start) to the
    fetch's high watermark, handing each fetch to ``take``. ``stall``: raise once no record
    came for ``timeout_s``; otherwise stop reading after ``timeout_s`` in all."""
    from aiokafka import TopicPartition

    if not starts:
        return
    consumer = changelog_reader(
        settings,
        auto_offset_reset=reset,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    deadline = time.monotonic() + timeout_s
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(starts)]
        consumer.assign(tps)
        for tp in tps:
            start = starts[tp.partition]
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
        pending = set(tps)
        while pending:
            if time.monotonic() > deadline:
                if stall:
                    raise TimeoutError(f"the changelog {topic}: no progress for {timeout_s:g}s")
                return
            batches = await consumer.getmany(*pending, timeout_ms=200)
            if batches and stall:
                deadline = time.monotonic() + timeout_s
            for tp, records in batches.items():
                take(tp.partition, records)
            for tp in list(pending):
                mark = consumer.highwater(tp)
                if mark is not None and await consumer.position(tp) >= mark:
                    pending.discard(tp)
    finally:
        await stop_quietly(consumer)


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
