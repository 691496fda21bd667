"""Bound metric label cardinality: the first N values get their own label, later ones share one."""

from __future__ import annotations

OTHER = "__other__"


class LabelBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()
        self.folded: set[str] = set()

    def label(self, value: str) -> str:
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit:
            self._admitted.add(value)
            return value
        self.folded.add(value)
        return OTHER
