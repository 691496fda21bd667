"""A map from 64-bit id hashes to int64 values in two flat arrays.

Open addressing with linear probing, at most half full: 16-32 bytes per entry. A dict of int to
int costs ~100-150 bytes per entry here (its slots, grown to three times the entries it holds,
plus a 36-byte key object and a value object), and a dedup index holds a million ids.
Keys must not be 0, which marks an empty slot.
"""

from __future__ import annotations

from array import array
from typing import Iterator

MIN_SLOTS = 1024


class IdTable:
    __slots__ = ("_keys", "_values", "_mask", "_used")

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
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            held = keys[slot]
            if held == key:
                return self._values[slot]
            if held == 0:
                return None
            slot = (slot + 1) & mask

    def put(self, key: int, value: int) -> None:
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            held = keys[slot]
            if held == key:
                self._values[slot] = value
                return
            if held == 0:
                break
            slot = (slot + 1) & mask
        keys[slot] = key
        self._values[slot] = value
        self._used += 1
        if 2 * self._used > mask + 1:
            self._grow()

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

    def keys(self) -> Iterator[int]:
        return (key for key in self._keys if key)

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        slots = 2 * len(old_keys)
        self._keys = array("Q", bytes(8 * slots))
        self._values = array("q", bytes(8 * slots))
        self._mask = slots - 1
        self._used = 0
        for key, value in zip(old_keys, old_values):
            if key:
                self.put(key, value)
