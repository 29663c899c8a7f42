"""History: every past job the user may see, filtered, sorted and paged, with a summary of the filtered set.
The whole view lives in the URL, so it can be shared and reopened; the CSV export is the same view."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from pages.common import JOB_PAGE, SUBMIT_PAGE, compare_link, duration, me, money, now, plain, portal
from services.auth import sign_link
from services.history import NULLABLE_SORTS, HistoryQuery
from services.history_metric_filter import parse_metric_filter
from services.jobs import validation_problems
from services.models import StatusGroup

P = portal()
USER = me()
COLUMNS = {
    "id": "id", "name": "name", "status": "status", "owner": "owner", "created": "created", "runtime": "runtime",
    "GPUs": "gpus", "GPU-hours": "gpu_hours", "cost": "cost", "final loss": "final_loss",
    "learning rate": "learning_rate", "epochs": "epochs", "batch size": "batch_size", "tags": "tags",
    "note": "note", "template": "template", "script": "script",
}
DEFAULT_COLUMNS = ["id", "name", "status", "owner", "created", "runtime", "GPUs", "cost", "final loss",
                   "learning rate", "batch size", "tags"]
SORTS = {"newest": ("id", True), "oldest": ("id", False), "final loss ↑": ("final_loss", False),
         "final loss ↓": ("final_loss", True), "cost ↓": ("cost", True), "cost ↑": ("cost", False),
         "GPU-hours ↓": ("gpu_hours", True), "runtime ↓": ("runtime_seconds", True),
         "runtime ↑": ("runtime_seconds", False), "learning rate ↑": ("learning_rate", False),
         "learning rate ↓": ("learning_rate", True), "batch size ↓": ("batch_size", True), "name": ("name", False),
         "owner": ("owner", False), "GPUs ↓": ("gpus", True)}
FIELD_LABELS = {"search": "Search", "owner": "Owner", "tag": "Tag", "template": "Template", "gpus_min": "GPUs ≥",
                "gpus_max": "GPUs ≤", "metric": "Sort by", "metric_filter": "Metric filter", "sweep": "Sweep"}
# Widths that add up to under 1,000 px (a wide page beside the sidebar on a laptop), so the default columns fit the
# table's box; a column chosen on top takes what its content needs.
TABLE_COLUMNS: dict[str, Any] = {
    "id": st.column_config.NumberColumn(width=50, format="%d"),
    "name": st.column_config.LinkColumn(width=160, display_text=r"#(.*)$", help="Opens the job"),
    "status": st.column_config.TextColumn(width=85), "owner": st.column_config.TextColumn(width=75),
    "created": st.column_config.DatetimeColumn(width=125, format="D MMM YYYY, HH:mm", timezone=st.context.timezone),
    "runtime": st.column_config.TextColumn(width=60), "GPUs": st.column_config.NumberColumn(width=50),
    "GPU-hours": st.column_config.NumberColumn(width=80, format="%.2f"),
    "cost": st.column_config.NumberColumn(width=70, format=P.settings.currency.replace("%", "%%") + "%.2f"),
    "final loss": st.column_config.NumberColumn(width=70, format="%.4g"),
    "learning rate": st.column_config.NumberColumn("lr", width=60, format="%g", help="learning rate"),
    "epochs": st.column_config.NumberColumn(width=60),
    "batch size": st.column_config.NumberColumn("bs", width=55, help="batch size"),
    "tags": st.column_config.TextColumn(width=100), "note": st.column_config.TextColumn(width="medium"),
    "template": st.column_config.TextColumn(width=110), "script": st.column_config.TextColumn(width=140),
}
# Any other final metric a run reported: "final accuracy ↓", "final eval_loss ↑".
METRIC_SORT = re.compile(r"^final (.+) ([↑↓])$")


def sort_of(label: str) -> tuple[str, bool, str] | None:
    """A sort's label -> (column, descending, final metric), or None for a label that is no sort."""
    if label in SORTS:
        return (*SORTS[label], "")
    found = METRIC_SORT.match(label)
    return ("final_metric", found.group(2) == "↓", found.group(1)) if found else None


def from_url() -> HistoryQuery:
    """The view in the URL, less its metric filter (that field takes the URL's text and says what is wrong with it
    right beside it)."""
    qp = st.query_params
    raw: dict[str, Any] = {
        "search": qp.get("q", ""), "owner": qp.get("owner", ""), "tag": qp.get("tag", ""),
        "template": qp.get("template", ""), "sweep": qp.get("sweep") or None,
        "status": [s for s in qp.get("status", "").split(",") if s],
        "date_from": qp.get("from") or None, "date_to": qp.get("to") or None,
        "gpus_min": qp.get("gmin") or None, "gpus_max": qp.get("gmax") or None,
        "page": qp.get("page") or 1, "scope": qp.get("scope") or "all",
    }
    raw["sort"], raw["descending"], raw["metric"] = sort_of(qp.get("sort", "newest")) or sort_of("newest")
    try:
        return HistoryQuery(**raw)
    except ValidationError as exc:
        st.warning("Part of this address is not a valid filter and was left out: "
                   + plain("; ".join(f"{field or 'view'}: {problem}" for field, problem in
                                     validation_problems(exc).items())))
        return HistoryQuery()


st.title("Experiment history")
query = from_url()
sort_label = st.query_params.get("sort", "newest") if query.sort == "final_metric" or st.query_params.get(
    "sort") in SORTS else "newest"
sort_labels = list(SORTS)
metric_names = P.history.final_metric_names(USER)
for name in metric_names:
    sort_labels += [f"final {name} ↓", f"final {name} ↑"]
if sort_label not in sort_labels:  # a shared link's metric that none of this user's jobs reported (yet)
    sort_labels.append(sort_label)

SCOPES = {"mine": "My jobs", "team": "My team", "all": "Everyone"}  # whose jobs (services/teams.py)
scope = st.segmented_control("Whose jobs", list(SCOPES), format_func=SCOPES.get, default=query.scope,
                             required=True, key="h_scope", label_visibility="collapsed") or "all"
with st.container(border=True):
    a, b, c = st.columns([3, 2, 2])
    search = a.text_input("Search", value=query.search, key="h_q",
                          placeholder="name, owner, tag, note or a parameter: lr=0.001, bs=64, epochs=10",
                          help="Every word must match. A parameter is name=value: `lr` (learning_rate), `bs` "
                               "(batch_size) and `epochs` match that value exactly; any other submitted parameter "
                               "matches as text (dataset_path=/data/wiki).")
    status = b.multiselect("Status", [g.value for g in StatusGroup], default=[g.value for g in query.status],
                           key="h_status")
    sort = c.selectbox("Sort by", sort_labels, index=sort_labels.index(sort_label), key="h_sort",
                       help="Final metrics other than the loss are listed as runs report them.")
    d, e, t, w, f, g, h = st.columns([2, 2, 2, 1, 2, 1, 1])
    owner = d.text_input("Owner", value=query.owner, key="h_owner")
    tag = e.text_input("Tag", value=query.tag, key="h_tag")
    # Jobs keep the name of the template they came from, also after the template is deleted.
    template_names = sorted({tp.name for tp in P.templates.list(USER)} | set(P.history.templates_used(USER))
                            | ({query.template} if query.template else set()))
    template = t.selectbox("Template", template_names, index=template_names.index(query.template)
                           if query.template else None, placeholder="any", key="h_template") or ""
    # Your sweeps by name, and the one a shared link names (someone else's you may see, or "#N" if none).
    sweeps = P.sweeps.names(USER)
    if query.sweep and query.sweep not in sweeps:
        sweeps[query.sweep] = P.sweeps.names(USER, [query.sweep]).get(query.sweep, "")
    sweep = w.selectbox("Sweep", list(sweeps), index=list(sweeps).index(query.sweep) if query.sweep else None,
                        format_func=lambda i: f"{sweeps[i]} (#{i})" if sweeps[i] else f"#{i}", placeholder="any",
                        key="h_sweep", help="Only the trials of this sweep.")
    dates = f.date_input("Created between", value=(query.date_from, query.date_to) if query.date_from and
                         query.date_to else (), key="h_dates")
    gmin = g.number_input("GPUs ≥", min_value=0, value=query.gpus_min, key="h_gmin")
    gmax = h.number_input("GPUs ≤", min_value=0, value=query.gpus_max, key="h_gmax")
    k, c2 = st.columns([3, 4])
    url_metrics = st.query_params.get("metrics", "")
    metric_filter = k.text_input("Metric filter", value=url_metrics, key="h_metrics", max_chars=500,
                                 placeholder="e.g. accuracy > 0.9 and eval_loss < 0.3",
                                 help="Final metric values: conditions combined with 'and', operators >, >=, <, <=, "
                                      "=, !=. A job without the metric does not match.")
    try:
        parse_metric_filter(metric_filter)
        bad_metrics = ""
    except ValueError as exc:
        bad_metrics = str(exc)
        k.error(f"Metric filter: {plain(bad_metrics)}.")
    columns = c2.multiselect("Columns", [*COLUMNS, *(f"final {n}" for n in metric_names)], default=DEFAULT_COLUMNS,
                             key="h_cols", help="Any final metric your runs reported can be a column too.")
if bad_metrics:
    st.stop()

date_from, date_to = (dates[0], dates[1]) if isinstance(dates, tuple) and len(dates) == 2 else (None, None)
changed = (search, status, owner, tag, template, sweep, date_from, date_to, gmin, gmax, sort,
           metric_filter.strip(), scope) != (query.search, [s.value for s in query.status], query.owner, query.tag,
                                             query.template, query.sweep, query.date_from, query.date_to,
                                             query.gpus_min, query.gpus_max, sort_label, url_metrics, query.scope)
page_no = 1 if changed else query.page
column, descending, metric = sort_of(sort) or sort_of("newest")
try:
    query = HistoryQuery(search=search, status=status, owner=owner, tag=tag, template=template, sweep=sweep,
                         date_from=date_from, date_to=date_to, gpus_min=gmin, gpus_max=gmax, sort=column,
                         descending=descending, metric=metric, metric_filter=metric_filter, page=page_no,
                         scope=scope)
except ValidationError as exc:
    for field, problem in validation_problems(exc).items():
        st.error(f"{FIELD_LABELS.get(field, field)}: {plain(problem)}.")
    st.stop()
# The URL is the view: share it, bookmark it, reopen it.
url: dict[str, str] = {"q": search, "status": ",".join(status), "owner": owner, "tag": tag, "template": template,
                       "sweep": "" if sweep is None else str(sweep),
                       "from": date_from.isoformat() if date_from else "", "to": date_to.isoformat() if date_to else "",
                       "gmin": "" if gmin is None else str(gmin), "gmax": "" if gmax is None else str(gmax),
                       "metrics": metric_filter.strip(),
                       "sort": sort if sort != "newest" else "", "page": str(page_no) if page_no > 1 else "",
                       "scope": scope if scope != "all" else ""}
st.query_params.from_dict({k: v for k, v in url.items() if v})

jobs, more = P.history.page_with_more(USER, query)
if not jobs:
    if page_no > 1:
        st.info("This page is past the end of the list.")
        st.button("Back to the first page", key="h_first", on_click=lambda: st.query_params.pop("page", None))
    elif unknown := [c.name for c in query.conditions() if c.name not in metric_names and c.name != "loss"]:
        st.info(f"No jobs match these filters: none of the jobs you may see reported a final {plain(unknown[0])!r} "
                f"(they report {plain(', '.join(metric_names[:8]) or 'no other metric')}).")
    elif any(url.values()):
        st.info("No jobs match these filters.")
    else:
        st.info("No jobs yet.")
        st.page_link(SUBMIT_PAGE, label="Submit a job", icon=":material/rocket_launch:")
    st.stop()

# The rows go out first; the summary of the whole filtered set fills the strip above them when it is ready
# (at once from the running totals; a text search or date range has to add up the matching jobs).
strip = st.empty()
strip.caption("Adding up the filtered jobs…")

shown = list(columns or DEFAULT_COLUMNS)
if metric and f"final {metric}" not in shown:  # the metric the page is sorted by is shown, by the final loss
    shown.insert(shown.index("final loss") + 1 if "final loss" in shown else len(shown), f"final {metric}")
rows = []
for j in jobs:
    full = {
        # The name opens the job page; the link carries the name after '#' for the column to show.
        "id": j.id, "name": f"/job?id={j.id}#{quote(j.name, safe='')}",
        "status": j.status.value, "owner": j.owner, "created": j.created_at,
        "runtime": duration(j.runtime_seconds(now())), "GPUs": j.gpus,
        "GPU-hours": j.gpu_hours, "cost": j.cost_total, "final loss": j.loss if not j.is_active else None,
        "learning rate": j.request.get("learning_rate"), "epochs": j.request.get("epochs"),
        "batch size": j.request.get("batch_size"), "tags": " ".join(j.tags), "note": j.note,
        "template": j.request.get("template") or "", "script": j.request.get("script"),
    }
    full |= {c: j.final_metrics.get(c[6:]) for c in shown if c not in full}  # "final accuracy" -> accuracy
    rows.append({c: full[c] for c in shown})
event = st.dataframe(pd.DataFrame(rows), key="hist_table", hide_index=True, width="stretch",
                     column_config={c: TABLE_COLUMNS[c] for c in shown if c in TABLE_COLUMNS},
                     on_select="rerun", selection_mode="multi-row")
selected = [jobs[i].id for i in (event.selection.rows if event else [])]
with st.container(horizontal=True):
    if len(selected) == 1:
        st.page_link(JOB_PAGE, label=f"Open job #{selected[0]}", icon=":material/open_in_new:",
                     query_params={"id": str(selected[0])})
        st.page_link(SUBMIT_PAGE, label="Clone", icon=":material/content_copy:",
                     query_params={"clone": str(selected[0])})
    compare_link(selected)
    view = query.model_dump(mode="json")
    st.link_button("Export CSV", f"/download/{sign_link(P.settings, USER, kind='history', query=view)}",
                   icon=":material/download:",
                   help="The filtered view, every page of it, with parameters and final metrics.")
    st.link_button("Export Parquet",
                   f"/download/{sign_link(P.settings, USER, kind='history', query=view, format='parquet')}",
                   icon=":material/download:", help="The same, with typed columns, for pandas, Polars or Spark.")

summ = P.history.summary(USER, query)
with strip.container():
    m = st.columns(4)
    m[0].metric("Jobs", f"{summ.jobs:,}")
    m[1].metric("Success rate", f"{summ.success_rate:.0%}" if summ.success_rate is not None else "–")
    m[2].metric("GPU-hours", f"{summ.gpu_hours:,.1f}")
    m[3].metric("Cost", money(summ.cost))
# A sort by a result lists only the jobs that have one, so the strip's count does not give the pages then.
by_result = column in NULLABLE_SORTS or column == "final_metric"
if by_result:
    st.caption(f"Sorted by {sort.rstrip(' ↑↓')}: jobs without one (still running, or never started) are not "
               "listed, nor exported; the summary above counts them.")
pages = max(1, -(-summ.jobs // query.page_size))
left, mid, right = st.columns([1, 2, 1])


def go(page: int) -> None:
    st.query_params["page"] = str(page)


left.button("← Newer" if descending and column == "id" else "← Previous", disabled=page_no <= 1, key="h_prev",
            on_click=go, args=(page_no - 1,))
mid.caption(f"Page {page_no}{'' if by_result else f' of {pages:,}'} · select a row to open or clone it, several "
            "to compare them")
right.button("Older →" if descending and column == "id" else "Next →", disabled=not more, key="h_next",
             on_click=go, args=(page_no + 1,))
