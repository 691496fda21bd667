"""Plan files as marketers export them: a spreadsheet's CSV, JSON lines, or YAML. Pure: the
file's text in; every row's plan, or its line and the reason it is refused, out.

A file either reads as its format or is refused whole (an unknown or duplicated CSV column is a
typo that would drop a target silently, so it refuses the file); within a readable file each row
stands alone. Whatever the text, :func:`read_plans` returns rows or raises :class:`FileRefused`:
a hostile file (NUL bytes, a 100 KB cell, a 400-digit number, YAML nested a thousand deep or an
alias bomb) is a refused file or a refused row, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import orjson
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .plans import CSV_COLUMNS, Plan, from_csv_row, plan_key, validate_plan

if TYPE_CHECKING:
    from _csv import Reader

FORMATS = ("csv", "jsonl", "yaml")
# A plan holds about 30 values; a YAML item that expands to more (aliases are expanded when it is
# built) is an alias bomb ("billion laughs") or not a plan, and is refused before it is built.
MAX_YAML_VALUES = 1000
_INT, _STR, _MERGE = (f"tag:yaml.org,2002:{name}" for name in ("int", "str", "merge"))


class FileRefused(ValueError):
    """The file cannot be read as its format at all; the message says why."""


class RowError(NamedTuple):
    line: int
    reason: str


class PlanFile(NamedTuple):
    plans: list[tuple[int, Plan]]  # (line, plan), in file order
    errors: list[RowError]


Rows = Iterator[tuple[int, dict | str]]  # (line, the row's JSON form or why it is refused)


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
    is refused on its later line: which one was meant is not for the loader to guess. Raises
    FileRefused, and nothing else, for a file that cannot be read at all."""
    rows = {"csv": _csv_rows, "jsonl": _jsonl_rows, "yaml": _yaml_rows}[fmt](text)
    plans: list[tuple[int, Plan]] = []
    errors: list[RowError] = []
    first_line: dict[bytes, int] = {}
    for line, row in _guarded(rows):
        checked = row if isinstance(row, str) else _validated(row)
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


def _validated(row: dict) -> Plan | str:
    """The row's plan or why it is refused. Validation never raises by contract; should a row
    find a way (a bug), that row is refused with the exception named, and the file reads on."""
    try:
        checked = validate_plan(row)
        if not isinstance(checked, str):
            plan_key(checked)
        return checked
    except Exception as exc:  # one bad row must not lose the file's other rows
        return f"internal error: {_described(exc)} (a kpi-monitor bug: please report this row)"


def _guarded(rows: Rows) -> Rows:
    """The rows, with an exception a reader did not foresee refusing the file, never a
    traceback (each reader turns what it foresees into FileRefused or a row's reason)."""
    line = 0
    try:
        for line, row in rows:
            yield line, row
    except FileRefused:
        raise
    except Exception as exc:  # whatever it was, the user gets a message
        raise FileRefused(
            f"after line {line}: internal error: {_described(exc)} "
            "(a kpi-monitor bug: please report it with the file)"
        ) from exc


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _shown(text: str) -> str:
    """A name from the file, quoted and cut short, for a message."""
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


# CSV


def _csv_rows(text: str) -> Rows:
    # newline="": the csv module finds the line ends itself (\n, \r\n or \r, and those inside
    # quoted cells); spreadsheets write a BOM.
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        yield from _csv_records(reader)
    except csv.Error as exc:  # a cell over csv.field_size_limit() (128 KiB), for one
        raise FileRefused(f"line {reader.line_num}: not CSV: {exc}") from None


def _csv_records(reader: Reader) -> Rows:
    header = [name.strip() for name in next(reader, [])]
    _check_header(header)
    for cells in reader:
        line = reader.line_num  # the record's last line (a quoted cell may span lines)
        if len(cells) > len(header):
            yield line, f"{len(cells)} cells, the header has {len(header)}"
            continue
        # Short rows: the missing cells are empty (spreadsheets leave trailing ones out).
        row = dict(zip(header, cells))
        if not any(value.strip() for value in row.values()):
            continue  # a blank line of the spreadsheet
        yield line, from_csv_row(row)


def _check_header(header: list[str]) -> None:
    if not header:
        raise FileRefused(
            f"the CSV has no header row: its first line names the columns ({', '.join(CSV_COLUMNS)})"
        )
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown:
        raise FileRefused(
            f"unknown CSV column {_shown(unknown[0])}; the columns are {', '.join(CSV_COLUMNS)}"
        )
    twice = [name for name, count in Counter(header).items() if count > 1]
    if twice:
        # Which of the two cells was meant is not for the loader to guess (csv.DictReader would
        # silently keep the last).
        raise FileRefused(f"CSV column {twice[0]!r} appears twice in the header; keep one")
    if "campaign_id" not in header and "channel" not in header:
        raise FileRefused("the CSV needs a campaign_id column (or channel, for defaults)")


# JSON lines


def _jsonl_rows(text: str) -> Rows:
    # Lines end at "\n" only: str.splitlines() would also end one at U+2028, U+2029, U+0085,
    # \x0b, \x0c or \x1c-\x1e, which a JSON string may hold, cutting a row in two and shifting
    # every later line number.
    for number, line in enumerate(text.lstrip("\ufeff").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip(" \t\r"):  # JSON's own white space
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, f"not JSON: {exc}"
            continue
        yield number, _json_duplicate(line) or row


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> None:
    names = Counter(name for name, _ in pairs)
    twice = [name for name, count in names.items() if count > 1]
    if twice:
        raise _Duplicate(twice[0])


def _json_duplicate(line: str) -> str | None:
    """Why the line is refused if one of its objects names a field twice (orjson keeps the
    last silently), else None. Only the names are looked at: orjson has read the values."""
    try:
        json.loads(line, object_pairs_hook=_no_duplicates, parse_int=str, parse_float=str)
    except _Duplicate as exc:
        return f"field {_shown(exc.args[0])} is given twice in one object; keep one"
    except (ValueError, RecursionError):
        return None  # json's limits are not orjson's; validation refuses such a row anyway
    return None


# YAML


def _yaml_rows(text: str) -> Rows:
    """A YAML list of plans (or ``plans:`` holding one); the line is each item's first."""
    try:
        # compose, not load: nodes only (aliases are not expanded), each item built on its own.
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise FileRefused(f"not YAML: {exc}") from None
    except RecursionError:
        raise FileRefused("not a plan file: YAML nested too deeply to read") from None
    if document is None:
        return
    if isinstance(document, MappingNode):
        items = [v for k, v in document.value if getattr(k, "value", None) == "plans"]
        document = items[0] if items else document
    if not isinstance(document, SequenceNode):
        raise FileRefused("a YAML plan file is a list of plans (or plans: with one)")
    for node in document.value:
        yield node.start_mark.line + 1, _yaml_item(node)


def _yaml_item(node: Node) -> dict | str:
    """One list item built as its JSON form, or why it is refused."""
    loader = yaml.SafeLoader("")
    try:
        problem = _yaml_problem(node, loader)
        return problem if problem is not None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        return f"not YAML: {exc}"
    except RecursionError:
        return "nested too deeply to be a plan"
    except (ValueError, TypeError, AttributeError) as exc:  # "!!float abc", "!!timestamp x"
        return f"a value YAML cannot read ({_described(exc)})"
    finally:
        loader.dispose()


class _ItemRefused(Exception):
    pass


def _yaml_problem(node: Node, loader: yaml.SafeLoader) -> str | None:
    """Why an item cannot be built safely as a plan's JSON form, checked on its nodes before
    it is built: an alias inside its own anchor, more than MAX_YAML_VALUES values once aliases
    are expanded, a key that is not text, a key given twice (YAML keeps the last silently), or an
    integer no float holds (math.isfinite would raise on it)."""
    sizes: dict[int, int] = {}  # by id(node): nodes shared through aliases are walked once
    walking: set[int] = set()

    def walk(node: Node, where: str) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in walking:
            raise _ItemRefused(f"{where or 'the plan'} holds itself (a YAML alias to its anchor)")
        walking.add(id(node))
        size = 1 + sum(walk(child, name) for name, child in _children(node, where, loader))
        walking.discard(id(node))
        if size > MAX_YAML_VALUES:
            raise _ItemRefused(
                f"more than {MAX_YAML_VALUES} values once its YAML aliases are expanded: not a plan"
            )
        sizes[id(node)] = size
        return size

    try:
        walk(node, "")
    except _ItemRefused as refused:
        return str(refused)
    return None


def _children(node: Node, where: str, loader: yaml.SafeLoader) -> Iterator[tuple[str, Node]]:
    """A node's children, each with its name in messages (``budget.daily``, ``labels[0]``)."""
    if isinstance(node, ScalarNode) and node.tag == _INT:
        try:
            float(loader.construct_yaml_int(node))
        except (ValueError, OverflowError):  # over 1.8e308, or over 4300 digits
            raise _ItemRefused(f"{where or 'the plan'} is not a finite number") from None
    elif isinstance(node, SequenceNode):
        for index, child in enumerate(node.value):
            yield f"{where}[{index}]", child
    elif isinstance(node, MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.tag == _MERGE:  # "<<: *defaults": its keys may be given again, that is merging
                yield where, value
                continue
            if not isinstance(key, ScalarNode) or key.tag != _STR:
                line = key.start_mark.line + 1
                raise _ItemRefused(f"a key of {where or 'the plan'} on line {line} is not text")
            if key.value in seen:
                raise _ItemRefused(f"{_joined(where, key.value)} is given twice; keep one")
            seen.add(key.value)
            yield _joined(where, key.value), value


def _joined(where: str, name: str) -> str:
    name = name if len(name) <= 60 else name[:60] + "..."
    return f"{where}.{name}" if where else name
