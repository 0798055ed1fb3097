"""How long the interactive viewer (graph.html) takes to open in a real browser.

    python benchmarks/viewer_open.py                 # loops of 1k, 10k, 50k ops and ResNet-18, 5 loads each
    python benchmarks/viewer_open.py --ops 2000 --reps 1

Each page is written by ``gradtrace.views.html.write_html`` and loaded from disk in
headless Chromium (selenium), a fresh load per repetition. "ready" is the page's own
clock (``performance.now()``, from navigation start) when the page has laid out and
drawn its first view (``window.gradtraceViewer.readyMs``); "layout" is the part of it
spent in the dagre layout (``window.GT_LAYOUT_MS``). Medians. Prints one JSON line per
page, then a Markdown table. Exits 2 with one line when Chromium, chromedriver or
selenium is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

import gradtrace  # noqa: E402
from gradtrace.runner import run_script  # noqa: E402
from gradtrace.views.html import write_html  # noqa: E402

RESNET = HERE.parent / "tests" / "views_corpus" / "resnet18_sgd.py"


def browser():
    """A headless Chromium driven by selenium, or None with the reason printed."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("viewer_open: selenium is not installed (pip install -e .[test])", file=sys.stderr)
        return None
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                              else None)
    if not chrome or not driver:
        print("viewer_open: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
              file=sys.stderr)
        return None
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(a)
    opts.binary_location = chrome
    return webdriver.Chrome(service=Service(driver), options=opts)


def loop_graph(ops: int):
    """The graph of a loop of ``ops`` small ops (``y = x + 1; x = y * 0.5``)."""
    x = torch.ones(8)
    with gradtrace.trace("stats") as tr:
        for _ in range(ops // 2):
            y = x + 1
            x = y * 0.5
    return tr.graph


def open_times(driver, page: Path, reps: int) -> dict:
    """Median ready and layout milliseconds of ``reps`` fresh loads of ``page``."""
    from selenium.webdriver.support.ui import WebDriverWait

    ready, layout = [], []
    for _ in range(reps):
        driver.get("about:blank")
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 120).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
        r, lay = driver.execute_script("return [window.gradtraceViewer.readyMs, window.GT_LAYOUT_MS || null];")
        ready.append(r)
        if lay is not None:
            layout.append(lay)
    return {"ready_ms": statistics.median(ready), "layout_ms": statistics.median(layout) if layout else None}


def measure(sizes, reps: int, resnet: bool = True) -> list:
    """One row per page: ``{"page", "ops", "bytes", "ready_ms", "layout_ms"}``; [] without a browser."""
    driver = browser()
    if driver is None:
        return []
    tmp = Path(tempfile.mkdtemp(prefix="gradtrace-viewer-"))
    rows = []
    try:
        pages = [(f"loop of {n:,} ops", loop_graph(n)) for n in sizes]
        if resnet:
            r = run_script(str(RESNET), print_traceback=False)
            pages.append(("ResNet-18, 2 SGD steps", r.trace.graph))
        for i, (name, G) in enumerate(pages):
            page = tmp / f"page{i}.html"
            write_html(G, page, findings=gradtrace.check(G))
            ops = sum(1 for _, d in G.nodes(data="kind") if d == "op")
            row = {"page": name, "ops": ops, "bytes": page.stat().st_size, **open_times(driver, page, reps)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        driver.quit()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def markdown(rows) -> str:
    """The rows as a Markdown table."""
    out = ["| page | ops | file | ready (median) | of which layout |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lay = f"{r['layout_ms']:.0f} ms" if r["layout_ms"] is not None else "–"
        out.append(f"| {r['page']} | {r['ops']:,} | {r['bytes'] / 1e6:.1f} MB | {r['ready_ms']:.0f} ms | {lay} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ops", default="1000,10000,50000", help="comma-separated loop sizes")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-resnet", action="store_true", help="leave out the ResNet-18 page")
    args = p.parse_args(argv)
    rows = measure([int(n) for n in args.ops.split(",") if n.strip()], args.reps, not args.no_resnet)
    if not rows:
        return 2
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
