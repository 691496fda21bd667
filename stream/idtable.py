"""A map from 64-bit id hashes to int64 values in two flat arrays.

Open addressing with linear probing, at most half full: 16-32 bytes per entry. A dict of int to
int costs ~100-150 bytes per entry here (its slots, grown to three times the entries it holds,
plus a 36-byte key object and a value object), and a dedup index holds a million ids.
Keys must not be 0, which marks an empty slot.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

MIN_SLOTS = 1024


class IdTable:
    __slots__ = ("_keys", "_mask", "_used", "_values")

    def __init__(self, expected: int = 0) -> None:
        slots = MIN_SLOTS
        while slots < 2 * expected:
            slots *= 2
        self._keys = array("Q", bytes(8 * slots))
        self._values = array("q", bytes(8 * slots))
        self._mask = slots - 1
        self._used = 0

    def __len__(self) -> int:
        return self._used

    def get(self, key: int) -> int | None:
        slot = self.find(key)
        return self._values[slot] if self._keys[slot] else None

    def put(self, key: int, value: int) -> None:
        self.put_at(self.find(key), key, value)

    def find(self, key: int) -> int:
        """The slot holding ``key``, or the empty slot where it would go: with ``value_at`` and
        ``put_at``, a lookup followed by an update probes once."""
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            held = keys[slot]
            if held == key or held == 0:
                return slot
            slot = (slot + 1) & mask

    def value_at(self, slot: int) -> int | None:
        """The value in ``slot`` (from ``find``), or None if the key is absent."""
        return self._values[slot] if self._keys[slot] else None

    def put_at(self, slot: int, key: int, value: int) -> None:
        """Set ``key`` (whose ``find`` gave ``slot``, with no change since) to ``value``."""
        self._values[slot] = value
        if self._keys[slot]:
            return
        self._keys[slot] = key
        self._used += 1
        if 2 * self._used > self._mask + 1:
            self._grow()

    def put_run(self, keys: Iterable[int], first_value: int) -> None:
        """``put(keys[i], first_value + i)`` for each key in order (a later equal key wins), in
        one loop: a restore puts a million ids."""
        keys = list(keys)
        while 2 * (self._used + len(keys)) > self._mask + 1:
            self._grow()
        table, values, mask = self._keys, self._values, self._mask
        used = self._used
        value = first_value
        for key in keys:
            slot = key & mask
            while True:
                held = table[slot]
                if held == key:
                    break
                if held == 0:
                    table[slot] = key
                    used += 1
                    break
                slot = (slot + 1) & mask
            values[slot] = value
            value += 1
        self._used = used

    def delete(self, key: int) -> bool:
        keys, values, mask = self._keys, self._values, self._mask
        slot = key & mask
        while True:
            held = keys[slot]
            if held == key:
                break
            if held == 0:
                return False
            slot = (slot + 1) & mask
        # Backward-shift deletion: move up any later entry of the run that the hole would hide.
        hole, probe = slot, slot
        while True:
            probe = (probe + 1) & mask
            held = keys[probe]
            if held == 0:
                break
            home = held & mask
            if (probe - home) & mask >= (probe - hole) & mask:
                keys[hole] = held
                values[hole] = values[probe]
                hole = probe
        keys[hole] = 0
        values[hole] = 0
        self._used -= 1
        return True

    def __iter__(self) -> Iterator[int]:
        return self.keys()

    def keys(self) -> Iterator[int]:
        return (key for key in self._keys if key)

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        slots = 2 * len(old_keys)
        keys = self._keys = array("Q", bytes(8 * slots))
        values = self._values = array("q", bytes(8 * slots))
        mask = self._mask = slots - 1
        for key, value in zip(old_keys, old_values):
            if key:  # every key is distinct: probe for the first empty slot only
                slot = key & mask
                while keys[slot]:
                    slot = (slot + 1) & mask
                keys[slot] = key
                values[slot] = value
