"""History: every past job in one searchable table; open any of them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import JOB_PAGE, compare_link, duration, me, now, portal

P = portal()
PAGE = 50

st.title("Experiment history")
search = st.text_input("Search", key="hist_search", placeholder="name, owner or script")
page_no = st.number_input("Page", min_value=1, value=1, step=1, key="hist_page")
# History shows every job the user may see (all of them for viewers and admins).
owner = P.jobs.visible_owner(me(), everyone=True)
jobs = P.jobs.list_jobs(limit=PAGE, offset=(page_no - 1) * PAGE, search=search, owner=owner)
if not jobs:
    st.info("No jobs match." if search else "No jobs yet.")
    st.stop()
rows = [
    {
        "id": j.id, "name": j.name, "status": j.status.value, "owner": j.owner,
        "created": j.created_at, "runtime": duration(j.runtime_seconds(now())),
        "epochs": j.total_epochs, "learning rate": j.request.get("learning_rate"),
        "batch size": j.request.get("batch_size"), "GPUs": j.gpus,
        "final loss": j.loss if not j.is_active else None,
    }
    for j in jobs
]
event = st.dataframe(pd.DataFrame(rows), key="hist_table", hide_index=True, width="stretch",
                     on_select="rerun", selection_mode="multi-row")
selected = [rows[i]["id"] for i in (event.selection.rows if event else [])]
if len(selected) == 1:
    st.page_link(JOB_PAGE, label=f"Open job #{selected[0]}", icon=":material/open_in_new:",
                 query_params={"id": str(selected[0])})
compare_link(selected)
st.caption("Select a row to open the job, or several to compare them.")
