"""The local file never claims more than it holds: a hypothesis state machine over the changelog
growing, the store's writes (mirrored runs that follow the file's offset, recovery runs that
continue where the file was), drops from this connection and from another one (a second worker
on the same data dir), set-asides and restarts.

Invariant: whenever the file says a partition is complete to offset N, its records of that
partition are the changelog's compaction up to N (the latest record per key, deletions gone).
Mutation caught (tried by hand): ``LocalRecords.apply`` ignoring ``continues`` (a run the file
did not get, or a drop by the other connection, then leaves a file "complete" with a gap).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agents.local_store import Identity, LocalRecords, set_aside

IDENTITY = Identity("t-kpi-state-changelog", "t", 2)
TOPIC = IDENTITY.changelog_topic
PARTITIONS = (0, 1)
KEYS = list(range(6))  # a record's key names its partition, as the state's keys do


class FileAgainstChangelog(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        import tempfile
        from pathlib import Path

        self.dir = Path(tempfile.mkdtemp(prefix="never-lies-"))
        self.path = self.dir / "state.sqlite"
        self.log: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in PARTITIONS}
        self.store = LocalRecords(self.path, IDENTITY)
        self.other = LocalRecords(self.path, IDENTITY)  # a second worker on the same data dir
        # How far the store has read or written each partition (its writes continue it).
        self.chain: dict[int, int | None] = dict.fromkeys(PARTITIONS)

    def teardown(self) -> None:
        import shutil

        for connection in (getattr(self, "store", None), getattr(self, "other", None)):
            if connection is not None:
                connection.close()
        shutil.rmtree(getattr(self, "dir", "/nonexistent"), ignore_errors=True)

    # -- the changelog and the store's writes --------------------------------------------------

    @rule(
        partition=st.sampled_from(PARTITIONS),
        records=st.lists(
            st.tuples(
                st.sampled_from(KEYS), st.one_of(st.none(), st.binary(min_size=1, max_size=3))
            ),
            min_size=1,
            max_size=5,
        ),
        mirrored=st.booleans(),
    )
    def the_worker_writes(self, partition, records, mirrored) -> None:
        """The worker sends a run to the changelog; once acknowledged, the store writes it to
        the file, following offset ``last - len(run)`` (its records are consecutive)."""
        records = [(b"%d:k%d" % (partition, key), value) for key, value in records]
        log = self.log[partition]
        log.extend(records)
        if not mirrored:  # not acknowledged before a crash, say: only the changelog has it
            return
        last = len(log) - 1
        self._write(partition, records, last, continues=last - len(records))

    @rule(partition=st.sampled_from(PARTITIONS))
    def recovery_reads_the_tail(self, partition) -> None:
        """Faust's recovery: from where the file was when it began, to the changelog's end."""
        found = self.store.offset(TOPIC, partition)
        begin = -1 if found is None else found[0]
        tail = self.log[partition][begin + 1 :]
        if tail:
            self._write(partition, tail, len(self.log[partition]) - 1, continues=begin)

    def _write(self, partition, records, last, continues) -> None:
        if not self.store.apply(TOPIC, partition, records, last, None, continues=continues):
            self.store.drop(TOPIC, partition)  # the store: refused, the partition leaves the file

    # -- what goes wrong ---------------------------------------------------------------------------

    @rule(partition=st.sampled_from(PARTITIONS), elsewhere=st.booleans())
    def a_partition_is_dropped(self, partition, elsewhere) -> None:
        (self.other if elsewhere else self.store).drop(TOPIC, partition)

    @rule()
    def the_file_is_set_aside(self) -> None:
        self.store.close()
        self.other.close()
        set_aside(self.path, "corrupt")
        self.store = LocalRecords(self.path, IDENTITY)
        self.other = LocalRecords(self.path, IDENTITY)

    @rule()
    def the_worker_restarts(self) -> None:
        self.store.close()
        self.store = LocalRecords(self.path, IDENTITY)

    # -- the promise -------------------------------------------------------------------------------

    @invariant()
    def the_file_holds_what_it_claims(self) -> None:
        if not hasattr(self, "store"):
            return
        held = self.store.partitions(TOPIC)
        for partition, (offset, _) in held.items():
            compacted: dict[bytes, bytes | None] = {}
            for key, value in self.log[partition][: offset + 1]:
                compacted[key] = value
            expected = sorted((k, v) for k, v in compacted.items() if v is not None)
            assert sorted(self.store.records([partition])) == expected, (partition, offset)


TestFileAgainstChangelog = FileAgainstChangelog.TestCase
TestFileAgainstChangelog.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
