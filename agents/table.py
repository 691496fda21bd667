"""A Faust table whose changelog partition is the source partition written in each key.

Faust would take the partition from the "current event", which a batch (``take_events``) does
not have, or hash the key, which would scatter one source partition's records over many
changelog partitions. Keeping a partition's records in one changelog partition, in write order,
is what makes a restored prefix consistent (see ``stream.state``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional, Set

import faust
from faust.types import TP

from stream.state import partition_of_key


class PartitionedStateTable(faust.Table):
    on_recovered: Optional[Callable[["PartitionedStateTable"], Awaitable[None]]] = None

    def partition_for_key(self, key: Any) -> Optional[int]:
        return partition_of_key(key)

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.on_recovered is not None:
            await self.on_recovered(self)

    def write(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """Persist records in order; a None value deletes."""
        for key, value in records:
            if value is None:
                if key in self:
                    del self[key]
            else:
                self[key] = value
