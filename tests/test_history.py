"""Experiment history for data leads: filters, sorts, the summary strip, tags and notes, the URL as the view,
and the CSV export — on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import date

import httpx
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from services.auth import sign_link
from services.config import Settings
from services.history import HistoryQuery
from services.models import JobStatus, NotFound, Role, StatusGroup, User, ValidationProblem
from services.store.seed import seed_jobs
from tests.conftest import PortalServer
from tests.test_pages import APP, texts

ALICE, BOB, VERA = User("alice"), User("bob"), User("vera", Role.VIEWER)


def seeded(portal) -> None:
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 30, owner="alice", status=JobStatus.SUCCEEDED, seed=1)
    seed_jobs(engine, 10, owner="bob", status=JobStatus.FAILED, seed=2)


def test_filters_sorts_and_summary(any_portal):
    seeded(any_portal)
    h = any_portal.history
    everything = h.summary(VERA, HistoryQuery(page_size=100))
    assert everything.jobs == 40 and everything.succeeded == 30
    assert everything.success_rate == 0.75 and everything.cost == pytest.approx(40 * 1.45)
    assert h.summary(VERA, HistoryQuery(owner="bob")).jobs == 10
    assert h.summary(VERA, HistoryQuery(status=[StatusGroup.FAILED])).jobs == 10
    by_loss = h.page(VERA, HistoryQuery(sort="final_loss", descending=False, page_size=40))
    losses = [j.final_metrics["loss"] for j in by_loss]
    assert losses == sorted(losses)
    by_batch = h.page(VERA, HistoryQuery(sort="batch_size", descending=True, page_size=40))
    assert [j.request["batch_size"] for j in by_batch] == sorted((j.request["batch_size"] for j in by_batch),
                                                                 reverse=True)
    # A parameter value is searchable, every word must match.
    lr = h.page(VERA, HistoryQuery(search="learning_rate=0.003", page_size=100))
    assert lr and all(j.request["learning_rate"] == 0.003 for j in lr)
    assert h.summary(VERA, HistoryQuery(search="bob learning_rate=0.003", page_size=100)).jobs == len(
        [j for j in lr if j.owner == "bob"])
    # Paging.
    p1 = h.page(VERA, HistoryQuery(page=1, page_size=15))
    p3 = h.page(VERA, HistoryQuery(page=3, page_size=15))
    assert len(p1) == 15 and len(p3) == 10 and not {j.id for j in p1} & {j.id for j in p3}
    assert h.summary(VERA, HistoryQuery(date_from=date(2000, 1, 1), date_to=date(2000, 1, 2))).jobs == 0


def totals_match_the_jobs(h, views) -> None:
    for q in views:
        fast, counted = h.summary(VERA, q), h._summary_of_jobs(VERA, q)
        assert (fast.jobs, fast.succeeded) == (counted.jobs, counted.succeeded), q
        assert fast.gpu_hours == pytest.approx(counted.gpu_hours) and fast.cost == pytest.approx(counted.cost), q


def test_summary_totals_follow_every_change_to_the_jobs(any_portal):
    """The strip's running totals (kept by database triggers) equal a count over the jobs after inserts, state
    changes, a finished run, a retagged template and deletes."""
    from sqlalchemy import delete, update

    from services.store.orm import Job
    from tests.test_store_databases import finished

    seeded(any_portal)
    h = any_portal.history
    views = [HistoryQuery(), HistoryQuery(owner="bob"), HistoryQuery(status=[StatusGroup.SUCCEEDED]),
             HistoryQuery(status=[StatusGroup.ACTIVE, StatusGroup.FAILED]), HistoryQuery(gpus_min=1),
             HistoryQuery(gpus_max=0), HistoryQuery(template="resnet-sweep"), HistoryQuery(owner="carol")]
    totals_match_the_jobs(h, views)
    carol = User("carol")
    done = finished(any_portal, carol, "from-template", template="resnet-sweep")
    assert done.status is JobStatus.SUCCEEDED
    assert h.summary(VERA, HistoryQuery(template="resnet-sweep")).jobs == 1
    assert h.templates_used(VERA) == ["resnet-sweep"]
    any_portal.settings.show_others_jobs = False
    try:
        assert h.templates_used(User("bob")) == [] and h.templates_used(carol) == ["resnet-sweep"]
    finally:
        any_portal.settings.show_others_jobs = True
    assert [j.id for j in h.page(VERA, HistoryQuery(template="resnet-sweep"))] == [done.id]
    totals_match_the_jobs(h, views)
    with any_portal.jobs.sessions.begin() as s:
        s.execute(update(Job).where(Job.owner == "bob", Job.id % 2 == 0).values(
            status="Running", status_group="Running", gpus=4, cost=None, gpu_hours=None))
        s.execute(update(Job).where(Job.owner == "alice", Job.id % 3 == 0).values(template="resnet-sweep"))
    totals_match_the_jobs(h, views)
    with any_portal.jobs.sessions.begin() as s:
        s.execute(delete(Job).where(Job.owner == "alice", Job.id % 5 == 0))
    any_portal.jobs.delete(carol, done.id)
    totals_match_the_jobs(h, views)
    assert h.summary(VERA, HistoryQuery(owner="carol")).jobs == 0
    # Counting them all again (after a bulk load) gives the same totals.
    from services.store.totals import rebuild_job_totals

    before = [h.summary(VERA, q) for q in views]
    with any_portal.jobs.sessions.begin() as s:
        rebuild_job_totals(s.connection())
    assert [h.summary(VERA, q).jobs for q in views] == [b.jobs for b in before]
    totals_match_the_jobs(h, views)


def test_common_search_terms_and_parameter_sorts_walk_an_index(any_portal):
    """A term in thousands of jobs is checked along the sort order, a rare one looked up in the search
    index; both give the same rows. Sorting by a parameter walks its expression index."""
    from sqlalchemy import text

    from services.store import search
    from services.store.orm import request_number

    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, search.COMMON_AFTER + 100, owner="alice", seed=3)
    seed_jobs(engine, 20, owner="bob", seed=4)
    h = any_portal.history
    if engine.dialect.name == "sqlite":
        with any_portal.jobs.sessions() as s:
            assert "LIKE" in str(search.term_filter(s, "alice")) and "IN" in str(search.term_filter(s, "bob"))
            # The strip of a common term reads the narrow search index, not every job's row.
            plan = " ".join(str(r) for r in s.execute(text(
                "EXPLAIN QUERY PLAN SELECT count(*), sum(CASE WHEN status = 'Succeeded' THEN 1 ELSE 0 END), "
                "sum(gpu_hours), sum(cost) FROM jobs WHERE search_text LIKE '%alice%'")))
            assert "COVERING INDEX ix_jobs_search_scan" in plan, plan
    common = h.page(VERA, HistoryQuery(search="alice", sort="final_loss", descending=False, page_size=500))
    assert len(common) == 500 and {j.owner for j in common} == {"alice"}
    losses = [j.final_metrics["loss"] for j in common]
    assert losses == sorted(losses) and losses[0] == min(
        j.final_metrics["loss"] for j in h.page(VERA, HistoryQuery(owner="alice", sort="final_loss",
                                                                     descending=False, page_size=10)))
    assert h.summary(VERA, HistoryQuery(search="alice")).jobs == search.COMMON_AFTER + 100
    assert h.summary(VERA, HistoryQuery(search="bob")).jobs == 20
    # Both kinds of term together: every word must match.
    both = h.summary(VERA, HistoryQuery(search="alice learning_rate=0.003"))
    assert 0 < both.jobs < search.COMMON_AFTER
    by_lr = h.page(VERA, HistoryQuery(sort="learning_rate", descending=True, page_size=300))
    assert [j.request["learning_rate"] for j in by_lr] == sorted((j.request["learning_rate"] for j in by_lr),
                                                                 reverse=True)
    sql = f"SELECT id FROM jobs ORDER BY {request_number(engine.dialect.name, 'learning_rate')} LIMIT 5"
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(str(r) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        else:
            conn.execute(text("SET enable_seqscan = off"))
            plan = " ".join(str(r) for r in conn.execute(text(f"EXPLAIN {sql}")))
    assert "ix_jobs_param_learning_rate" in plan, plan


def test_sorted_pages_walk_the_sort_index_only_when_the_counts_say_so(any_portal):
    """With owner or template filters a sorted page may walk the sort's index (filters tested there) or
    let the database pick the owner's index: the running totals decide, and both give the same rows."""
    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 3000, owner=[f"user-{i}" for i in range(3)], varied=True, seed=5)
    seed_jobs(engine, 5, owner="tiny", varied=True, seed=6)
    h = any_portal.history
    for q in (HistoryQuery(owner="user-1", template="llm-lora", sort="gpu_hours"),
              HistoryQuery(owner="user-2", sort="final_loss", descending=False, page=3),
              HistoryQuery(template="resnet-sweep", sort="learning_rate", gpus_min=2),
              HistoryQuery(owner="tiny", sort="cost")):
        with any_portal.jobs.sessions() as s:
            walked = [j.id for j in s.scalars(h._sorted(h._filtered(s, VERA, q, True), q).limit(50).offset(
                (q.page - 1) * 50))]
            picked = [j.id for j in s.scalars(h._sorted(h._filtered(s, VERA, q, False), q).limit(50).offset(
                (q.page - 1) * 50))]
        assert walked == picked == [j.id for j in h.page(VERA, q)], q
    if engine.dialect.name != "sqlite":
        return
    with any_portal.jobs.sessions() as s:
        assert h._walk_sort_index(s, VERA, HistoryQuery(owner="user-1", sort="gpu_hours"))
        assert not h._walk_sort_index(s, VERA, HistoryQuery(owner="tiny", sort="gpu_hours"))
        assert not h._walk_sort_index(s, VERA, HistoryQuery(owner="user-1", sort="id"))


def test_a_text_search_summary_is_kept_until_the_jobs_change(any_portal):
    seeded(any_portal)
    h = any_portal.history
    counted = []
    real = h._summary_of_jobs
    h._summary_of_jobs = lambda user, q: counted.append(q) or real(user, q)
    q = HistoryQuery(search="alice")
    first = h.summary(VERA, q)
    assert first.jobs == 30
    # Paging or sorting the same search reuses the answer...
    assert h.summary(VERA, q.model_copy(update={"page": 2, "sort": "cost"})) == first and len(counted) == 1
    # ...until a job is added, finishes or goes, or a tag or note changes.
    seed_jobs(any_portal.jobs.sessions.kw["bind"], 5, owner="alice", status=JobStatus.RUNNING, seed=11)
    assert h.summary(VERA, q).jobs == 35 and len(counted) == 2
    # A job that changes section without changing the grand totals (no cost) still counts again.
    from sqlalchemy import update

    from services.store.orm import Job

    failed = HistoryQuery(search="alice", status=[StatusGroup.FAILED])
    for n in (1, 2):
        with any_portal.jobs.sessions.begin() as s:
            job = s.scalars(select(Job).where(Job.owner == "alice", Job.status_group == "Running").limit(1)).one()
            s.execute(update(Job).where(Job.id == job.id).values(status="Failed", status_group="Failed"))
        assert h.summary(VERA, failed).jobs == n
    assert h.summary(VERA, HistoryQuery(search="needle")).jobs == 0
    job_id = h.page(ALICE, HistoryQuery(owner="alice", page_size=1))[0].id
    h.set_tags_note(ALICE, job_id, ["needle"], "")
    assert h.summary(VERA, HistoryQuery(search="needle")).jobs == 1


def test_history_shows_only_what_a_user_may_see(any_portal):
    seeded(any_portal)
    any_portal.settings.show_others_jobs = False
    try:
        assert any_portal.history.summary(BOB, HistoryQuery()).jobs == 10
        assert any_portal.history.summary(VERA, HistoryQuery()).jobs == 40
    finally:
        any_portal.settings.show_others_jobs = True


def test_tags_and_notes_belong_to_the_owner_and_are_searchable(any_portal):
    seeded(any_portal)
    job_id = any_portal.history.page(ALICE, HistoryQuery(owner="alice", page_size=1))[0].id
    view = any_portal.history.set_tags_note(ALICE, job_id, ["Baseline", "lora", "lora"], "first try with LoRA")
    assert view.tags == ["baseline", "lora"] and view.note == "first try with LoRA"
    with pytest.raises(NotFound):
        any_portal.history.set_tags_note(BOB, job_id, ["mine"], "")
    with pytest.raises(ValidationProblem) as bad:
        any_portal.history.set_tags_note(ALICE, job_id, ["no spaces allowed"], "")
    assert "tags" in bad.value.problems
    assert [j.id for j in any_portal.history.page(VERA, HistoryQuery(tag="lora"))] == [job_id]
    assert [j.id for j in any_portal.history.page(VERA, HistoryQuery(search="first try"))] == [job_id]
    admin = User("ada", Role.ADMIN)
    assert any_portal.history.set_tags_note(admin, job_id, [], "").tags == []


def test_the_history_page_is_its_url(portal):
    seeded(portal)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.query_params.update({"q": "alice", "status": "Completed", "sort": "final loss ↑"})
    at.run()
    assert not at.exception
    body = texts(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Jobs"] == "30" and metrics["Success rate"] == "100%"
    frame = at.dataframe[0].value
    assert set(frame["owner"]) == {"alice"} and list(frame["final loss"]) == sorted(frame["final loss"])
    assert at.text_input(key="h_q").value == "alice" and at.multiselect(key="h_status").value == ["Completed"]
    assert any("are not listed" in c.value for c in at.caption) and at.button(key="h_next").disabled
    # Changing a filter rewrites the URL.
    at.text_input(key="h_q").input("bob").run()
    assert at.query_params["q"] in ("bob", ["bob"]) and at.query_params["status"] in ("Completed", ["Completed"])
    assert "No jobs match these filters." in texts(at), body


def test_paging_through_the_history(portal):
    seeded(portal)
    seed_jobs(portal.jobs.sessions.kw["bind"], 30, owner="carol", seed=7)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.run()
    assert not at.exception and len(at.dataframe[0].value) == 50
    assert any("Page 1 of 2" in c.value for c in at.caption) and not at.button(key="h_next").disabled
    at.button(key="h_next").click().run()
    assert at.query_params["page"] in ("2", ["2"]) and len(at.dataframe[0].value) == 20
    assert any("Page 2 of 2" in c.value for c in at.caption) and at.button(key="h_next").disabled


def test_the_template_filter_is_in_the_url_and_the_export(portal):
    from services.store.orm import Job

    seeded(portal)
    portal.templates.save(ALICE, "resnet-sweep", {"script": "train_example.py", "epochs": 3})
    with portal.jobs.sessions.begin() as s:
        for job in s.query(Job).filter(Job.owner == "alice").limit(4):
            job.template = "resnet-sweep"
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.query_params.update({"template": "resnet-sweep"})
    at.run()
    assert not at.exception and at.selectbox(key="h_template").value == "resnet-sweep"
    assert {m.label: m.value for m in at.metric}["Jobs"] == "4" and len(at.dataframe[0].value) == 4
    # A page past the end says so instead of an empty table.
    past = AppTest.from_file(APP, default_timeout=30)
    past.switch_page("pages/history.py")
    past.query_params.update({"page": "9"})
    past.run()
    assert not past.exception and "This page is past the end of the list." in texts(past)


def test_csv_export_streams_the_filtered_view(tmp_path):
    server = PortalServer(tmp_path / "portal-data").start()
    try:
        from services.portal import build_portal

        p = build_portal(Settings(data_dir=server.data_dir, backend="local"))
        try:
            seeded(p)
            job_id = p.history.page(ALICE, HistoryQuery(owner="alice", page_size=1))[0].id
            p.history.set_tags_note(ALICE, job_id, ["x"], "=HYPERLINK(\"http://evil\")")
        finally:
            p.close()
        view = HistoryQuery(owner="alice", sort="final_loss", descending=False)
        token = sign_link(Settings(data_dir=server.data_dir), VERA, kind="history", query=view.model_dump(mode="json"))
        r = httpx.get(f"{server.url}/download/{token}", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 30 and {row["owner"] for row in rows} == {"alice"}
        assert [float(row["final_loss"]) for row in rows] == sorted(float(row["final_loss"]) for row in rows)
        assert {"learning_rate", "batch_size", "final_loss", "final_loss"} <= set(rows[0])
        assert not [row for row in rows if row["note"].startswith("=")], "no formula reaches a spreadsheet"
        # The same view as Parquet: typed columns, the same rows in the same order.
        import pyarrow.parquet as pq

        token = sign_link(Settings(data_dir=server.data_dir), VERA, kind="history", format="parquet",
                          query=view.model_dump(mode="json"))
        r = httpx.get(f"{server.url}/download/{token}", timeout=30)
        assert r.status_code == 200 and r.headers["content-disposition"].endswith('.parquet"')
        table = pq.read_table(io.BytesIO(r.content))
        assert table.column("id").to_pylist() == [int(row["id"]) for row in rows]
        assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
        assert table.column("final_loss").to_pylist() == [float(row["final_loss"]) for row in rows]
        # Bob (a researcher, others hidden) exporting gets only what he may see.
        hidden = Settings(data_dir=server.data_dir)
        bob = sign_link(hidden, BOB, kind="history", query=HistoryQuery(owner="alice").model_dump(mode="json"))
        assert len(list(csv.DictReader(io.StringIO(httpx.get(f"{server.url}/download/{bob}").text)))) == 30
    finally:
        server.stop()


def final_metric_rows(portal) -> set[tuple]:
    from services.store.orm import JobFinalMetric

    with portal.jobs.sessions.begin() as s:
        return {(r.job_id, r.name, r.value, r.owner, r.status_group, r.gpus, r.template)
                for r in s.scalars(select(JobFinalMetric))}


def final_metrics_of_the_jobs(portal) -> set[tuple]:
    """What the rows must be: every finite number in each job's final_metrics, with the job's filter columns."""
    import math

    from services.store.orm import Job

    with portal.jobs.sessions.begin() as s:
        return {(j.id, k, float(v), j.owner, j.status_group, j.gpus, j.template) for j in s.scalars(select(Job))
                for k, v in (j.final_metrics or {}).items() if isinstance(v, int | float) and math.isfinite(v)}


def test_the_history_sorts_by_any_final_metric(any_portal):
    """Accuracy, eval_loss...: any final metric a run reported is a sort, walked in the metric's order, and
    lists only the jobs that reported it; the rows behind it follow every change to a job's results."""
    import math

    from pydantic import ValidationError
    from sqlalchemy import delete, update

    from services.store.final_metrics import rebuild_final_metrics
    from services.store.orm import Job
    from tests.test_store_databases import finished

    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 40, owner="alice", seed=5, varied=True)
    seed_jobs(engine, 15, owner="bob", seed=6, varied=True)
    run = finished(any_portal, ALICE, "real-run", epochs=1)  # the example script reports loss and accuracy
    assert run.status is JobStatus.SUCCEEDED and "accuracy" in run.final_metrics
    h = any_portal.history
    assert final_metric_rows(any_portal) == final_metrics_of_the_jobs(any_portal)
    assert {"accuracy", "eval_loss"} <= set(h.final_metric_names(VERA)) and "loss" not in h.final_metric_names(VERA)

    with_accuracy = {j for j, name, *_ in final_metrics_of_the_jobs(any_portal) if name == "accuracy"}
    best = h.page(VERA, HistoryQuery(sort="final_metric", metric="accuracy", page_size=500))
    values = [j.final_metrics["accuracy"] for j in best]
    assert {j.id for j in best} == with_accuracy and run.id in with_accuracy
    assert values == sorted(values, reverse=True)
    # Filters, ascending order and paging along the metric; the export is the same view.
    q = HistoryQuery(sort="final_metric", metric="eval_loss", descending=False, owner="alice", page_size=4)
    first, more = h.page_with_more(VERA, q)
    second = h.page(VERA, q.model_copy(update={"page": 2}))
    walked = [j.final_metrics["eval_loss"] for j in first + second]
    assert more and len(first) == 4 and walked == sorted(walked) and {j.owner for j in first + second} == {"alice"}
    assert [r["id"] for r in h.rows(VERA, q)][:8] == [j.id for j in first + second]
    assert all("eval_loss" in j.final_metrics for j in h.page(VERA, q.model_copy(update={"page_size": 500})))
    with pytest.raises(ValidationError, match="needs the metric's name"):
        HistoryQuery(sort="final_metric", metric=" ")
    # Pasted text keeps its no-break spaces; a control character (PostgreSQL refuses NUL) is refused.
    assert HistoryQuery(search="lora\xa0v2").search == "lora\xa0v2"
    with pytest.raises(ValidationError, match="control characters"):
        HistoryQuery(search="lora\x00")

    # An export has a column for every final metric of its view, also one that a single, late job reported.
    from services.history import csv_chunks

    with any_portal.jobs.sessions.begin() as s:
        last = s.scalars(select(Job).where(Job.owner == "bob").order_by(Job.id.desc())).first()
        last.final_metrics = {**last.final_metrics, **{f"zz_metric_{i:03d}": float(i) for i in range(250)}}
    view = HistoryQuery(owner="bob", sort="id", descending=False)
    names = h.export_metric_names(VERA, view)
    assert "zz_metric_249" in names and "accuracy" in names and len(names) > 250
    header = next(csv_chunks(h.rows(VERA, view), names)).splitlines()[0].split(",")
    assert "final_zz_metric_249" in header and "final_eval_loss" in header
    assert "zz_metric_000" not in h.export_metric_names(VERA, HistoryQuery(owner="alice"))

    # A viewer who sees only their own jobs is offered only the metrics those reported.
    with any_portal.jobs.sessions.begin() as s:
        s.execute(update(Job).where(Job.owner == "bob").values(final_metrics={"f1": 0.5}))
    any_portal.settings.show_others_jobs = False
    try:
        h._metric_names.clear()
        assert h.final_metric_names(BOB) == ["f1"] and "f1" not in h.final_metric_names(ALICE)
    finally:
        any_portal.settings.show_others_jobs = True
    # Changed, non-finite, deleted: the rows follow in the same transaction.
    with any_portal.jobs.sessions.begin() as s:
        job = s.get(Job, run.id)
        job.final_metrics = {"accuracy": math.nan, "top5": 0.97, "loss": math.inf}
    assert {(n, v) for j, n, v, *_ in final_metric_rows(any_portal) if j == run.id} == {("top5", 0.97)}
    # A job's owner, status, GPUs or template changing moves its rows along (the sort tests them there).
    with any_portal.jobs.sessions.begin() as s:
        s.execute(update(Job).where(Job.owner == "alice", Job.id % 3 == 0).values(
            status="Failed", status_group="Failed", gpus=8, template="llm-lora"))
        s.execute(update(Job).where(Job.owner == "bob", Job.id % 2 == 0).values(owner="carol"))
    assert final_metric_rows(any_portal) == final_metrics_of_the_jobs(any_portal)
    moved = h.page(VERA, HistoryQuery(sort="final_metric", metric="f1", owner="carol", page_size=500))
    assert moved and {j.owner for j in moved} == {"carol"}
    failed = h.page(VERA, HistoryQuery(sort="final_metric", metric="accuracy", status=[StatusGroup.FAILED],
                                      gpus_min=8, template="llm-lora", page_size=500))
    assert failed and {j.id for j in failed} == {
        i for i, name, _, _, group, gpus, template in final_metrics_of_the_jobs(any_portal)
        if name == "accuracy" and group == "Failed" and gpus >= 8 and template == "llm-lora"}
    with any_portal.jobs.sessions.begin() as s:
        s.execute(delete(Job).where(Job.owner == "alice", Job.id % 4 == 0, Job.id != run.id))
    any_portal.jobs.delete(ALICE, run.id)
    assert final_metric_rows(any_portal) == final_metrics_of_the_jobs(any_portal)
    # Writing them all again (after a bulk load that skipped the triggers) gives the same rows.
    before = final_metric_rows(any_portal)
    with any_portal.jobs.sessions.begin() as s:
        rebuild_final_metrics(s.connection())
    assert final_metric_rows(any_portal) == before


def test_migration_0013_writes_the_final_metrics_of_existing_jobs(database_url, tmp_path):
    """A store upgraded from before 0013 gets rows for the final metrics its jobs already had."""
    from alembic import command

    from services.store.db import alembic_config, make_engine, migrate
    from services.store.orm import JobFinalMetric

    engine = make_engine(database_url)
    try:
        migrate(engine)
        seed_jobs(engine, 30, owner="alice", seed=8, varied=True)
        cfg = alembic_config(engine)
        command.downgrade(cfg, "0012")
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            rows = conn.execute(select(JobFinalMetric.name, JobFinalMetric.value)).all()
            finals = conn.exec_driver_sql("SELECT final_metrics FROM jobs").scalars().all()
    finally:
        engine.dispose()
    import json

    expected = sorted((k, float(v)) for f in finals for k, v in (json.loads(f) if isinstance(f, str) else f).items())
    assert sorted(rows) == expected and any(name == "accuracy" for name, _ in rows)


def test_the_history_page_sorts_by_a_final_metric_from_its_url(portal):
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 30, owner="alice", seed=9, varied=True)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.query_params.update({"sort": "final accuracy ↓"})
    at.run()
    assert not at.exception
    assert {"final accuracy ↓", "final accuracy ↑", "final eval_loss ↑"} <= set(at.selectbox(key="h_sort").options)
    assert at.selectbox(key="h_sort").value == "final accuracy ↓"
    frame = at.dataframe[0].value
    assert list(frame["final accuracy"]) == sorted(frame["final accuracy"], reverse=True) and len(frame) > 10
    assert any("Sorted by final accuracy" in c.value for c in at.caption)
    # A sort's address with no metric name in it is left out with a sentence.
    bad = AppTest.from_file(APP, default_timeout=30)
    bad.switch_page("pages/history.py")
    bad.query_params.update({"sort": "final   ↓"})
    bad.run()
    assert not bad.exception and any("metric" in w.value for w in bad.warning), [w.value for w in bad.warning]
    at.selectbox(key="h_sort").set_value("final eval_loss ↑").run()
    assert at.query_params["sort"] in ("final eval_loss ↑", ["final eval_loss ↑"])
    frame = at.dataframe[0].value
    assert list(frame["final eval_loss"]) == sorted(frame["final eval_loss"]) and frame["final eval_loss"].notna().all()
    # Any reported final metric can be a column, sorted by it or not.
    assert "final accuracy" in at.multiselect(key="h_cols").options
    at.multiselect(key="h_cols").select("final accuracy").run()
    frame = at.dataframe[0].value
    assert frame["final accuracy"].notna().all() and "final eval_loss" in frame.columns


def test_a_filter_the_history_cannot_take_gets_a_sentence_not_a_traceback(portal):
    seeded(portal)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.run()
    at.text_input(key="h_q").input("x" * 250).run()
    assert not at.exception
    assert any(e.value.startswith("Search: ") and "200" in e.value for e in at.error), [e.value for e in at.error]
    at.text_input(key="h_q").input("alice").run()
    assert not at.exception and not at.error and len(at.dataframe[0].value) == 30


def test_the_history_sorts_by_runtime(any_portal):
    """How long a job ran is stored when it ends (by the sync loop, from the backend's times) and is a walked
    sort; a store from before migration 0014 gets it for the jobs that had ended."""
    from alembic import command

    from services.store.db import alembic_config
    from services.store.orm import Job
    from tests.test_store_databases import finished

    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 20, owner="alice", seed=13)  # 30-minute runs, some still running
    run = finished(any_portal, ALICE, "quick-run", epochs=1)
    assert run.status is JobStatus.SUCCEEDED
    with any_portal.jobs.sessions.begin() as s:
        job = s.get(Job, run.id)
        assert job.runtime_seconds == pytest.approx((job.finished_at - job.started_at).total_seconds())
        # Runs of different lengths, as a team's history has.
        for i, other in enumerate(s.scalars(select(Job).where(Job.owner == "alice", Job.finished_at.is_not(None)))):
            other.finished_at = other.started_at + (other.finished_at - other.started_at) * (1 + i % 5)
            other.runtime_seconds = (other.finished_at - other.started_at).total_seconds()
    h = any_portal.history
    longest = h.page(VERA, HistoryQuery(sort="runtime_seconds", page_size=100))
    seconds = [j.runtime_seconds(j.finished_at) for j in longest]
    assert seconds == sorted(seconds, reverse=True) and all(not j.is_active for j in longest)
    assert h.page(VERA, HistoryQuery(sort="runtime_seconds", descending=False, page_size=1))[0].id == run.id
    assert {r["id"]: r["runtime_seconds"] for r in h.rows(VERA, HistoryQuery())}[run.id] == pytest.approx(
        seconds[-1])

    # The migration computes it for the jobs that had ended.
    cfg = alembic_config(engine)
    with any_portal.jobs.sessions.begin() as s:
        before = {j.id: j.runtime_seconds for j in s.scalars(select(Job))}
    command.downgrade(cfg, "0013")
    command.upgrade(cfg, "head")
    with any_portal.jobs.sessions.begin() as s:
        after = {j.id: j.runtime_seconds for j in s.scalars(select(Job))}
    assert after.keys() == before.keys() and sum(v is None for v in after.values()) == sum(
        v is None for v in before.values())
    assert all(after[k] == pytest.approx(v, abs=1e-3) for k, v in before.items() if v is not None)
