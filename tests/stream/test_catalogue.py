"""The metric catalogue is the one list of names: the worker exports only what it lists, with the
type and labels it gives, and every generated rule and dashboard query reads only listed names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.metrics import WorkerCollector, build_pipeline_metrics
from rulebook.generate import render
from rulebook.recording import LEVEL
from stream.catalogue import CATALOGUE
from stream.settings import Settings
from tests.agents.test_metrics import busy_campaign, scrape, state_of

ROOT = Path(__file__).resolve().parents[2]
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _family_of(sample_name: str) -> str | None:
    """The catalogue entry a sample or query name belongs to, if any."""
    name = sample_name.removeprefix(LEVEL)
    if name in CATALOGUE:
        return name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in CATALOGUE:
            return name.removesuffix(suffix)
    return None


@pytest.mark.parametrize("export", ["lean", "full"])
def test_the_worker_exports_only_catalogued_families_as_catalogued(export):
    _, families = scrape([state_of(*busy_campaign())], Settings(export=export))
    registry = CollectorRegistry()
    build_pipeline_metrics(registry)
    registry.register(WorkerCollector(lambda: 4, lambda: {("marketing.clicks", 0): 3}, lambda: 1))
    exported = list(families.values()) + list(registry.collect())
    assert exported
    for family in exported:
        spec = CATALOGUE.get(family.name)
        assert spec is not None, f"{family.name} is exported but not in stream/catalogue.py"
        assert family.type == spec.kind, family.name
        assert family.documentation.startswith(spec.doc), family.name
        for sample in family.samples:
            labels = set(sample.labels) - {"le", "channel" if export == "full" else ""}
            assert labels <= set(spec.labels), (family.name, sample.labels)


def _query_names(files: dict[str, str]) -> set[str]:
    names = set()
    for path, text in files.items():
        exprs = []
        if path.endswith(".json"):
            exprs = re.findall(r'"expr": "((?:[^"\\]|\\.)*)"', text)
            exprs += re.findall(r'"query": "((?:[^"\\]|\\.)*)"', text)
        else:
            document = yaml.safe_load(text)
            exprs = re.findall(r"(?:expr|expression): (.*)", yaml.safe_dump(document, width=10_000))
        for expr in exprs:
            names.update(
                re.findall(
                    r"\b(?:campaign:)?kpi_[a-z0-9_]+",
                    json.loads(f'"{expr}"') if path.endswith(".json") else expr,
                )
            )
    return names


def test_every_generated_query_reads_catalogued_metrics():
    names = _query_names(render(ROOT))
    assert {
        "kpi_window_events",
        "campaign:kpi_ctr_ratio_upper",
        "kpi_consumer_lag_messages",
    } <= names
    unknown = sorted(n for n in names if _family_of(n) is None)
    assert not unknown, f"queries read metrics no worker exports: {unknown}"


def test_a_query_on_an_unlisted_name_is_caught():
    assert _family_of("kpi_window_eventz") is None
    assert _family_of("campaign:kpi_ctr_ratio_lower") == "kpi_ctr_ratio_lower"
    assert _family_of("kpi_events_total") == "kpi_events"
