from __future__ import annotations

import pytest
import yaml

from autopause.evaluate import Figures, evaluate, selects
from rulebook.alerting import prometheus_rule_file
from stream.events import EVENT_TYPES
from tests.autopause.cases import CASES, CTR, rule, win
from tests.tools import run, tool


def _evaluate(fields: dict, figures: Figures, campaign: str) -> bool:
    r = rule(**fields)
    return selects(r, campaign) and evaluate(r, figures).holds


@pytest.mark.parametrize("name, fields, figures, holds", CASES, ids=[c[0] for c in CASES])
def test_worker_evaluation(name, fields, figures, holds):
    assert _evaluate(fields, figures, "c1") == holds


def test_confident_rule_reports_the_bound_it_compared():
    result = evaluate(rule(**CTR), Figures({"15m": win(3000, 6)}))
    assert (
        result.value == 6 / 3000
        and result.bound is not None
        and result.value < result.bound < 0.005
    )
    assert result.volume == 3000


def test_resume_condition_reads_the_other_side_of_the_bound():
    r = rule(**CTR)
    healthy = Figures({"15m": win(3000, 60)})
    assert evaluate(r, healthy, op=">", threshold=0.01).holds  # lower bound of 2% is above 1%
    assert not evaluate(r, Figures({"15m": win(3000, 31)}), op=">", threshold=0.01).holds


def _series(campaign: str, figures: Figures) -> list[dict]:
    labels = f'campaign="{campaign}",job="kpi-monitor",instance="w1"'
    out = []

    def add(name: str, extra: str, value: float) -> None:
        out.append({"series": f"{name}{{{labels}{extra}}}", "values": f"{value!r}x5"})

    for window, figs in figures.windows.items():
        w = f',window="{window}"'
        for kind, count in zip(EVENT_TYPES, figs.counts):
            add("kpi_window_events", f'{w},event_type="{kind}"', count)
        add("kpi_window_revenue", w, figs.revenue_micros / 1e6)
        add("kpi_window_spend", w, figs.spend_micros / 1e6)
        for name, ms in (("p50", figs.p50_ms), ("p95", figs.p95_ms)):
            if ms is not None:
                add(f"kpi_sales_response_{name}_seconds", w, ms / 1000)
    for kpi, target in figures.targets.items():
        add("kpi_plan_target", f',kpi="{kpi}"', target)
    for (kpi, window, label), value in figures.baselines.items():
        if value is not None:
            add("kpi_baseline", f',kpi="{kpi}",window="{window}",baseline="{label}"', value)
    metric_of = {
        "budget_used": ("kpi_budget_used_ratio", ',period="daily"'),
        "budget_pacing": ("kpi_budget_pacing_ratio", ',period="daily"'),
        "flight_budget_used": ("kpi_budget_used_ratio", ',period="flight"'),
        "flight_pacing": ("kpi_budget_pacing_ratio", ',period="flight"'),
        "spend_outside_flight": ("kpi_spend_outside_flight", ""),
    }
    for kpi, value in figures.budget.items():
        add(*metric_of[kpi], value)
    if figures.day_elapsed_s is not None:
        add("kpi_day_elapsed_seconds", "", figures.day_elapsed_s)
    if figures.awaiting:
        add("kpi_leads_awaiting_contact", "", figures.awaiting)
    if figures.oldest_awaiting_age_s is not None:
        add("kpi_oldest_uncontacted_lead_age_seconds", "", figures.oldest_awaiting_age_s)
    return out


def test_prometheus_rule_agrees_with_the_worker_case_by_case(tmp_path):
    rules, tests = [], []
    for i, (_, fields, figures, holds) in enumerate(CASES):
        r = rule(**{**fields, "name": f"case_{i}"})
        rules.append(r)
        campaign = f"c{i}"
        expected = [{"labels": f'{{campaign="{campaign}"}}', "value": 1}] if holds else []
        tests.append(
            {
                "interval": "1m",
                "input_series": _series(campaign, figures),
                "promql_expr_test": [
                    {
                        "expr": f"count by (campaign) ({r.expr()})",
                        "eval_time": "2m",
                        "exp_samples": expected,
                    }
                ],
            }
        )
    rule_file = tmp_path / "cases.rules.yml"
    rule_file.write_text(yaml.safe_dump(prometheus_rule_file(rules)))
    spec = tmp_path / "cases.test.yml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}
        )
    )
    result = run(tool("promtool"), "test", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(_evaluate(f, fig, f"c{i}") == h for i, (_, f, fig, h) in enumerate(CASES))
