"""The interactive viewer (issue 14): one self-contained HTML page per trace, tested
in a real headless chromium (selenium + Debian's chromium-driver) where they are
installed, and by what the page holds everywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import TESTS
from torch import nn

import gradtrace
from gradtrace.cli import main
from gradtrace.outputs import write_run_outputs
from gradtrace.runner import run_script
from gradtrace.views import html as viewer
from gradtrace.views.steps import find_steps

ROOT = TESTS.parent
CORPUS = TESTS / "views_corpus"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 5)
        self.block = nn.Sequential(nn.Linear(5, 5), nn.ReLU())
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        hidden = torch.relu(self.fc1(x))
        hidden = self.block(hidden)
        return self.fc2(hidden)


def _train_step():
    with gradtrace.trace() as tr:
        net = Net()
        x = torch.randn(4, 3)
        out = net(x)
        loss = out.pow(2).mean()
        loss.backward()
    return tr


@pytest.fixture(scope="module")
def small():
    return _train_step()


def _op(tr, name, module=None):
    return next(n for n, d in tr.graph.nodes(data=True) if d.get("kind") == "op" and d.get("name") == name
                and (module is None or d.get("module") == module))


# -- the page, without a browser ---------------------------------------------------------


def test_page_loads_no_script_or_style_from_elsewhere(small):
    text = viewer.to_html(small.graph)
    assert "<script src" not in text and "<link" not in text and "@import" not in text


def test_page_inlines_the_vendored_layout_library(small):
    assert "cytoscape-dagre" in viewer.to_html(small.graph)


def test_nan_statistics_make_valid_json():
    with gradtrace.trace() as tr:
        x = torch.tensor([0.0, 1.0])
        y = x / x  # 0/0 is NaN
    data = viewer._json_for_script(viewer.page_data(tr.graph))
    stats = json.loads(data)["tensors"][next(n for n, d in tr.graph.nodes(data=True) if d.get("label") == "y")]["stats"]
    assert stats["mean"] == "nan"
    del y


def test_script_end_tag_in_source_does_not_end_the_data():
    with gradtrace.trace() as tr:
        a = torch.ones(2) * 2  # </script><b>
    text = viewer.to_html(tr.graph)
    # the vendored scripts, the data and the viewer: three script elements, three ends
    assert text.count("</script>") == 3
    del a


def test_forward_op_carries_its_grad_fn(small):
    data = viewer.page_data(small.graph)
    op = next(o for o in data["ops"] if o["id"] == _op(small, "torch.nn.functional.linear", "Net.fc2"))
    assert {f["id"]: f["name"] for f in data["fns"]}[op["fn"]] == "AddmmBackward0"


def test_at_depth_one_the_model_opens_folded_into_one_box(small):
    assert viewer.page_data(small.graph, depth=1)["folded"] == ["Net"]


def test_findings_reach_the_page():
    with gradtrace.trace() as tr:
        w = torch.ones(3, requires_grad=True)
        y = (w * 2).sum()
        y.backward()
        w.data.mul_(2)  # a write autograd cannot see
    codes = {f["code"] for f in viewer.page_data(tr.graph, gradtrace.check(tr))["findings"]}
    assert codes == {f.code for f in gradtrace.check(tr)} and codes


def test_cli_html_writes_the_page(small, tmp_path):
    small.save(tmp_path / "t")
    r = CliRunner().invoke(main, ["html", str(tmp_path / "t"), "-o", str(tmp_path / "v.html")])
    assert r.exit_code == 0 and (tmp_path / "v.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_html_writes_graph_html_in_the_folder_by_default(small, tmp_path):
    small.save(tmp_path / "t")
    CliRunner().invoke(main, ["html", str(tmp_path / "t")])
    assert (tmp_path / "t" / "graph.html").exists()


def test_cli_html_with_rank_writes_graph_html_in_that_ranks_folder(small, tmp_path):
    small.save(tmp_path / "ddp" / "rank0")
    small.save(tmp_path / "ddp" / "rank1")
    r = CliRunner().invoke(main, ["html", str(tmp_path / "ddp"), "--rank", "1"])
    assert r.exit_code == 0 and (tmp_path / "ddp" / "rank1" / "graph.html").exists()
    assert not (tmp_path / "ddp" / "graph.html").exists()


def test_cli_html_on_a_missing_folder_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["html", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_run_outputs_include_graph_html(small, tmp_path):
    written = write_run_outputs(small, tmp_path / "t", depth=3, svg=False, html=True)
    assert written["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_run_outputs_skip_graph_html_past_the_limit(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(viewer, "HTML_MAX_OPS", 3)
    write_run_outputs(small, tmp_path / "t", depth=3, svg=False, html=True)
    assert not (tmp_path / "t" / "graph.html").exists() and "graph.html not written" in capsys.readouterr().err


def test_notebook_shows_the_viewer_in_an_iframe(small):
    assert small._repr_html_().startswith("<iframe srcdoc=\"&lt;!DOCTYPE html&gt;")


# -- in a real browser -------------------------------------------------------------------


def _browser_or_skip():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e .[test])")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if not chrome or not driver:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(a)
    opts.binary_location = chrome
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Selenium Manager would try to download a driver: name the installed one.
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def browser():
    d = _browser_or_skip()
    yield d
    d.quit()


def _open(browser, path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(Path(path).resolve().as_uri())
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
    return browser


@pytest.fixture(scope="module")
def small_page(small, browser, tmp_path_factory):
    path = tmp_path_factory.mktemp("viewer") / "small.html"
    viewer.write_html(small.graph, path, gradtrace.check(small))
    return path


def _js(b, script, *args):
    return b.execute_script("const V = window.gradtraceViewer, cy = V.cy;\n" + script, *args)


def _click_node(b, node_id):
    """A real mouse click at the node's place on the canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    box = b.find_element(By.ID, "cy")
    x, y, w, h = _js(b, "const p = cy.getElementById(arguments[0]).renderedPosition();"
                        "const r = document.getElementById('cy').getBoundingClientRect();"
                        "return [p.x, p.y, r.width, r.height];", node_id)
    ActionChains(b).move_to_element_with_offset(box, int(x - w / 2), int(y - h / 2)).click().perform()


def _severe(b):
    return [e for e in b.get_log("browser") if e.get("level") == "SEVERE"]


def test_browser_draws_every_forward_op_of_the_step(small, small_page, browser):
    _open(browser, small_page)
    drawn = set(_js(browser, "return cy.nodes('[kind = \"op\"]').map(n => n.id());"))
    phase = find_steps(small.graph).phase_of
    expected = {n for n, p in phase.items() if p in ("forward", "backward")}
    assert drawn == expected


def test_browser_opens_fitted(small_page, browser):
    _open(browser, small_page)
    outside = _js(browser, "const r = document.getElementById('cy').getBoundingClientRect();"
                           "return cy.nodes().filter(n => { const b = n.renderedBoundingBox();"
                           "return b.x1 < -1 || b.y1 < -1 || b.x2 > r.width + 1 || b.y2 > r.height + 1; }).length;")
    assert outside == 0


def test_browser_click_on_an_op_shows_its_shape_and_source(small, small_page, browser):
    from selenium.webdriver.common.by import By

    _open(browser, small_page)
    _click_node(browser, _op(small, "torch.nn.functional.linear", "Net.fc2"))
    panel = browser.find_element(By.ID, "panel").text
    assert "4×2" in panel and "return self.fc2(hidden)" in panel


def test_browser_search_for_a_variable_marks_the_ops_that_bind_or_read_it(small, small_page, browser):
    from selenium.webdriver.common.by import By

    _open(browser, small_page)
    browser.find_element(By.ID, "search").send_keys("hidden")
    marked = set(_js(browser, "return cy.nodes('.match').map(n => n.id());"))
    G = small.graph
    expected = {o for t, d in G.nodes(data=True) if d.get("label") == "hidden"
                for o in set(G.predecessors(t)) | set(G.successors(t)) if G.nodes[o].get("kind") == "op"}
    assert marked == expected


def test_browser_collapse_folds_a_module_into_one_node(small, small_page, browser):
    from selenium.webdriver.common.by import By

    _open(browser, small_page)
    _js(browser, "cy.getElementById('m:Net.block').emit('tap');")
    browser.find_element(By.ID, "toggle-module").click()
    after = _js(browser, "const m = cy.getElementById('m:Net.block');"
                         "return [m.hasClass('folded'), cy.getElementById(arguments[0]).length];",
                _op(small, "torch.nn.functional.linear", "Net.block.0"))
    assert after == [True, 0]


def test_page_names_modules_by_the_variable_the_model_was_called_through(small):
    assert viewer.page_data(small.graph)["modules"]["Net.block"]["name"] == "net.block"


def test_page_names_parameters_through_the_users_variable(small):
    names = {t["name"] for t in viewer.page_data(small.graph)["tensors"].values() if t["param"]}
    assert "net.fc1.weight" in names and not any(n.startswith("Net.") for n in names)


def test_browser_module_box_is_labelled_with_the_users_variable(small_page, browser):
    _open(browser, small_page)
    assert _js(browser, "return cy.getElementById('m:Net').data('label');") == "net\nNet"


def test_browser_forward_op_links_to_its_grad_fn(small, small_page, browser):
    from selenium.webdriver.common.by import By

    _open(browser, small_page)
    _click_node(browser, _op(small, "torch.nn.functional.linear", "Net.fc2"))
    browser.find_element(By.ID, "goto-fn").click()
    selected = _js(browser, "return [V.state.view, cy.nodes(':selected').map(n => n.data('label'))];")
    assert selected == ["autograd", ["AddmmBackward0\nF.linear"]]


def test_browser_step_selector_draws_that_step(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with gradtrace.trace() as tr:
        w = torch.ones(2, requires_grad=True)
        for _ in range(2):
            loss = (w * 3).sum()
            loss.backward()
    viewer.write_html(tr.graph, tmp_path / "steps.html")
    _open(browser, tmp_path / "steps.html")
    Select(browser.find_element(By.ID, "step")).select_by_value("1")
    first = _js(browser, "return cy.nodes('[kind = \"op\"]').map(n => V.data.ops.find(o => o.id === n.id()).step);")
    assert set(first) == {1}


@pytest.fixture
def loop_page(tmp_path, monkeypatch):
    monkeypatch.setattr(viewer, "FOLD_LINES_PAST", 10)
    with gradtrace.trace() as tr:
        x = torch.ones(3, requires_grad=True)
        y = x
        for _ in range(15):
            y = torch.tanh(y * 1.5)
        y.sum().backward()
    viewer.write_html(tr.graph, tmp_path / "loop.html")
    return tmp_path / "loop.html"


def test_browser_past_the_budget_a_loop_line_opens_as_one_node(browser, loop_page):
    _open(browser, loop_page)
    assert _js(browser, "return cy.nodes('[kind = \"line\"]').map(n => n.data('n'));") == [30]


def test_browser_expanding_a_folded_line_draws_its_ops(browser, loop_page):
    from selenium.webdriver.common.by import By

    _open(browser, loop_page)
    _js(browser, "cy.nodes('[kind = \"line\"]').emit('tap');")
    browser.find_element(By.ID, "toggle-module").click()
    assert _js(browser, "return cy.nodes('[kind = \"op\"]').length;") == 30 + 3  # the loop, ones, sum, backward


def test_browser_console_has_no_errors_after_use(small, small_page, browser):
    from selenium.webdriver.common.by import By

    browser.get_log("browser")  # start clean
    _open(browser, small_page)
    _click_node(browser, _op(small, "torch.nn.functional.linear", "Net.fc2"))
    browser.find_element(By.ID, "search").send_keys("fc1")
    _js(browser, "document.getElementById('expand-all').click(); document.getElementById('view').value = 'autograd';"
                 "document.getElementById('view').dispatchEvent(new Event('change'));")
    assert _severe(browser) == []


def test_browser_screenshot_of_resnet18(browser, tmp_path):
    """The README's picture of the viewer: ResNet-18's training step, an op's panel open.
    Written into docs/img when GRADTRACE_SCREENSHOTS=1."""
    r = run_script(str(CORPUS / "resnet18_sgd.py"), print_traceback=False)
    assert r.exit_code == 0
    viewer.write_html(r.trace.graph, tmp_path / "resnet.html", gradtrace.check(r.trace))
    _open(browser, tmp_path / "resnet.html")
    conv = _js(browser, "const o = V.data.ops.find(o => o.module === 'ResNet18.conv1' && o.phase === 'forward'"
                        " && String(o.step) === V.state.step); return o.id;")
    _js(browser, "cy.zoom({level: 1.0, renderedPosition: cy.getElementById(arguments[0]).renderedPosition()});"
                 "cy.center(cy.getElementById(arguments[0]).closedNeighborhood());", conv)
    _click_node(browser, conv)
    _js(browser, "return new Promise(r => setTimeout(r, 400));")
    # the model's top at a readable zoom, the clicked op's panel open
    _js(browser, "const p = cy.getElementById(arguments[0]).position(), w = cy.width(); cy.zoom(0.95);"
                 "cy.pan({x: w / 2 - p.x * 0.95, y: 90 - p.y * 0.95});", conv)
    _js(browser, "return new Promise(r => setTimeout(r, 600));")  # let the canvas redraw sharp
    shot = tmp_path / "viewer-resnet18.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("GRADTRACE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "img" / "viewer-resnet18.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _severe(browser) == []


# -- the run timeline ---------------------------------------------------------------------


def _blow_up_run(steps=10, jump_at=6, last=None):
    """A small regression loop whose learning rate is 1e6 from step ``jump_at`` (0-based),
    its last ``last`` steps kept in full when given."""
    torch.manual_seed(0)
    with gradtrace.trace(last=last) as tr:
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(16, 4)
        y = x.sum(1, keepdim=True)
        for step in range(steps):
            if step == jump_at:
                opt.param_groups[0]["lr"] = 1e6
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return tr


@pytest.fixture(scope="module")
def run_page(browser, tmp_path_factory):
    from gradtrace.analyze.step_rows import step_rows

    tr = _blow_up_run()
    path = tmp_path_factory.mktemp("timeline") / "run.html"
    findings = gradtrace.check(tr)
    rows = step_rows(tr.graph)
    viewer.write_html(tr.graph, path, findings, rows=rows)
    return path, tr, rows, findings


def _click_column(b, step, steps):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    svg = b.find_element(By.ID, "timeline-svg")
    w = svg.size["width"]
    x = 118 + (step - 0.5) * (w - 118 - 8) / steps
    ActionChains(b).move_to_element_with_offset(svg, int(x - w / 2), 0).click().perform()


def _hover_column(b, step, steps) -> str:
    """Hover the timeline's column of ``step`` (from 1, of ``steps``); return what the
    timeline then says."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    svg = b.find_element(By.ID, "timeline-svg")
    w = svg.size["width"]
    x = 118 + (step - 0.5) * (w - 118 - 8) / steps
    ActionChains(b).move_to_element_with_offset(svg, int(x - w / 2), 0).perform()
    return _js(b, "return document.getElementById('timeline-info').textContent;")


def _opened_by_click(b, page, step, steps):
    """``(the step the viewer shows, the ops it draws)`` after a click on ``step``'s column."""
    _open(b, page)
    _click_column(b, step, steps)
    return _js(b, "return [V.state.step, cy.nodes('[kind = \"op\"]').map(n => n.id())];")


def test_browser_timeline_draws_the_loss_of_every_step(run_page, browser):
    path, _, rows, _ = run_page
    _open(browser, path)
    d = _js(browser, "return document.querySelector('#timeline .tl-loss').getAttribute('d');")
    finite_losses = sum(1 for r in rows if r["losses"][-1] == r["losses"][-1] and abs(r["losses"][-1]) != float("inf"))
    assert d.count("M") + d.count("L") == finite_losses


def test_browser_click_on_a_timeline_step_opens_that_step(run_page, browser):
    path, tr, rows, _ = run_page
    drawn = _opened_by_click(browser, path, 7, len(rows))
    steps = find_steps(tr.graph)
    assert drawn[0] == "7" and drawn[1] and all(steps.step_of[n] == 7 for n in drawn[1])


def test_browser_hovering_a_timeline_step_says_its_learning_rate(run_page, browser):
    path, _, rows, _ = run_page
    _open(browser, path)
    text = _hover_column(browser, 7, len(rows))
    assert text.startswith("step 7:") and "learning rate 1000000," in text


def test_browser_hovering_a_timeline_step_names_its_largest_update_to_weight_ratio(run_page, browser):
    path, _, rows, _ = run_page
    _open(browser, path)
    text = _hover_column(browser, 7, len(rows))
    update = rows[6]["max_update"]
    shown = text.split("largest update/weight ", 1)[1]
    number, name = shown.split(" (", 1)
    assert float(number) == pytest.approx(update["ratio"], rel=1e-3) and name.startswith(update["tensor"] + ")")


def test_browser_hovering_a_step_the_loss_scaler_skipped_says_so(browser, tmp_path):
    from gradtrace.analyze.step_rows import step_rows

    torch.manual_seed(0)
    with gradtrace.trace() as tr:
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)  # skips its first
        x = torch.randn(64, 4) * 3
        for _ in range(4):
            opt.zero_grad()
            scaler.scale(nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))).backward()
            scaler.step(opt)
            scaler.update()
    rows = step_rows(tr.graph)
    viewer.write_html(tr.graph, tmp_path / "scaled.html", rows=rows)
    _open(browser, tmp_path / "scaled.html")
    text = _hover_column(browser, 1, len(rows))
    assert rows[0]["scaler"]["skipped"] and text.startswith("step 1:") and "(update skipped)" in text


@pytest.fixture(scope="module")
def ring_page(browser, tmp_path_factory):
    """``(page, trace, rows)`` of the blow-up run kept with ``last=3`` (steps 8 to 10 whole)."""
    from gradtrace.analyze.step_rows import step_rows

    tr = _blow_up_run(last=3)
    path = tmp_path_factory.mktemp("ring") / "ring.html"
    rows = step_rows(tr.graph)
    viewer.write_html(tr.graph, path, gradtrace.check(tr), rows=rows)
    return path, tr, rows


def test_browser_click_on_a_kept_step_of_a_last_trace_opens_it_by_the_runs_number(ring_page, browser):
    path, tr, rows = ring_page
    drawn = _opened_by_click(browser, path, 9, len(rows))
    steps = find_steps(tr.graph)
    assert drawn[0] == "9" and drawn[1] and all(steps.step_of[n] == 2 for n in drawn[1])


def test_browser_click_on_a_step_a_last_trace_dropped_keeps_the_open_step(ring_page, browser):
    path, _, rows = ring_page
    _open(browser, path)
    _click_column(browser, 3, len(rows))
    assert _js(browser, "return V.state.step;") == "10"


def test_browser_hovering_a_dropped_step_says_it_was_not_kept(ring_page, browser):
    path, _, rows = ring_page
    _open(browser, path)
    text = _hover_column(browser, 3, len(rows))
    assert text.startswith("step 3:") and text.endswith("(not kept: --last 3)")


def test_browser_the_step_list_of_a_last_trace_numbers_steps_as_the_run_did(ring_page, browser):
    path, _, _ = ring_page
    _open(browser, path)
    options = _js(browser, "return Array.from(document.getElementById('step').options).map(o => o.value);")
    assert options == ["all", "8", "9", "10"]


def test_browser_timeline_marks_the_steps_that_made_nan_or_inf(run_page, browser):
    path, _, rows, _ = run_page
    _open(browser, path)
    marked = _js(browser, "return document.querySelectorAll('#timeline .tl-bad').length;")
    assert marked == sum(1 for r in rows if r["nan"] or r["inf"] or r["losses"][-1] != r["losses"][-1]) > 0


def test_browser_timeline_marks_the_steps_with_findings(run_page, browser):
    path, tr, _, findings = run_page
    _open(browser, path)
    step_of = find_steps(tr.graph).step_of
    expected = {step_of[n] for f in findings for n in f.nodes if n in step_of}
    assert _js(browser, "return document.querySelectorAll('#timeline .tl-finding').length;") == len(expected) > 0


def test_browser_a_trace_of_one_step_has_no_timeline(small_page, browser):
    _open(browser, small_page)
    assert _js(browser, "return getComputedStyle(document.getElementById('timeline')).display;") == "none"


def test_browser_screenshot_of_the_run_timeline(run_page, browser, tmp_path):
    """docs/html.md's picture of the timeline: the step where the learning rate was raised
    opened. Written into docs/img when GRADTRACE_SCREENSHOTS=1."""
    path, _, rows, _ = run_page
    browser.set_window_size(1200, 700)
    try:
        _open(browser, path)
        _click_column(browser, 7, len(rows))
        _js(browser, "return new Promise(r => setTimeout(r, 600));")
        shot = tmp_path / "viewer-timeline.png"
        browser.save_screenshot(str(shot))
    finally:
        browser.set_window_size(1600, 1000)
    if os.environ.get("GRADTRACE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "img" / "viewer-timeline.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _severe(browser) == []


@pytest.fixture(scope="module")
def cost_page(browser, tmp_path_factory):
    from gradtrace.analyze.costs import op_costs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.GELU(), nn.Linear(512, 8))
    with gradtrace.trace(time=True) as tr:
        model(torch.randn(32, 64)).sum().backward()
    path = tmp_path_factory.mktemp("costs") / "costs.html"
    costs = op_costs(tr.graph)
    viewer.write_html(tr.graph, path, costs=costs)
    return path, tr, costs


def _colour_by(b, key):
    _js(b, "const s = document.getElementById('colour'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
        key)
    return _js(b, "return Object.fromEntries(cy.nodes('[kind = \"op\"]').map(n => [n.id(), n.data('color')]));")


def test_browser_the_colour_menu_offers_each_cost_the_trace_has(cost_page, browser):
    _open(browser, cost_page[0])
    assert _js(browser, "return Array.from(document.getElementById('colour').options).map(o => o.value);") == [
        "kind", "saved", "flops", "time"]


def test_browser_colouring_by_flops_makes_the_largest_matmul_reddest_and_unknowns_grey(cost_page, browser):
    path, tr, costs = cost_page
    _open(browser, path)
    colours = _colour_by(browser, "flops")
    biggest = max((op for op in colours if (costs.get(op) or {}).get("flops")), key=lambda op: costs[op]["flops"])
    assert colours[biggest] == "rgb(214,39,40)"
    gelu = next(op for op in colours if tr.graph.nodes[op]["name"].endswith("gelu"))
    assert colours[gelu] == "#d9d9d9"  # no FLOP formula: unknown, not zero


def test_browser_colouring_by_kind_again_restores_the_category_colours(cost_page, browser):
    _open(browser, cost_page[0])
    before = _colour_by(browser, "kind")
    _colour_by(browser, "saved")
    assert _colour_by(browser, "kind") == before


def test_browser_a_module_box_shows_its_total(cost_page, browser):
    path, tr, costs = cost_page
    _open(browser, path)
    _colour_by(browser, "saved")
    label = _js(browser, "return cy.getElementById('m:Sequential').data('label');")
    total = sum(c["saved"] for op, c in costs.items() if (tr.graph.nodes[op].get("module") or "").startswith("Sequential"))
    assert float(re.search(r" · ([\d.]+) KiB$", label).group(1)) == pytest.approx(total / 1024, rel=1e-2)


def test_browser_an_op_panel_lists_its_costs(cost_page, browser):
    path, tr, costs = cost_page
    _open(browser, path)
    op = max((op for op in costs if costs[op]["flops"]), key=lambda op: costs[op]["flops"])
    _js(browser, "V.selectNode(arguments[0]);", op)
    text = _js(browser, "return document.getElementById('panel').textContent;")
    shown = float(re.search(r"FLOPs([\d.]+) MFLOP", text).group(1))
    assert shown == pytest.approx(costs[op]["flops"] / 1e6, rel=1e-2) and "time" in text
