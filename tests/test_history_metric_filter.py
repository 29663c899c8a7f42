"""Filtering the history on final metric values (`accuracy > 0.9 and eval_loss < 0.3`), as MLflow's search does:
in the service on SQLite and PostgreSQL, through the REST API and the Python client of a real running portal,
and on the History page (its URL, the sentence beside the field, the summary strip and the export)."""

from __future__ import annotations

import csv
import html
import io
import operator

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from services.history import HistoryQuery
from services.history_metric_filter import parse_metric_filter
from services.models import Role, StatusGroup, User
from services.store.seed import seed_jobs
from tests.conftest import create_token
from tests.test_pages import APP, texts

VERA = User("vera", Role.VIEWER)
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "=": operator.eq,
       "!=": operator.ne}


def varied(portal, n: int = 300) -> None:
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, n, owner=["alice", "bob", "carol"], seed=21, varied=True)


def expected(portal, text: str, **where) -> dict[int, dict[str, float]]:
    """The jobs a filter must keep, worked out from every job's final metrics in Python."""
    from sqlalchemy import select

    from services.store.orm import Job

    conditions = parse_metric_filter(text)
    with portal.jobs.sessions.begin() as s:
        jobs = list(s.scalars(select(Job)))
    return {j.id: j.final_metrics for j in jobs
            if all(getattr(j, k) == v for k, v in where.items())
            and all(c.name in j.final_metrics and OPS[c.op](j.final_metrics[c.name], c.value) for c in conditions)}


def test_a_metric_filter_keeps_exactly_the_jobs_that_pass_it(any_portal):
    """Common and rare conditions, several at once, a range, = and !=, with other filters and any sort: the
    same jobs as a check of every job, in the sort's order, with the summary and the export of the same set."""
    varied(any_portal)
    h = any_portal.history
    cases = [
        ("accuracy > 0.6", "final_metric", "eval_loss"),     # common: probed along the eval_loss walk
        ("accuracy > 0.98", "final_metric", "eval_loss"),    # rare: read from the accuracy range
        ("accuracy >= 0.7 and eval_loss < 1.0", "cost", ""),
        ("metrics.accuracy > 0.8, final accuracy <= 0.9", "final_metric", "accuracy"),  # a range on the sort
        ("eval_loss != 0.5 and loss < 1", "id", ""),
    ]
    for text, sort, metric in cases:
        want = expected(any_portal, text)
        assert 0 < len(want) < 300, text
        q = HistoryQuery(metric_filter=text, sort=sort, metric=metric, descending=False, page_size=500)
        got = h.page(VERA, q)
        assert {j.id for j in got} == {i for i, m in want.items() if not metric or metric in m}, text
        if metric:
            values = [j.final_metrics[metric] for j in got]
            assert values == sorted(values), text
        assert h.summary(VERA, q).jobs == len(want), text
        assert [r["id"] for r in h.rows(VERA, q)] == [j.id for j in got], text
    # Equality with a value the store holds; with other filters; paging along the walk.
    value = next(iter(expected(any_portal, "accuracy > 0").values()))["accuracy"]
    assert {j.final_metrics["accuracy"] for j in h.page(VERA, HistoryQuery(metric_filter=f"accuracy = {value}"))} == {
        value}
    q = HistoryQuery(metric_filter="accuracy > 0.7", owner="bob", status=[StatusGroup.SUCCEEDED],
                     sort="final_metric", metric="eval_loss", page_size=7)
    first, more = h.page_with_more(VERA, q)
    second = h.page(VERA, q.model_copy(update={"page": 2}))
    assert more and len(first) == 7 and not {j.id for j in first} & {j.id for j in second}
    assert all(j.owner == "bob" and j.final_metrics["accuracy"] > 0.7 for j in first + second)
    assert h.summary(VERA, q).jobs == len(expected(any_portal, "accuracy > 0.7", owner="bob", status="Succeeded"))
    # An export's columns are the metrics of the filtered jobs only.
    assert "eval_loss" in h.export_metric_names(VERA, HistoryQuery(metric_filter="eval_loss < 1"))
    # A metric no job reported matches nothing; so does a job without the metric, for != too.
    assert h.page(VERA, HistoryQuery(metric_filter="bleu > 0")) == []
    assert len(h.page(VERA, HistoryQuery(metric_filter="eval_loss != -1", page_size=500))) == len(
        expected(any_portal, "eval_loss > -1"))


def test_a_common_condition_walks_the_sort_and_a_rare_one_reads_its_range(any_portal):
    """At a few thousand jobs: a common condition is tested along the sort's index (no sort of the passing
    jobs), a rare one reads its range of the (name, value) index; both give what a check of every job gives."""
    from sqlalchemy import text

    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 4000, owner=["alice", "bob"], seed=22, varied=True)
    h = any_portal.history
    for condition in ("accuracy > 0.6", "accuracy > 0.985"):
        q = HistoryQuery(metric_filter=condition, sort="final_metric", metric="eval_loss", descending=False,
                         page_size=20)
        want = sorted((m["eval_loss"], i) for i, m in expected(any_portal, condition).items() if "eval_loss" in m)
        assert [(j.final_metrics["eval_loss"], j.id) for j in h.page(VERA, q)] == want[:20], condition
        if engine.dialect.name != "sqlite":
            continue
        with h.sessions.begin() as s:
            stmt = h._view(s, VERA, q, page_end=21).limit(21)
            sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r) for r in s.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        if condition == "accuracy > 0.6":
            assert "TEMP B-TREE" not in plan and "COVERING INDEX ix_job_final_metrics_probe" in plan, plan
        else:
            assert "(name=? AND value>?)" in plan, plan


@pytest.mark.parametrize("text, sentence", [
    ("accuracy => 0.9", "unknown operator '=>'"),
    ("accuracy ~ 0.9", "unknown operator '~'"),
    ("accuracy 0.9", "has no comparison"),
    ("accuracy >", "needs a number after '>'"),
    ("accuracy > high", "'high' in 'accuracy > high' is not a number"),
    ("accuracy > 0.9 or eval_loss < 0.3", "'and' only"),
    ("accuracy > 0.9 and", "a condition is missing"),
    ("accuracy > nan", "finite numbers"),
    ("> 0.9", "is not a condition"),
    ("params.lr = '0.01'", "find jobs by a parameter with the search box (search=), written key=value as submitted, "
                           "e.g. lr=0.01"),
    ("accuracy > 0.9 and param.batch_size > 32", "e.g. learning_rate=0.003"),
    ("tags.team = 'nlp'", "use the Tag filter (tag=)"),
    ("attributes.user_id = 'vera'", "use the filters beside it (status, owner"),
])
def test_a_bad_metric_filter_gets_a_sentence(text, sentence):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="metric_filter") as exc:
        HistoryQuery(metric_filter=text)
    assert sentence in str(exc.value)


def test_metric_filters_a_data_lead_writes_are_read():
    read = {t: [str(c) for c in parse_metric_filter(t)] for t in [
        "accuracy>0.9", "final eval_loss<0.3", "metrics.accuracy >= 0.9 AND metrics.`eval/loss` < 3e-1",
        "accuracy == 1, loss != 2; top5 <= 0.5 && f1 > -1", '"my metric" > 1',
        "metric.accuracy > 0.9 and metric.`eval/loss` < 0.3",  # MLflow's canonical, singular prefix
    ]}
    assert read == {
        "accuracy>0.9": ["accuracy > 0.9"], "final eval_loss<0.3": ["eval_loss < 0.3"],
        "metrics.accuracy >= 0.9 AND metrics.`eval/loss` < 3e-1": ["accuracy >= 0.9", "eval/loss < 0.3"],
        "accuracy == 1, loss != 2; top5 <= 0.5 && f1 > -1": ["accuracy = 1", "loss != 2", "top5 <= 0.5", "f1 > -1"],
        '"my metric" > 1': ["`my metric` > 1"],
        "metric.accuracy > 0.9 and metric.`eval/loss` < 0.3": ["accuracy > 0.9", "eval/loss < 0.3"]}


def test_the_metric_filter_through_the_api_and_the_client(server, tmp_path):
    from ml_job_portal import JobClient, ValidationError

    from services.config import Settings
    from services.store.db import make_engine

    engine = make_engine(Settings(data_dir=server.data_dir).sqlalchemy_url)
    seed_jobs(engine, 80, owner="alice", seed=23, varied=True)
    engine.dispose()
    token = create_token(server.data_dir, "alice")
    url = f"{server.url}/api/v1/history"
    headers = {"Authorization": f"Bearer {token}"}
    params = {"metric_filter": "accuracy > 0.8", "sort": "final_metric", "metric": "eval_loss",
              "descending": "false", "page_size": "200"}
    page = httpx.get(url, headers=headers, params=params, timeout=30).json()
    jobs = page["jobs"]
    assert jobs and all(j["final_metrics"]["accuracy"] > 0.8 for j in jobs)
    assert [j["final_metrics"]["eval_loss"] for j in jobs] == sorted(j["final_metrics"]["eval_loss"] for j in jobs)
    everyone = httpx.get(url, headers=headers, params={"page_size": 200}, timeout=30).json()["jobs"]
    passing = [j for j in everyone if j["final_metrics"].get("accuracy", 0) > 0.8]
    assert 0 < len(passing) < len(everyone)
    summary = httpx.get(f"{url}/summary", headers=headers, params={"metric_filter": "accuracy > 0.8"}).json()
    assert summary["jobs"] == len(passing)
    export = httpx.get(f"{url}/export", headers=headers, params={"metric_filter": "accuracy > 0.8", "format": "csv"})
    assert len(list(csv.DictReader(io.StringIO(export.text)))) == len(passing)
    bad = httpx.get(url, headers=headers, params={"metric_filter": "accuracy => 0.8"}, timeout=30)
    assert bad.status_code == 400 and set(bad.json()["problems"]) == {"metric_filter"}
    assert bad.json()["error"].startswith("'metric_filter': unknown operator '=>'")
    singular = httpx.get(url, headers=headers, params={**params, "metric_filter": "metric.accuracy > 0.8"}, timeout=30)
    assert singular.status_code == 200 and singular.json()["jobs"] == jobs  # MLflow's `metric.`, as `metrics.`
    param = httpx.get(url, headers=headers, params={"metric_filter": "params.lr = '0.01'"}, timeout=30)
    assert param.status_code == 400 and "search box" in param.json()["problems"]["metric_filter"]

    with JobClient(server.url, token) as client:
        got = client.history(metric_filter="accuracy > 0.8 and eval_loss < 1.5", sort="final_metric",
                             metric="accuracy", page_size=200)
        assert got and all(j.final_metrics["accuracy"] > 0.8 and j.final_metrics["eval_loss"] < 1.5 for j in got)
        assert [j.id for j in client.iter_history(metric_filter="accuracy > 0.8", page_size=7)] == sorted(
            (j["id"] for j in passing), reverse=True)
        assert client.history_summary(metric_filter="accuracy > 0.8")["jobs"] == len(passing)
        with pytest.raises(ValidationError) as exc:
            client.history(metric_filter="accuracy > 0.8 or loss < 1")
        assert exc.value.status_code == 400 and "'and' only" in exc.value.problems["metric_filter"]


def test_the_history_page_filters_on_metrics_from_its_url(portal):
    varied(portal, 120)
    want = expected(portal, "accuracy > 0.8")
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.query_params.update({"metrics": "accuracy > 0.8", "sort": "final eval_loss ↑"})
    at.run()
    assert not at.exception and at.text_input(key="h_metrics").value == "accuracy > 0.8"
    assert {m.label: m.value for m in at.metric}["Jobs"] == str(len(want))
    frame = at.dataframe[0].value
    assert set(frame["id"]) == {i for i, m in want.items() if "eval_loss" in m}
    assert list(frame["final eval_loss"]) == sorted(frame["final eval_loss"])
    # A bad expression: a sentence beside the field, no table, no traceback; fixing it shows the jobs again.
    at.text_input(key="h_metrics").input("accuracy >> 0.8").run()
    assert not at.exception and not at.dataframe
    assert [html.unescape(e.value) for e in at.error] == [  # plain(): entities, so no markdown is read into it
        "Metric filter: unknown operator '>>' in 'accuracy >> 0.8': use one of >, >=, <, <=, =, !=."]
    at.text_input(key="h_metrics").input("accuracy > 0.8 and eval_loss < 1").run()
    assert not at.error and at.query_params["metrics"] in ("accuracy > 0.8 and eval_loss < 1",
                                                          ["accuracy > 0.8 and eval_loss < 1"])
    assert {m.label: m.value for m in at.metric}["Jobs"] == str(len(expected(
        portal, "accuracy > 0.8 and eval_loss < 1")))
    # A metric none of the jobs reported says so.
    at.text_input(key="h_metrics").input("bleu > 0.3").run()
    assert "none of the jobs you may see reported a final 'bleu'" in texts(at), texts(at)
