"""Dashboard: the researcher's jobs by section, with the actions they need next."""

from __future__ import annotations

import time

import streamlit as st

from pages import sweep_cards
from pages.common import SUBMIT_PAGE, compare_link, goto_pending_job, me, plain, portal, show_flash
from services.job_queries import search_count_note
from services.models import StatusGroup

P = portal()
SECTION_ICON = {StatusGroup.ACTIVE: "🟢", StatusGroup.SUCCEEDED: "✅", StatusGroup.FAILED: "❌",
                StatusGroup.STOPPED: "⏹️"}
FILTERS = ["All", *[g.value for g in StatusGroup]]
RUNNING_REFRESH = "2s"
RELATIVE_TIMES_REFRESH = 60  # seconds

goto_pending_job()
DRAWN_AT = time.monotonic()

USER = me()
# Rows that give "New job" and "Everyone" their own width and the title or search box the rest (fixed column
# shares cut them off in a narrow window). The title is drawn once the toggle says whose jobs these are.
header = st.container(horizontal=True, vertical_alignment="center", key="dash_header")
head = header.container()
header.page_link(SUBMIT_PAGE, label="New job", icon=":material/add:")
show_flash()
compare_link()

search_row = st.container(horizontal=True, vertical_alignment="center", key="dash_search_row")
search = search_row.text_input("Search", key="dash_search", placeholder="Search by name, owner or script",
                               label_visibility="collapsed")
# "My jobs" by default; "Everyone" when the user may see others' jobs (read-only unless an admin).
# "My team": the jobs of the user's teams (services/teams.py), shown to members of at least one.
team = bool(P.jobs.teams.teams_of(USER)) and search_row.toggle("My team", key="dash_team", value=False)
everyone = P.jobs.may_see_others(USER) and search_row.toggle("Everyone", key="dash_everyone", value=False)
listing = P.jobs.listing(USER, "all" if everyone else "team" if team else "mine")
owner, where = listing.owner, listing.where
head.title("All experiments" if everyone else "My team's experiments" if team else "My experiments")
counts = P.jobs.counts(search=search, owner=owner, where=where, minus=listing.minus)
count_note = search_count_note(search, counts)  # a search's counts stop early: say so, "1,000+" is no guess
choice = st.segmented_control(
    "Filter", FILTERS, key="dash_filter", default="All", required=True,
    format_func=lambda f: f if f == "All" else f"{f} ({counts[StatusGroup(f)]})",
)
groups = list(StatusGroup) if choice in (None, "All") else [StatusGroup(choice)]
if count_note:
    st.caption(count_note)
# With every section on screen, each starts shorter; "Load more" adds a page at a time.
PAGE = P.settings.dashboard_page_size if len(groups) == 1 else max(1, P.settings.dashboard_page_size // 2)


def load_more(group: StatusGroup) -> None:
    st.session_state[f"limit_{group.name}"] = st.session_state.get(f"limit_{group.name}", PAGE) + PAGE


def section(group: StatusGroup) -> None:
    n = counts[group]
    if n == 0 and choice == "All":
        return
    st.subheader(f"{SECTION_ICON[group]} {group.value} ({n})")
    if n == 0:
        st.caption("No jobs here.")
        return
    limit = max(PAGE, st.session_state.get(f"limit_{group.name}", PAGE))
    page = P.jobs.list_group(group, limit, search=search, owner=owner, where=where)
    sweep_cards.cards(page.jobs, key_prefix=group.name)  # a sweep's trials in one collapsed box
    if page.has_more:
        st.button("Load more…", key=f"more_{group.name}", on_click=load_more, args=(group,))


@st.fragment(run_every=RUNNING_REFRESH)
def live(running_cards: bool) -> None:
    """The page's one timer, whatever it shows: the running cards redraw; a job that starts, ends or appears (from a
    notebook or another tab) redraws the whole page, and so does a minute gone by, so "Finished 3m ago" stays true."""
    fresh = P.jobs.counts(search=search, owner=owner, where=where, minus=listing.minus)
    if fresh != counts or time.monotonic() - DRAWN_AT > RELATIVE_TIMES_REFRESH:
        st.rerun(scope="app")
    if running_cards:
        section(StatusGroup.ACTIVE)


if sum(counts.values()) == 0:
    if search:
        st.info(f"No job matches “{plain(search)}”." if not count_note else
                f"None of each section's newest jobs matches “{plain(search)}”.")
    else:
        st.info("No jobs yet. Submit your first one: the example script `train_example.py` is in your workspace.")
        st.page_link(SUBMIT_PAGE, label="Submit a job", icon=":material/rocket_launch:")

for g in groups:
    if g is StatusGroup.ACTIVE and counts[g] > 0:
        live(running_cards=True)
    else:
        section(g)
if StatusGroup.ACTIVE not in groups or counts[StatusGroup.ACTIVE] == 0:
    live(running_cards=False)  # draws nothing: it only watches for new jobs and ageing times
