"""The live page at scale: a worker holding 5,000 campaigns (an hour of events each) with live
traffic, its page loaded in headless Chromium, and the worker's cost for the page's data.

    python bench/page.py [--campaigns 5000] [--loads 5]

Prints, each as p50 / max over the loads:
- the browser's time from navigation to the campaign table drawn (first rows in the DOM);
- the worker's time to answer the page's table request (``/kpis?view=table``, 200 rows), next to
  the whole snapshot (``/kpis``) and a ``/metrics`` scrape in the same run: the ratios are the
  figure, absolute times vary with this VM;
- the worst event-loop stall of the worker while the page was polling.
Needs ``chromium`` (scripts/install-ops-tools.sh) and the test extra (Playwright).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.broker import EmbeddedBroker
from bench.benchmark import create_topics
from bench.scale import Worker, hour_batches, live_traffic, send_batches


def timed_get(worker: Worker, path: str) -> float:
    started = time.perf_counter()
    worker.get(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium missing: run scripts/install-ops-tools.sh")
    from playwright.sync_api import sync_playwright

    now = int(time.time() * 1000)
    log = open("/tmp/kpi-bench-page.log", "w")
    print(f"== the live page with {args.campaigns:,} campaigns", flush=True)
    with EmbeddedBroker() as broker:
        asyncio.run(create_topics(broker.bootstrap))
        events = asyncio.run(
            send_batches(
                broker.bootstrap, hour_batches(args.campaigns, 12, now), f"{args.campaigns:,}"
            )
        )
        worker = Worker(broker, str(ROOT), log, {})
        stop_traffic = threading.Event()
        try:
            took = worker.wait_folded(events)
            print(f"\r  worker folded {events:,} events in {took:.0f}s", flush=True)
            live_traffic(broker.bootstrap, args.campaigns, 2000, stop_traffic)
            worker.get("/metrics")  # cold rows
            table, whole, scrape, loads, stalls = [], [], [], [], []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
                )
                try:
                    for _ in range(args.loads):
                        worker.health()  # resets the worst stall
                        page = browser.new_page(viewport={"width": 1500, "height": 950})
                        started = time.perf_counter()
                        page.goto(f"http://127.0.0.1:{worker.port}/")
                        page.wait_for_selector("tbody tr[data-campaign]", timeout=60_000)
                        loads.append(time.perf_counter() - started)
                        rows = page.locator("tbody tr").count()
                        page.wait_for_timeout(4000)  # a poll or two
                        stalls.append(worker.health().get("loop_lag_worst_seconds", 0.0))
                        page.close()
                        table.append(timed_get(worker, "/kpis?view=table&limit=200"))
                        whole.append(timed_get(worker, "/kpis"))
                        scrape.append(timed_get(worker, "/metrics"))
                finally:
                    browser.close()
        finally:
            stop_traffic.set()
            worker.stop()

    def spread(values: list[float]) -> str:
        return f"p50 {statistics.median(values) * 1000:,.0f} ms, max {max(values) * 1000:,.0f} ms"

    print(f"  page load to table drawn ({rows} rows shown): {spread(loads)}")
    print(f"  worker, /kpis?view=table (200 rows): {spread(table)}")
    print(
        f"  worker, /kpis (all {args.campaigns:,}): {spread(whole)} "
        f"({statistics.median(whole) / statistics.median(table):.1f}x the table's)"
    )
    print(
        f"  worker, /metrics: {spread(scrape)} "
        f"({statistics.median(scrape) / statistics.median(table):.1f}x the table's)"
    )
    print(f"  worst event-loop stall while the page polled: {max(stalls) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
