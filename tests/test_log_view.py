"""The job page's Logs tab as daily users expect it (issue 15): a received time per line (a line's own time kept),
search across ranks with rank and line number, a link to a line, the merged view of all ranks by default on a
multi-node job, and warnings, errors and tracebacks coloured, with the log's own text never becoming markup.
Also the same search from the REST API."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from services.backends.k8s_logs import PodLogArchive
from services.backends.kubernetes import KubernetesBackend
from services.backends.local import LocalBackend
from services.log_times import RECORDER
from tests.conftest import create_token, run_to_end, wait_until
from tests.test_pages import APP


@pytest.fixture
def app(portal) -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).run()


def open_logs(at: AppTest, job_id: int, **params: object) -> AppTest:
    at.query_params["id"] = str(job_id)
    at.query_params["tab"] = "Logs"
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.switch_page("pages/job.py").run()
    assert not at.exception, at.exception
    return at


def rows(html_body: str) -> list[dict[str, str]]:
    """Each drawn line: its classes, number, link, time, rank and text (as the HTML holds it)."""
    out = []
    for m in re.finditer(r'<div(?: class="([^"]*)")?><a class="n" href="([^"]*)">(\d+)</a>'
                         r'(?:<span class="t">([^<]*)</span>)?(?:<span class="r">r(\d+)</span>)?(.*?)</div>',
                         html_body):
        out.append({"class": m.group(1) or "", "href": m.group(2).replace("&amp;", "&"), "line": m.group(3),
                    "time": (m.group(4) or "").strip(), "rank": m.group(5) or "", "text": m.group(6)})
    return out


def panes(at: AppTest) -> list[list[dict[str, str]]]:
    return [rows(h.proto.body) for h in at.get("html")]


def quiet_job(portal, user, workspace_script) -> int:
    """A finished job whose log the test then writes (as the backend's archive would grow)."""
    job_id = portal.jobs.submit(user, {"name": "quiet", "script": workspace_script("quiet.py", "pass\n")})
    run_to_end(portal, user, job_id)
    return job_id


def append(path, text: str, at: float) -> None:
    """Lines arriving at the portal at `at` (what the sync loop's tick notes)."""
    with open(path, "a") as fh:
        fh.write(text)
    RECORDER.record(path, now=at, force=True)


def hms(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def test_each_line_shows_when_the_portal_received_it_unless_it_printed_its_own(app, portal, user, workspace_script):
    script = workspace_script("slow.py", "import time\nprint('first', flush=True)\ntime.sleep(3)\n"
                                         "print('2026-01-02 03:04:05 INFO second, with its own time', flush=True)\n"
                                         "print('third', flush=True)\n")
    job_id = portal.jobs.submit(user, {"name": "slow", "script": script})
    t0 = time.time()

    def ended() -> bool:
        portal.sync.tick()
        return not portal.jobs.get(user, job_id).is_active

    wait_until(ended, timeout=30, interval=0.2)
    t1 = time.time()
    lines = portal.jobs.log_page(job_id).lines
    first, own, third = lines
    assert first.text == "first"
    assert t0 - 1 <= first.received <= third.received <= t1
    assert third.received - first.received >= 2, "lines 3 s apart arrived in different ticks"
    assert own.received is None, "a line with a time of its own keeps it"
    drawn = panes(open_logs(app, job_id))[0]
    assert [(r["line"], r["time"]) for r in drawn] == [("1", hms(first.received)), ("2", ""),
                                                      ("3", hms(third.received))]
    assert "2026-01-02 03:04:05 INFO second" in drawn[1]["text"]
    assert any("when the portal received each line" in c.value for c in app.caption)


def test_search_shows_hits_with_line_numbers_and_links_and_says_how_many_more(app, portal, user, workspace_script):
    job_id = quiet_job(portal, user, workspace_script)
    log = portal.jobs.log_file(job_id)
    body = "".join(f"step {i} loss=0.{i:04d}\n" if i % 1000 else f"step {i} checkpoint saved\n"
                   for i in range(1, 5001))
    append(log, body, time.time())
    at = open_logs(app, job_id)
    at.text_input(key="log_search").input("CHECKPOINT saved").run()
    hits = panes(at)[0]
    assert [h["line"] for h in hits] == ["1000", "2000", "3000", "4000", "5000"]
    assert hits[0]["href"] == f"job?id={job_id}&tab=Logs&line=1000"
    assert "<mark>checkpoint saved</mark>" in hits[0]["text"]
    assert any(c.value.startswith("5 matching lines") for c in at.caption)
    # More than the page shows: said, not silently cut.
    at.text_input(key="log_search").input("loss=").run()
    assert len(panes(at)[0]) == 200
    assert any("4,995 matching lines; the first 200 below, 4,795 more" in c.value for c in at.caption)
    at.text_input(key="log_search").input("no such words").run()
    assert any("No line contains" in c.value and "5,000 lines searched" in c.value for c in at.caption)


def test_a_link_to_a_line_opens_it_highlighted_with_context(app, portal, user, workspace_script):
    job_id = quiet_job(portal, user, workspace_script)
    log = portal.jobs.log_file(job_id)
    for part in range(10):  # many arrivals: the index, not a count from the start, finds the line
        append(log, "".join(f"line {n}\n" for n in range(part * 10_000 + 1, part * 10_000 + 10_001)), 1e9 + part)
    at = open_logs(app, job_id, line=54_321)
    shown = panes(at)[-1]
    assert [r["line"] for r in shown] == [str(n) for n in range(54_301, 54_342)]
    marked = [r for r in shown if "hl" in r["class"].split()]
    assert [(r["line"], r["text"]) for r in marked] == [("54321", "line 54321")]
    assert any("Line 54,321 of the log, with 20 lines either side" in c.value for c in at.caption)
    at.button(key="log_back").click().run()
    assert "line" not in at.query_params
    assert panes(at)[-1][-1]["line"] == "100000", "back on the live tail"
    at = open_logs(AppTest.from_file(APP, default_timeout=30).run(), job_id, line=100_001)
    assert any("Line 100,001 is past the end of the log: it has 100,000 lines" in w.value for w in at.warning)
    for bad, sentence in (("line=abc", "“abc” in the link is not a line number"),
                          ("line=0", "“0” in the link is not a line number"),
                          ("rank=7", "This job has no node 7: it ran on one node.")):
        name, value = bad.split("=")
        at = open_logs(AppTest.from_file(APP, default_timeout=30).run(), job_id, **{name: value})
        assert any(sentence in w.value for w in at.warning), [w.value for w in at.warning]
        assert panes(at)[-1][-1]["line"] == "100000", "the log's end, as without the link"


@pytest.fixture
def two_ranks(monkeypatch):
    """The local backend with the Kubernetes archive's layout: job.log for node 0, job.rank-N.log for node N."""
    monkeypatch.setattr(LocalBackend, "log_ranks", PodLogArchive.log_ranks)
    monkeypatch.setattr(LocalBackend, "log_path", KubernetesBackend.log_path)


def test_a_multi_node_job_opens_on_every_rank_merged_by_received_time(two_ranks, app, portal, user,
                                                                       workspace_script):
    job_id = quiet_job(portal, user, workspace_script)
    r0, r1 = portal.jobs.backend.log_path(job_id, 0), portal.jobs.backend.log_path(job_id, 1)
    append(r0, "r0 starts\n", 1_000.0)
    append(r1, "r1 starts\nr1 warming up\n", 1_001.0)
    append(r0, "r0 step 1\n", 1_002.0)
    append(r1, "RuntimeError: NCCL timeout on r1\n", 1_003.0)
    at = open_logs(app, job_id)
    assert at.selectbox(key="log_rank").value == -1
    assert at.selectbox(key="log_rank").options == ["All ranks (merged)", "node 0", "node 1"]
    merged = panes(at)[0]
    assert [(r["rank"], r["line"], r["text"]) for r in merged] == [
        ("0", "1", "r0 starts"), ("1", "1", "r1 starts"), ("1", "2", "r1 warming up"), ("0", "2", "r0 step 1"),
        ("1", "3", "RuntimeError: NCCL timeout on r1")]
    assert merged[4]["href"] == f"job?id={job_id}&tab=Logs&line=3&rank=1"
    at.selectbox(key="log_rank").select(1).run()
    assert [r["text"] for r in panes(at)[0]] == ["r1 starts", "r1 warming up", "RuntimeError: NCCL timeout on r1"]
    # Search covers every rank and says which; a hit's link opens that rank's line.
    at.text_input(key="log_search").input("starts").run()
    hits = panes(at)[0]
    assert [(h["rank"], h["line"]) for h in hits] == [("0", "1"), ("1", "1")]
    assert any("2 matching lines (node 0: 1, node 1: 1)" in c.value for c in at.caption)
    at = open_logs(AppTest.from_file(APP, default_timeout=30).run(), job_id, line=2, rank=1)
    assert at.selectbox(key="log_rank").value == 1
    assert [r["text"] for r in panes(at)[-1] if "hl" in r["class"]] == ["r1 warming up"]


def test_warnings_errors_and_tracebacks_are_coloured_and_the_log_never_becomes_markup(app, portal, user,
                                                                                      workspace_script):
    job_id = quiet_job(portal, user, workspace_script)
    append(portal.jobs.log_file(job_id), "\n".join([
        "epoch 1 ok",
        "UserWarning: the dataloader has 1 worker",
        "WARNING:root:lr is high",
        "Traceback (most recent call last):",
        '  File "train.py", line 3, in <module>',
        "    main()",
        "ValueError: shapes do not match",
        "ERROR nccl failed",
        "<img src=x onerror=alert(1)> **bold** [a](http://evil) :red[x] $x$",
        "\x1b[32mgreen\x1b[0m done",
        "[" + "0.1, " * 10_000 + "]",
    ]) + "\n", time.time())
    drawn = panes(open_logs(app, job_id))[0]
    assert [r["class"] for r in drawn] == ["", "warning", "warning", "traceback", "traceback", "traceback", "error",
                                          "error", "", "", ""]
    hostile = drawn[8]["text"]
    assert hostile == "&lt;img src=x onerror=alert(1)&gt; **bold** [a](http://evil) :red[x] $x$"
    body = app.get("html")[0].proto.body
    assert "<img" not in body and "onerror=alert(1)>" not in body
    assert drawn[9]["text"] == "green done", "terminal colour codes are dropped, not shown as garbage"
    assert drawn[10]["text"].endswith("… (45,002 more characters: the download has them)"), "a huge line is cut"


def test_retention_deletes_the_received_times_with_the_log(portal, user, workspace_script):
    job_id = quiet_job(portal, user, workspace_script)
    log = portal.jobs.log_file(job_id)
    append(log, "a line\n", time.time())
    times = log.with_name("job.log.times")
    assert times.is_file()
    from services.store.orm import Job

    with portal.jobs.session() as s:
        s.get(Job, job_id).finished_at = s.get(Job, job_id).finished_at.replace(year=2000)
    assert portal.jobs.prune_logs(days=30) == 1
    assert not log.exists() and not times.exists()


def test_the_api_finds_lines_with_rank_and_line_number(server):
    token = create_token(server.data_dir, "alice")
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth,
                   json={"name": "api-search", "script": "train_example.py", "epochs": 3,
                         "extra_args": "--seconds-per-epoch 0"})
    job_id = r.json()["id"]
    url = f"{server.url}/api/v1/jobs/{job_id}"
    wait_until(lambda: httpx.get(f"{url}/status", headers=auth).json()["finished"], timeout=60, interval=0.3)
    found = httpx.get(f"{url}/logs", params={"search": "epoch 2/", "limit": 5}, headers=auth).json()
    assert found["total"] == 1 and found["more"] == 0 and found["complete"] is True
    (hit,) = found["hits"]
    lines = httpx.get(f"{url}/logs", params={"tail": 100}, headers=auth).json()["lines"]
    assert hit["rank"] == 0 and hit["text"] == "Epoch 2/3" and lines[hit["line"] - 1] == "Epoch 2/3"
    capped = httpx.get(f"{url}/logs", params={"search": "o", "limit": 1}, headers=auth).json()
    assert len(capped["hits"]) == 1 and capped["more"] == capped["total"] - 1 > 0
    one = httpx.get(f"{url}/logs", params={"search": "epoch 2/", "rank": 0}, headers=auth).json()
    assert one["hits"] == found["hits"] and one["per_rank"] == {"0": 1}
    absent = httpx.get(f"{url}/logs", params={"search": "epoch", "rank": 3}, headers=auth)
    assert absent.status_code == 404 and "no log for node 3" in absent.json()["error"]
    bad = httpx.get(f"{url}/logs", params={"search": "  "}, headers=auth)
    assert bad.status_code == 400 and "the text to find" in bad.json()["error"]


def test_a_finished_log_without_received_times_is_numbered_from_the_cursor_not_read_whole(tmp_path, monkeypatch):
    """A log from before the received-time index: its tail is numbered from the sync loop's cursor (at the log's
    end), not by counting every newline of what may be a gigabyte before it, on every view of the Logs tab."""
    from services import log_view

    log = tmp_path / "job.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1, 200_001)))
    counted: list[int] = []
    real_count = log_view.count_newlines
    monkeypatch.setattr(log_view, "count_newlines", lambda fd, a, b: counted.append(b - a) or real_count(fd, a, b))
    page = log_view.tail(log, 10, known=(log.stat().st_size, 200_000))
    assert [ln.number for ln in page.lines] == list(range(199_991, 200_001)) and page.total == 200_000
    assert [ln.text for ln in page.lines][-1] == "line 200000"
    assert not counted, "the whole log was read to number its tail"
    # Without a cursor (another rank's log) it is still numbered right, by counting.
    assert [ln.number for ln in log_view.tail(log, 3).lines] == [199_998, 199_999, 200_000]



@pytest.mark.parametrize("end", ["\n", ""])
def test_a_last_line_longer_than_the_tail_window_is_shown_cut_not_as_no_output(tmp_path, end):
    """A script whose last print is a dumped array or JSON of a megabyte: the pane shows that line's end, numbered,
    rather than '(no output yet)' under 'last 0 of 2 lines'."""
    from services.log_view import MAX_LINE_CHARS, TAIL_BYTES, tail

    log = tmp_path / "job.log"
    log.write_text("first line\n" + "x" * (TAIL_BYTES + 1000) + "END" + end)
    page = tail(log, 500)
    assert [ln.number for ln in page.lines] == [2] and page.total == 2
    text = page.lines[0].text
    assert text.startswith("…x") and len(text) < MAX_LINE_CHARS + 100
