"""The live page in a real browser: headless Chromium (Debian ``chromium``, installed by
scripts/install-ops-tools.sh) driven by Playwright, on a worker with demo traffic and a token.

The page shows the campaigns; after the demo's incident, ``camp-03``'s CTR turns red and the
worker's pause decision appears, without a reload; a request without the token is refused. The
last screenshot is saved as a test artefact (``KPI_TEST_ARTIFACTS``, default tests/artifacts).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agents.broker import EmbeddedBroker
from agents.demo import CTR_COLLAPSE_CAMPAIGN
from tests.e2e.harness import (
    CTR_COLLAPSE_TEST_RULES,
    ROOT,
    WorkerProcess,
    demo_traffic,
    wait_for,
)
from tests.tools import tool

pytestmark = pytest.mark.e2e

TOKEN = "page-token-0123456789"
ARTIFACTS = Path(os.environ.get("KPI_TEST_ARTIFACTS", Path(ROOT) / "tests" / "artifacts"))


@pytest.fixture
def worker_with_traffic(tmp_path):
    with EmbeddedBroker() as broker:
        rules = tmp_path / "kpi-rules.yaml"
        rules.write_text(CTR_COLLAPSE_TEST_RULES)
        worker = WorkerProcess(
            broker.url,
            "live-page",
            str(tmp_path / "worker.log"),
            token=TOKEN,
            env={
                "KPI_BUCKET": "10s",
                "KPI_WINDOWS": "1m,5m,15m,1h",
                "KPI_RULES": str(rules),
                "KPI_DECISION_INTERVAL": "1s",
            },
        ).start()
        traffic_log = open(tmp_path / "traffic.log", "w")
        traffic = demo_traffic(broker.url, traffic_log)
        try:
            yield worker
        finally:
            traffic.terminate()
            traffic.wait(10)
            traffic_log.close()
            worker.stop()


def test_the_live_page_shows_the_incident_and_its_decision_without_a_reload(
    worker_with_traffic,
):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    worker = worker_with_traffic
    chromium = tool("chromium")
    url = f"http://127.0.0.1:{worker.port}/"
    wait_for(lambda: _status(url, TOKEN) == 200, 120, "the worker's page")

    # Without the token: refused, with both challenges (a browser asks for the password).
    assert _status(url, None) == 401
    assert _status(url + "kpis?view=table", None) == 401

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            # A browser without credentials is asked for them (Basic); with none to give, it
            # gets the refusal, not the page.
            anonymous = browser.new_page()
            try:
                response = anonymous.goto(url)
                assert response is not None and response.status == 401
            except PlaywrightError as refused:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(refused)
            anonymous.close()

            context = browser.new_context(
                http_credentials={"username": "ops", "password": TOKEN},
                viewport={"width": 1500, "height": 950},
            )
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            loaded_at = page.evaluate("window.kpiMonitorPage.loadedAt")
            # The campaigns, from /kpis?view=table.
            page.wait_for_selector(f"tr[data-campaign='{CTR_COLLAPSE_CAMPAIGN}']", timeout=60_000)
            assert page.locator("tbody tr").count() >= 10
            page.click(f"tr[data-campaign='{CTR_COLLAPSE_CAMPAIGN}']")
            page.wait_for_selector("#detail:not([hidden]) #chart-hour polyline", timeout=30_000)

            # The incident: its CTR cell turns red (a rule holds) and its decision arrives
            # over the long poll; the page was not reloaded for either.
            ctr_cell = f"tr[data-campaign='{CTR_COLLAPSE_CAMPAIGN}'] td[data-kpi='ctr']"
            page.wait_for_selector(f"{ctr_cell}.breach", timeout=300_000)
            decision = f"#decisions li[data-campaign='{CTR_COLLAPSE_CAMPAIGN}']"
            page.wait_for_selector(decision, timeout=180_000)
            assert "pause" in page.locator(decision).first.inner_text()
            assert "ctr_collapse" in page.locator(decision).first.inner_text()
            assert "ctr_collapse" in page.locator(ctr_cell).get_attribute("title")
            # Paused campaigns come first (the table's default order).
            page.wait_for_function(
                "document.querySelector('tbody tr').dataset.campaign === "
                f"'{CTR_COLLAPSE_CAMPAIGN}'",
                timeout=30_000,
            )
            page.wait_for_selector("#detail-decisions li[data-decision]", timeout=30_000)
            assert page.evaluate("window.kpiMonitorPage.loadedAt") == loaded_at
            assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
            # Filters narrow the table (served by the worker, not hidden in the browser).
            page.select_option("#channel", "email")
            page.wait_for_function(
                "[...document.querySelectorAll('tbody tr')].every("
                "r => r.children[1].textContent === 'email')",
                timeout=30_000,
            )
            page.select_option("#channel", "")
            page.wait_for_function(
                "document.querySelectorAll('tbody tr').length >= 10", timeout=30_000
            )
            page.screenshot(path=str(ARTIFACTS / "live-page.png"), full_page=True)
            assert errors == [], errors
        finally:
            browser.close()


def _status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0
