"""Plan files against hostile input: one table of files (each refused whole naming why, or read
row by row with each bad row named by its line), and read_plans never raising anything but
FileRefused, whatever the text."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.plan_files import FORMATS, FileRefused, read_plans

DIGITS_400 = "1" * 400


@dataclass(frozen=True)
class Refused:
    """The whole file is refused, the message holding ``message``."""

    message: str


@dataclass(frozen=True)
class Rows:
    """The file is read: a row error on each line of ``errors`` (its reason holding the text),
    and these plans (line, campaign or channel), in file order."""

    errors: dict[int, str] = field(default_factory=dict)
    plans: list[tuple[int, str]] = field(default_factory=list)


def case(id: str, fmt: str, text: str, expected: Refused | Rows):
    return pytest.param(fmt, text, expected, id=id)


def alias_bomb(levels: int) -> str:
    """'Billion laughs': each level nine aliases of the one before, 9**levels values built."""
    lines = ["a0: &a0 [laugh, laugh, laugh, laugh, laugh, laugh, laugh, laugh, laugh]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


BOMB = alias_bomb(8)  # 9**8 = 43 million strings if built
BOMB_LINES = BOMB.count("\n")

CASES = [
    # CSV
    case(
        "csv-duplicate-column",
        "csv",
        "campaign_id,target_cpa,target_cpa\nspring,40,41\n",
        Refused("CSV column 'target_cpa' appears twice"),
    ),
    case(
        "csv-duplicate-column-with-spaces",
        "csv",
        "campaign_id, daily_budget,daily_budget \nspring,1,2\n",
        Refused("'daily_budget' appears twice"),
    ),
    case("csv-unknown-column", "csv", "campaign_id,target_cpm\na,3\n", Refused("'target_cpm'")),
    case("csv-empty-file", "csv", "", Refused("no header row")),
    case("csv-blank-first-line", "csv", "\ncampaign_id\na\n", Refused("no header row")),
    case(
        "csv-cell-over-the-field-limit",
        "csv",
        "campaign_id,owner\nok,ana\nbig," + "x" * 200_000 + "\n",
        Refused("line 3: not CSV: field larger than field limit"),
    ),
    case(
        "csv-nul-bytes",
        "csv",
        "campaign_id,daily_budget\nnul\x00led,10\nfine,1\x002\nok,5\n",
        Rows({2: "campaign_id", 3: "budget.daily"}, [(4, "ok")]),
    ),
    case("csv-nul-in-header", "csv", "campaign_id,\x00\na,1\n", Refused("unknown CSV column")),
    case(
        "csv-400-digit-budget",
        "csv",
        f"campaign_id,daily_budget\nhuge,{DIGITS_400}\nok,5\n",
        Rows({2: "budget.daily"}, [(3, "ok")]),
    ),
    case(
        "csv-crlf-and-bare-cr-line-ends",
        "csv",
        "campaign_id,target_cpa\r\na,1\rb,2\nc,3\r\n",
        Rows({}, [(2, "a"), (3, "b"), (4, "c")]),
    ),
    case(
        "csv-too-many-cells",
        "csv",
        "campaign_id,owner\na,ana,extra\nb,bo\n",
        Rows({2: "3 cells, the header has 2"}, [(3, "b")]),
    ),
    case(
        "csv-unicode-line-separators-are-cell-text",
        "csv",
        "campaign_id,owner\na,x\u2028y\nb,bo\n",
        Rows({2: "labels.owner"}, [(3, "b")]),
    ),
    # JSON lines: a row is one "\n"-ended line whatever its strings hold
    *(
        case(
            f"jsonl-U+{ord(ch):04X}-in-a-string",
            "jsonl",
            f'{{"campaign_id": "a", "no{ch}pe": 1}}\n{{"campaign_id": "next"}}\n',
            Rows({1: "unknown field"}, [(2, "next")]),
        )
        for ch in ("\u2028", "\u2029", "\u0085")
    ),
    *(
        case(
            f"jsonl-raw-{ord(ch):#04x}-in-a-string",
            "jsonl",
            f'{{"campaign_id": "a{ch}b"}}\n{{"campaign_id": "next"}}\n',
            Rows({1: "not JSON"}, [(2, "next")]),
        )
        for ch in ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
    ),
    case(
        "jsonl-crlf-bom-and-blank-lines",
        "jsonl",
        '\ufeff{"campaign_id": "a"}\r\n\r\n  \n{"channel": "display"}\r\n',
        Rows({}, [(1, "a"), (4, "display")]),
    ),
    case(
        "jsonl-bare-cr-is-white-space-inside-a-row",
        "jsonl",
        '{"campaign_id":\r"a"}\n{"campaign_id": "b"}\n',
        Rows({}, [(1, "a"), (2, "b")]),
    ),
    case(
        "jsonl-field-given-twice",
        "jsonl",
        '{"campaign_id": "a", "targets": {"cpa": 1, "cpa": 2}}\n{"campaign_id": "b"}\n',
        Rows({1: "field 'cpa' is given twice"}, [(2, "b")]),
    ),
    case(
        "jsonl-400-digit-number",
        "jsonl",
        f'{{"campaign_id": "a", "budget": {{"daily": {DIGITS_400}}}}}\n{{"campaign_id": "b"}}\n',
        Rows({1: "not JSON"}, [(2, "b")]),
    ),
    case(
        "jsonl-nested-5000-deep",
        "jsonl",
        '{"campaign_id": "a", "labels": ' + "[" * 5000 + "]" * 5000 + "}\n",
        Rows({1: "not JSON"}),
    ),
    case(
        "jsonl-nul-line", "jsonl", '\x00\n{"campaign_id": "b"}\n', Rows({1: "not JSON"}, [(2, "b")])
    ),
    # YAML
    case(
        "yaml-400-digit-daily-budget",
        "yaml",
        f"- campaign_id: a\n  budget: {{daily: {DIGITS_400}}}\n- campaign_id: b\n",
        Rows({1: "budget.daily is not a finite number"}, [(3, "b")]),
    ),
    case(
        "yaml-400-digit-cpa-target",
        "yaml",
        f"- campaign_id: a\n  targets:\n    cpa: {DIGITS_400}\n",
        Rows({1: "targets.cpa is not a finite number"}),
    ),
    case(
        "yaml-5000-digit-integer",
        "yaml",
        f"- {{campaign_id: a, targets: {{roas: {'9' * 5000}}}}}\n",
        Rows({1: "targets.roas is not a finite number"}),
    ),
    case(
        "yaml-huge-hex-integer",
        "yaml",
        f"- {{campaign_id: a, budget: {{total: 0x{'f' * 300}}}}}\n",
        Rows({1: "budget.total is not a finite number"}),
    ),
    case(
        "yaml-schema-400-digits",
        "yaml",
        f"- {{campaign_id: a, schema: {DIGITS_400}}}\n",
        Rows({1: "schema is not a finite number"}),
    ),
    case(
        "yaml-float-overflow-is-infinite",
        "yaml",
        "- {campaign_id: a, targets: {cpa: 1.0e+400}}\n",
        Rows({1: "targets.cpa must be a finite number"}),
    ),
    case("yaml-scalar-document", "yaml", "just a sentence\n", Refused("a list of plans")),
    case("yaml-number-document", "yaml", f"{DIGITS_400}\n", Refused("a list of plans")),
    case("yaml-mapping-without-plans", "yaml", "campaign_id: a\n", Refused("a list of plans")),
    case(
        "yaml-two-documents",
        "yaml",
        "- {campaign_id: a}\n---\n- {campaign_id: b}\n",
        Refused("not YAML"),
    ),
    case("yaml-nul-byte", "yaml", "- {campaign_id: a\x00}\n", Refused("not YAML")),
    case(
        "yaml-nested-3000-deep",
        "yaml",
        "- " + "[" * 3000 + "]" * 3000 + "\n",
        Refused("nested too deeply"),
    ),
    case(
        "yaml-billion-laughs",
        "yaml",
        BOMB + "plans:\n  - {campaign_id: boom, labels: {owner: *a8}}\n  - {campaign_id: ok}\n",
        Rows({BOMB_LINES + 2: "more than 1000 values"}, [(BOMB_LINES + 3, "ok")]),
    ),
    case(
        "yaml-alias-inside-its-own-anchor",
        "yaml",
        "- &me {campaign_id: a, labels: {owner: *me}}\n- {campaign_id: b}\n",
        Rows({1: "labels.owner holds itself"}, [(2, "b")]),
    ),
    case(
        "yaml-integer-key",
        "yaml",
        "- campaign_id: a\n  targets: {1: 2}\n- {campaign_id: b}\n",
        Rows({1: "a key of targets on line 2 is not text"}, [(3, "b")]),
    ),
    case(
        "yaml-boolean-key",
        "yaml",
        "- {campaign_id: a, yes: 1}\n",  # YAML 1.1: yes is true
        Rows({1: "a key of the plan on line 1 is not text"}),
    ),
    case(
        "yaml-sequence-key",
        "yaml",
        "- campaign_id: a\n  ? [x, y]\n  : 1\n",
        Rows({1: "is not text"}),
    ),
    case(
        "yaml-key-given-twice",
        "yaml",
        "- campaign_id: a\n  targets: {cpa: 1, cpa: 2}\n",
        Rows({1: "targets.cpa is given twice"}),
    ),
    case(
        "yaml-merge-key-defaults-may-be-overridden",
        "yaml",
        "base: &base {channel: search, labels: {owner: ana}}\n"
        "plans:\n  - {<<: *base, channel: display}\n  - {<<: *base}\n",
        Rows({}, [(3, "display"), (4, "search")]),
    ),
    case("yaml-python-tag", "yaml", "- !!python/object:os.system {}\n", Rows({1: "not YAML"})),
    case(
        "yaml-tag-its-value-cannot-be",
        "yaml",
        "- {campaign_id: a, targets: {cpa: !!float abc}}\n- {campaign_id: b, flight: {start: !!timestamp x}}\n",
        Rows({1: "a value YAML cannot read", 2: "a value YAML cannot read"}),
    ),
    case("yaml-empty-file", "yaml", "", Rows()),
    case(
        "yaml-items-that-are-not-plans",
        "yaml",
        "- 1\n- [a]\n- null\n",
        Rows({1: "not int", 2: "not list", 3: "not NoneType"}),
    ),
]


@pytest.mark.parametrize(("fmt", "text", "expected"), CASES)
def test_a_hostile_file_is_refused_or_read_row_by_row(fmt, text, expected):
    if isinstance(expected, Refused):
        with pytest.raises(FileRefused) as refused:
            read_plans(text, fmt)
        assert expected.message in str(refused.value)
        return
    read = read_plans(text, fmt)
    reasons = {error.line: error.reason for error in read.errors}
    assert sorted(reasons) == sorted(expected.errors), reasons
    for line, part in expected.errors.items():
        assert part in reasons[line], (line, reasons[line])
    assert [(line, plan.campaign or plan.channel) for line, plan in read.plans] == expected.plans


# Text shaped like each format, then anything: random text alone rarely gets past the header or
# the YAML parser.
STARTS = {
    "csv": ["", "campaign_id,target_cpa,daily_budget,owner\n", "channel,flight_start,timezone\n"],
    "jsonl": ["", '{"campaign_id": "a"}\n', '{"channel": "x", "targets": {"ctr": '],
    "yaml": ["", "plans:\n  - campaign_id: a\n    targets: {cpa: ", "- campaign_id: "],
}
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=300)
# The characters that break lines, separate cells, quote or start YAML structure.
SHAPED = st.text(
    st.sampled_from(list(",\"'\n\r:-[]{}&*!#|>?1e9.0 abc_\x00\x0b\x0c\x1c\x85\u2028\u2029\ufeff")),
    max_size=200,
)


@pytest.mark.parametrize("fmt", FORMATS)
@given(start=st.data(), rest=st.one_of(ANY_TEXT, SHAPED))
def test_read_plans_raises_only_file_refused(fmt, start, rest):
    text = start.draw(st.sampled_from(STARTS[fmt])) + rest
    try:
        read = read_plans(text, fmt)
    except FileRefused as refused:
        assert "internal error" not in str(refused)
        return
    assert not [e for e in read.errors if "internal error" in e.reason]
    # Each format has its own line ends (CSV also \r, YAML also U+0085, U+2028, U+2029):
    # splitlines() counts them all, so no row's line can be past its count.
    lines = len(text.splitlines()) + 1
    assert all(1 <= line <= lines for line, _ in read.plans)
    assert all(1 <= error.line <= lines for error in read.errors)
