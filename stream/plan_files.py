"""Plan files as marketers export them: a spreadsheet's CSV, JSON lines, or YAML. Pure: the
file's text in; every row's plan, or its line and the reason it is refused, out.

A file either reads as its format or is refused whole (an unknown CSV column is a typo that would
drop a target silently, so it refuses the file); within a readable file each row stands alone.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import NamedTuple

import orjson
import yaml

from .plans import CSV_COLUMNS, Plan, from_csv_row, plan_key, validate_plan

FORMATS = ("csv", "jsonl", "yaml")


class FileRefused(ValueError):
    """The file cannot be read as its format at all; the message says why."""


class RowError(NamedTuple):
    line: int
    reason: str


class PlanFile(NamedTuple):
    plans: list[tuple[int, Plan]]  # (line, plan), in file order
    errors: list[RowError]


def format_of(path: str) -> str:
    """The format a file name says, or FileRefused."""
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    raise FileRefused(f"{path}: a plan file is .csv, .jsonl or .yaml")


def read_plans(text: str, fmt: str) -> PlanFile:
    """Every row of a plan file, validated. A campaign (or channel) planned twice in one file
    is refused on its later line: which one was meant is not for the loader to guess."""
    rows = {"csv": _csv_rows, "jsonl": _jsonl_rows, "yaml": _yaml_rows}[fmt](text)
    plans: list[tuple[int, Plan]] = []
    errors: list[RowError] = []
    first_line: dict[bytes, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            errors.append(RowError(line, row))
            continue
        checked = validate_plan(row)
        if isinstance(checked, str):
            errors.append(RowError(line, checked))
            continue
        key = plan_key(checked)
        if key in first_line:
            what = checked.campaign or f"channel {checked.channel}"
            errors.append(RowError(line, f"{what} is planned on line {first_line[key]} already"))
            continue
        first_line[key] = line
        plans.append((line, checked))
    return PlanFile(plans, errors)


def _csv_rows(text: str) -> Iterator[tuple[int, dict | str]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))  # spreadsheets write a BOM
    header = [name.strip() for name in reader.fieldnames or ()]
    if not header:
        raise FileRefused("the CSV has no header row")
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown:
        raise FileRefused(
            f"unknown CSV column {unknown[0]!r}; the columns are {', '.join(CSV_COLUMNS)}"
        )
    if "campaign_id" not in header and "channel" not in header:
        raise FileRefused("the CSV needs a campaign_id column (or channel, for defaults)")
    reader.fieldnames = header
    for row in reader:
        line = reader.line_num
        if None in row:
            yield line, f"{len(row[None]) + len(header)} cells, the header has {len(header)}"
            continue
        if not any((value or "").strip() for value in row.values()):
            continue  # a blank line of the spreadsheet
        yield line, from_csv_row({k: v or "" for k, v in row.items()})


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict | str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, f"not JSON: {exc}"


def _yaml_rows(text: str) -> Iterator[tuple[int, dict | str]]:
    """A YAML list of plans (or ``plans:`` holding one); the line is each item's first."""
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise FileRefused(f"not YAML: {exc}") from None
    if document is None:
        return
    if isinstance(document, yaml.MappingNode):
        items = [v for k, v in document.value if getattr(k, "value", None) == "plans"]
        document = items[0] if items else document
    if not isinstance(document, yaml.SequenceNode):
        raise FileRefused("a YAML plan file is a list of plans (or plans: with one)")
    for node in document.value:
        line = node.start_mark.line + 1
        try:
            yield line, yaml.safe_load(yaml.serialize(node))
        except yaml.YAMLError as exc:
            yield line, f"not YAML: {exc}"
