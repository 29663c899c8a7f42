"""Issue 15, defect 14, as drawn by a real browser: on Compare no legend sits on an axis title, the parallel
coordinates' labels do not run into each other or off the chart, and each run has one colour on every chart."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from services.config import Settings
from services.store.orm import Job
from tests.conftest import PortalServer
from tests.e2e.test_browser import browser, wait_for_app  # noqa: F401 (the browser fixture)
from tests.test_chart_options import noisy, seeded_job

pytestmark = pytest.mark.browser

# Each element's box in the page, for every chart: the legend, the x axis title and the parallel axes' titles.
BOXES = """() => [...document.querySelectorAll('.js-plotly-plot')].map(plot => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const svg = plot.querySelector('svg.main-svg');
  return {
    figure: box(svg),
    legend: [...plot.querySelectorAll('g.legend')].map(box),
    xtitle: [...plot.querySelectorAll('g.g-xtitle text')].map(box),
    labels: [...plot.querySelectorAll('g.annotation text')].map(box),
    colours: [...plot.querySelectorAll('g.scatterlayer g.trace path.js-line')].map(p => p.style.stroke),
  };
})"""


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(a: list[float], outer: list[float]) -> bool:
    return a[0] >= outer[0] - 1 and a[1] >= outer[1] - 1 and a[2] <= outer[2] + 1 and a[3] <= outer[3] + 1


@pytest.fixture
def compared(tmp_path) -> tuple[PortalServer, list[int]]:
    from services.auth import local_user
    from services.portal import build_portal

    data = tmp_path / "portal-data"
    portal = build_portal(Settings(data_dir=data, backend="local"))
    try:
        user = local_user(portal.settings)
        runs = [seeded_job(portal, user, {"loss": noisy(150, i), "val_loss": noisy(150, 10 + i),
                                          "accuracy": 1 - noisy(150, 20 + i)}) for i in range(4)]
        with portal.jobs.session() as s:  # four parameters differ: four parallel axes side by side, and the metric
            for i, job_id in enumerate(runs):
                job = s.get(Job, job_id)
                job.request = {**job.request, "learning_rate": 0.001 * (i + 1), "batch_size": 16 * 2 ** i,
                               "max_runtime_hours": 1 + i, "checkpoint_every": i + 1}
                job.final_metrics = {"loss": 0.1 * (i + 1), "accuracy": 0.9 - 0.1 * i}
    finally:
        portal.close()
    server = PortalServer(data).start()
    yield server, runs
    server.stop()


@pytest.mark.parametrize("width", [1400, 900])
def test_compare_legends_labels_and_colours_fit(browser, compared, width):  # noqa: F811
    server, runs = compared
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.goto(f"{server.url}/compare?ids={','.join(map(str, runs))}")
    wait_for_app(page)
    expect(page.locator(".js-plotly-plot")).to_have_count(3, timeout=20_000)  # loss, accuracy, parallel coordinates
    page.get_by_text("Parameters against a result").scroll_into_view_if_needed()
    page.wait_for_timeout(1_000)
    charts = page.evaluate(BOXES)
    curves = [c for c in charts if c["xtitle"]]
    assert len(curves) == 2
    assert "WebGL" not in page.get_by_test_id("stMain").inner_text()
    for chart in curves:
        legend, title = chart["legend"][0], chart["xtitle"][0]
        assert not overlap(legend, title), f"the legend {legend} sits on the x axis title {title}"
        assert inside(legend, chart["figure"]), "the legend runs off the figure"
    # One colour per run (loss: 4 runs x train/validation, each also raw), the same on both charts.
    loss, accuracy = (set(c["colours"]) for c in curves)
    assert loss == accuracy and len(loss) == 4
    # Five axes (four parameters and the loss), each with its title and its two ends' values.
    parallel = next(c for c in charts if not c["xtitle"])
    labels = parallel["labels"]
    assert len(labels) == 5 * 3
    assert not [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:] if overlap(a, b)], "labels collide"
    assert all(inside(lab, parallel["figure"]) for lab in labels), "a label is cut off"
    assert not overlap(parallel["legend"][0], [min(b[0] for b in labels), min(b[1] for b in labels),
                                               max(b[2] for b in labels), max(b[3] for b in labels)])
    page.close()

