"""What one user writes shows as plain text on another user's screen: a note, a tag, a job name, an owner name,
a failure reason and a metric name never become Markdown, HTML, an image, a link or an emoji on the pages.

AppTest hands over the Markdown source each element sends to the browser; the checks below say that what Markdown
(and Streamlit's autolinking, :emoji: and :color[] syntax) would act on is escaped, and that, unescaped, the text
reads exactly as it was typed."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from services.config import Settings
from services.models import JobStatus, User
from services.portal import build_portal
from services.store.orm import MetricPoint
from services.store.seed import seed_jobs
from tests.conftest import PortalServer, sandbox_python, sandbox_skip_reason
from tests.e2e.test_browser import browser, wait_for_app  # noqa: F401 - fixture

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
NOTE = "![x](http://tracker.example/p.png) [click](http://phish.example)\nCall **now**: <http://phish.example>"
NAME = "**bold** [here](http://phish.example)"
OWNER = "eve_ <eve@phish.example>"
REASON = "Exited with code 1: see [the fix](http://phish.example) :skull:"
METRIC = '<a href="http://phish.example">loss</a>'
# What a browser would turn into markup: a link or image, the texts' bold, a bare address, an e-mail, an emoji, HTML.
MARKUP = re.compile(r"\]\(|\*\*(bold|now)|https?://|www\.|\w@\w|:skull:|<[a-z/]")


def shown(body: str) -> str:
    """The text a reader sees: character references decoded, the invisible word joiners dropped."""
    return html.unescape(body).replace("\u2060", "")


def markdown_bodies(at: AppTest) -> list[str]:
    """Every element whose text Streamlit renders as Markdown (st.text and widgets' values are plain already)."""
    out = [e.value for kind in ("markdown", "caption", "title", "header", "subheader", "error", "info", "warning",
                                "success") for e in getattr(at, kind)]
    return out + [e.proto.label for e in at.get("page_link")]


def assert_plain(at: AppTest) -> None:
    leaks = [b for b in markdown_bodies(at) if MARKUP.search(b)]
    assert not leaks, f"rendered as Markdown: {leaks}"


@pytest.fixture
def others_job(portal, monkeypatch) -> int:
    """A finished job of another user, with a crafted name, owner, reason, tags and note; the viewer is bob."""
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="alice", status=JobStatus.SUCCEEDED)
    job_id = portal.jobs.list_jobs()[0].id
    portal.history.set_tags_note(User("alice"), job_id, ["x:skull:", "nlp"], NOTE)
    with portal.jobs.session() as s:
        s.add(MetricPoint(job_id=job_id, name=METRIC, step=0, epoch=None, value=0.5, ts=0.0, rank=None))
    portal.jobs.mark(job_id, name=NAME, owner=OWNER, reason=REASON, latest_metrics={METRIC: 0.5},
                     final_metrics={METRIC: 0.5})
    monkeypatch.setattr("pages.common.current_user", lambda *a, **k: User("bob"))
    return job_id


def open_page(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page(page)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception
    return at


def test_a_note_by_another_user_is_plain_text_on_the_job_page(portal, others_job):
    at = open_page("pages/job.py", id=str(others_job), tab="Config")  # seeded jobs have no log
    assert [t.value for t in at.text] == [f"Note: {NOTE}"]  # as typed, line break included; no Markdown element
    assert not any("tracker.example" in b or "phish" in b for b in markdown_bodies(at) if "Note" in b)
    assert_plain(at)
    assert shown(at.title[0].value) == NAME  # the name reads as typed, without bold or a link
    assert f"{OWNER}'s job: read-only." in [shown(c.value) for c in at.caption]
    assert REASON in [shown(i.value) for i in at.info]
    badges = next(m.value for m in at.markdown if ":blue-badge[" in m.value)
    assert shown(badges) == ":blue-badge[nlp] :blue-badge[x:skull:]"  # the tag's own ":skull:" is no emoji


def test_a_metric_named_with_html_is_text_in_its_chart(portal, others_job):
    at = open_page("pages/job.py", id=str(others_job), tab="Metrics")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    title = spec["layout"]["title"]["text"]
    assert "<a" not in title and html.unescape(title) == METRIC  # Plotly draws <a href> in titles as a link


def test_dashboard_and_compare_show_others_names_as_text(portal, others_job):
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="alice", status=JobStatus.SUCCEEDED, seed=3)
    at = open_page("pages/dashboard.py")
    at.toggle(key="dash_everyone").set_value(True).run()
    assert_plain(at)
    assert f"**{NAME}**" in [shown(link.proto.label) for link in at.get("page_link")]
    assert any(shown(c.value).endswith(f"#{others_job} · {OWNER}") for c in at.caption)

    other = next(j.id for j in portal.jobs.list_jobs() if j.id != others_job)
    at = open_page("pages/compare.py", ids=f"{others_job},{other}")
    assert_plain(at)
    assert f"**{NAME}**" in [shown(link.proto.label) for link in at.get("page_link")]
    titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]
    assert html.escape(METRIC, quote=False) in titles and METRIC not in titles



@pytest.mark.browser
@pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
def test_in_a_browser_the_note_and_name_load_no_image_and_show_no_link(browser, open_tmp_path):  # noqa: F811
    """What the reader's browser does with it: no request for the tracking image, no link to click."""
    data = open_tmp_path / "portal-data"
    p = build_portal(Settings(data_dir=data, backend="local"))
    try:
        seed_jobs(p.jobs.sessions.kw["bind"], 1, owner="alice", status=JobStatus.SUCCEEDED)
        job_id = p.jobs.list_jobs()[0].id
        p.history.set_tags_note(User("alice"), job_id, ["nlp"], NOTE)
        p.jobs.mark(job_id, name=NAME, owner=OWNER, reason=REASON)
    finally:
        p.close()
    # Bob must be someone else than the job's owner: proxy mode, which wants job accounts the jobs could use.
    server = PortalServer(data, env={"PORTAL_AUTH_MODE": "proxy", "PORTAL_PYTHON_EXECUTABLE": sandbox_python()}).start()
    ctx = browser.new_context(extra_http_headers={"X-Forwarded-User": "bob"})
    try:
        page = ctx.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        page.goto(f"{server.url}/job?id={job_id}&tab=Config")
        wait_for_app(page)
        main = page.get_by_test_id("stMain")
        expect(main.get_by_text("Note: ![x](http://tracker.example/p.png)")).to_be_visible(timeout=30_000)
        assert shown(main.locator("h1").inner_text()) == NAME  # looks as typed (a word joiner is invisible)
        hrefs = [a.get_attribute("href") or "" for a in main.locator("a").all()]
        assert not [h for h in hrefs if "phish" in h or "tracker" in h], hrefs
        assert main.locator("img").count() == 0 and main.locator("strong").count() == 0
        assert not [u for u in asked if "tracker.example" in u]
    finally:
        ctx.close()
        server.stop()
