"""Usage: GPU-hours and cost by user, team, month and GPU type as charts and a table, with CSV export; this month's
budgets; prices (admins) and budgets (admins and team leads) set here. Sums come from services/usage.py."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from pages.charts import PALETTE
from pages.common import chart_text, me, money, plain, portal
from services.models import Forbidden, ValidationProblem
from services.usage import DIMENSIONS, UsageQuery, UsageService, parse_query, to_csv

P = portal()
USER = me()
SERVICE = UsageService.of(P.jobs)
LABELS = {"user": "User", "team": "Team", "month": "Month", "gpu_type": "GPU type"}
FIELDS = {"from": "From month", "to": "To month", "by": "By"}  # the form's fields, as a problem names them

st.title("Usage")
st.caption("What jobs cost from their real run time (never their time in the queue): yours and your teams'"
           + ("; as " + USER.role.value + " you see everyone's." if USER.reads_all else "."))


def bar(rows: list[dict[str, Any]], dim: str, stack: str | None, value: str, title: str) -> go.Figure:
    """A bar per value of `dim`, stacked by `stack` (SVG bars: the portal's CSP allows no WebGL)."""
    fig = go.Figure()
    groups = sorted({str(r[stack]) for r in rows}) if stack else [""]
    xs = sorted({str(r[dim]) for r in rows})
    for i, g in enumerate(groups):
        sums = {x: 0.0 for x in xs}
        for r in rows:
            if not stack or str(r[stack]) == g:
                sums[str(r[dim])] += r[value]
        fig.add_trace(go.Bar(x=[chart_text(x or "(none)") for x in xs], y=list(sums.values()),
                             name=chart_text(g or "(none)"), marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="stack", title={"text": title}, height=320, showlegend=bool(stack),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


with st.form("usage-view", border=False):
    row = st.columns([1, 1, 2])
    start = row[0].text_input("From month", value=st.query_params.get("from", ""), placeholder="2026-01")
    end = row[1].text_input("To month", value=st.query_params.get("to", ""), placeholder="2026-12")
    by = row[2].multiselect("By", list(DIMENSIONS), default=[b for b in st.query_params.get("by", "month,team").split(
        ",") if b in DIMENSIONS] or ["month"], format_func=LABELS.get)
    st.form_submit_button("Show")

q: UsageQuery | None = None
try:
    q = parse_query(start, end, by or ["month"])
except ValidationProblem as exc:
    for field, why in exc.problems.items():
        st.error(f"{FIELDS.get(field, field)}: {why}")
if q is not None:
    st.query_params.update({"from": q.start, "to": q.end, "by": ",".join(q.by)})
    rows = SERVICE.rows(USER, q)
    m = st.columns(3)
    m[0].metric("Jobs", f"{sum(r['jobs'] for r in rows):,}")
    m[1].metric("GPU-hours", f"{sum(r['gpu_hours'] for r in rows):,.1f}")
    m[2].metric("Cost", money(sum(r["cost"] for r in rows)))
    if not rows:
        st.info(f"No job ran between {q.start} and {q.end} that you may see.")
    else:
        dim, stack = q.by[0], (q.by[1] if len(q.by) > 1 else None)
        left, right = st.columns(2)
        left.plotly_chart(bar(rows, dim, stack, "cost", f"Cost by {LABELS[dim].lower()}"), key="usage-cost",
                          width="stretch")
        right.plotly_chart(bar(rows, dim, stack, "gpu_hours", f"GPU-hours by {LABELS[dim].lower()}"),
                           key="usage-hours", width="stretch")
        st.dataframe([{LABELS.get(k, k): (plain(v) if isinstance(v, str) else v) for k, v in r.items()} for r in rows],
                     hide_index=True, width="stretch", key="usage-table",
                     column_config={"cost": st.column_config.NumberColumn(
                         "Cost", format=P.settings.currency.replace("%", "%%") + "%.2f"),
                         "gpu_hours": st.column_config.NumberColumn("GPU-hours", format="%.2f")})
    st.download_button("Download CSV", to_csv(rows, q.by), file_name=f"usage-{q.start}-{q.end}.csv",
                       mime="text/csv", key="usage-csv")

st.subheader("Budgets this month")
budgets = SERVICE.budgets(USER)
if not budgets:
    st.caption("No budget limits your jobs or your teams'.")
for b in budgets:
    unit = money if b["unit"] == "money" else (lambda v: f"{v:,.1f} GPU-hours")
    spent = b["used"] / b["monthly_limit"] if b["monthly_limit"] > 0 else 1.0
    st.progress(min(1.0, spent), text=f"{b['scope'].capitalize()} {plain(b['name'])}: {unit(b['used'])} of "
                f"{unit(b['monthly_limit'])} used, {unit(max(0.0, b['left']))} left"
                + (" · overdraft allowed" if b["overdraft"] else "")
                + (" · at 100 % new jobs are refused" if b["at_limit"] == "refuse" else " · at 100 % new jobs wait"))

leads = [t.name for t in P.jobs.teams.teams_of(USER) if t.lead]
if USER.is_admin or leads:
    with st.expander("Set a budget"), st.form("budget-form"):
        c = st.columns(3)
        scope = c[0].selectbox("For", ["team", "user"] if USER.is_admin else ["team"], key="b_scope")
        name = c[1].text_input("Team or user", value=leads[0] if leads else "", key="b_name")
        unit_choice = c[2].selectbox("In", ["money", "gpu_hours"], key="b_unit",
                                     format_func=lambda u: "money" if u == "money" else "GPU-hours")
        c = st.columns(3)
        limit = c[0].number_input("Monthly limit", min_value=0.0, value=1000.0, step=100.0, key="b_limit")
        at_limit = c[1].selectbox("At 100 %", ["refuse", "wait"], key="b_at_limit",
                                  format_func=lambda a: "new jobs are refused" if a == "refuse" else "new jobs wait")
        overdraft = c[2].checkbox("Allow overdraft", key="b_overdraft",
                                  help="A job whose ceiling is past what is left may still start.")
        if st.form_submit_button("Save budget"):
            try:
                SERVICE.set_budget(USER, {"scope": scope, "name": name, "unit": unit_choice, "monthly_limit": limit,
                                          "at_limit": at_limit, "overdraft": overdraft})
                st.success(f"Budget of {scope} {plain(name)} saved.")
            except (ValidationProblem, Forbidden) as exc:
                st.error(str(exc))

st.subheader("Prices")
prices = SERVICE.prices()
st.caption(f"Without a price of its own a GPU costs {money(P.settings.gpu_price_per_hour)} an hour and a node "
           f"{money(P.settings.node_price_per_hour)}. A new price counts from its date on; finished jobs keep their "
           "cost.")
if prices:
    st.dataframe([{"GPU type": plain(p["gpu_type"] or ""), "Node": plain(p["node"] or ""), "GPU-hour": p["gpu_hour"],
                   "Node-hour": p["node_hour"], "From": p["effective_from"][:16].replace("T", " "),
                   "Set by": plain(p["set_by"])} for p in prices], hide_index=True, key="price-table")
if USER.is_admin:
    with st.expander("Set a price"), st.form("price-form"):
        c = st.columns(3)
        gpu_type = c[0].text_input("GPU type", value="local" if P.jobs.backend.name == "local" else "",
                                   key="p_type", help="A node label's or Kueue flavor's GPU type.")
        node = c[1].text_input("Node (optional)", key="p_node", help="One node's own price, over its GPU type's.")
        when = c[2].text_input("From", placeholder="now, or 2026-12-01", key="p_from")
        c = st.columns(2)
        gpu_hour = c[0].number_input("Per GPU-hour", min_value=0.0, value=P.settings.gpu_price_per_hour, key="p_gpu")
        node_hour = c[1].number_input("Per node-hour", min_value=0.0, value=P.settings.node_price_per_hour,
                                      key="p_node_hour")
        if st.form_submit_button("Save price"):
            try:
                SERVICE.set_price(USER, {"gpu_type": gpu_type, "node": node, "effective_from": when,
                                         "gpu_hour": gpu_hour, "node_hour": node_hour})
                st.success("Price saved.")
                st.rerun()
            except ValidationProblem as exc:
                st.error(str(exc))
