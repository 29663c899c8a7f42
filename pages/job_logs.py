"""The job page's Logs tab: the live tail (numbered, dated, coloured by level), search across ranks, a link to any
line (`/job?id=N&tab=Logs&line=1234&rank=R`), and for multi-node jobs every rank merged or one at a time.

The log is the job's own text: it is drawn as HTML that this module writes, every character of the log escaped
(html.escape), so a line can never become markup, a link or a script; only the line-number links are ours."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import streamlit as st

from pages.common import download_url, plain, portal
from services.log_search import MAX_QUERY, SearchResult, query_problem
from services.log_view import LogLine, LogPage
from services.models import JobView, NotFound

LOG_LINES = 500
CONTEXT_LINES = 20
MERGED = -1  # the rank selector's "all ranks" choice

_STYLE = """<style>
.plog{font-family:"Source Code Pro",ui-monospace,monospace;font-size:.8rem;line-height:1.5}
.plog div{white-space:pre-wrap;word-break:break-all;padding:0 .3rem;border-radius:2px}
.plog a.n,.plog .t,.plog .r{user-select:none}
.plog a.n{display:inline-block;min-width:7ch;text-align:right;margin-right:1ch;color:#8a8f98;text-decoration:none}
.plog a.n:hover{text-decoration:underline}
.plog .t{color:#8a8f98;margin-right:1ch}.plog .r{color:#3b6fd4;margin-right:1ch}
.plog .error{background:rgba(255,43,43,.14)}.plog .traceback{background:rgba(255,43,43,.07)}
.plog .warning{background:rgba(255,170,0,.17)}.plog .hl{outline:2px solid #f5c400;background:rgba(255,225,0,.35)}
.plog.end{display:flex;flex-direction:column-reverse;height:480px;overflow:auto;padding:.75rem;
border:1px solid rgba(128,128,128,.3);border-radius:.5rem}
.plog mark{background:rgba(255,225,0,.6);color:inherit;padding:0}
</style>"""


def line_href(job: JobView, line: int, rank: int | None) -> str:
    """The link to one line (relative to this page, so it also works under a base path)."""
    return f"job?id={job.id}&tab=Logs&line={line}" + (f"&rank={rank}" if rank is not None else "")


def _clock(lines: list[LogLine]) -> str:
    times = [ln.received for ln in lines if ln.received is not None]
    if not times:
        return "%H:%M:%S"
    days = {datetime.fromtimestamp(t, UTC).date() for t in (min(times), max(times))}
    return "%H:%M:%S" if len(days) == 1 else "%m-%d %H:%M:%S"


def _marked(text: str, query: str) -> str:
    """`text` escaped, with each (ASCII case-insensitive) occurrence of `query` marked."""
    if not query:
        return html.escape(text)
    parts = re.split(f"({re.escape(query)})", text, flags=re.IGNORECASE | re.ASCII)
    return "".join(f"<mark>{html.escape(p)}</mark>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def log_html(job: JobView, lines: list[LogLine], *, dated: bool, multi: bool, ranks_shown: bool,
             highlight: tuple[int, int] | None = None, query: str = "", box: bool = False) -> str:
    """The lines as our own HTML: number (a link to the line), received time, rank, the escaped text."""
    fmt = _clock(lines)
    width = len(datetime.now(UTC).strftime(fmt))
    rows = []
    for ln in lines:
        cls = " ".join(c for c in (ln.level, "hl" if highlight == (ln.rank, ln.number) else "") if c)
        stamp = ""
        if dated:
            when = datetime.fromtimestamp(ln.received, UTC).strftime(fmt) if ln.received is not None else ""
            stamp = f'<span class="t">{when:<{width}}</span>'
        rank = f'<span class="r">r{ln.rank}</span>' if ranks_shown else ""
        href = html.escape(line_href(job, ln.number, ln.rank if multi else None))
        attr = f' class="{cls}"' if cls else ""
        rows.append(f'<div{attr}><a class="n" href="{href}">{ln.number}</a>'
                    f"{stamp}{rank}{_marked(ln.text, query)}</div>")
    if box:
        return f'{_STYLE}<div class="plog end"><div>{"".join(rows)}</div></div>'
    return f'{_STYLE}<div class="plog">{"".join(rows)}</div>'


def _rank_label(rank: int) -> str:
    return "All ranks (merged)" if rank == MERGED else f"node {rank}"


def _log_pane(job: JobView, rank: int, multi: bool) -> None:
    active = job.is_active
    paused = active and st.session_state.get("log_paused", False)
    cache_key = f"_log_cache-{job.id}-{rank}"
    page: LogPage | None = st.session_state.get(cache_key) if paused else None
    if page is None:
        page = portal().jobs.log_page(job.id, LOG_LINES, rank=None if rank == MERGED else rank)
        st.session_state[cache_key] = page
    n = len(page.lines)
    shown = f"last {n:,} of {max(page.total, n):,} lines" if page.total > n else f"{n:,} lines"
    if page.dated:
        shown += " · times in UTC: when the portal received each line, unless it printed its own"
    st.caption(("Paused · " if paused else ("Live · " if active else "")) + shown)
    if not page.lines:
        st.caption("(no output yet)")
    elif active:
        with st.container(height=480, autoscroll=st.session_state.get("log_autoscroll", True), key="log_box"):
            st.html(log_html(job, page.lines, dated=page.dated, multi=multi, ranks_shown=rank == MERGED))
    else:  # drawn once, so autoscroll never moves it: a box of our own that opens at its end, as a tail should
        st.html(log_html(job, page.lines, dated=page.dated, multi=multi, ranks_shown=rank == MERGED, box=True))


# A running job's pane polls; a finished one's is drawn once.
live_log_pane = st.fragment(run_every="2s")(_log_pane)
still_log_pane = st.fragment(_log_pane)


def _query_int(name: str, what: str) -> int | None:
    """A whole number from the URL; anything else is said above the log and ignored."""
    raw = st.query_params.get(name, "")
    if raw.isascii() and raw.isdecimal() and len(raw) < 12 and (int(raw) > 0 or name == "rank"):
        return int(raw)
    if raw:
        st.warning(f"“{plain(raw[:40])}” in the link is not {what}: showing the log's end instead.")
    return None


def _back_to_tail() -> None:
    for name in ("line", "rank"):
        st.query_params.pop(name, None)


def _linked_line(job: JobView, line: int, rank: int, multi: bool) -> None:
    try:
        page = portal().jobs.log_context(job.id, line, rank, CONTEXT_LINES)
    except NotFound as exc:
        st.warning(plain(str(exc)))
        return
    where = f"node {rank}'s log" if multi else "the log"
    top = st.container(horizontal=True, vertical_alignment="center")
    if not any(ln.number == line for ln in page.lines):
        top.warning(f"Line {line:,} is past the end of {where}: it has {page.total:,} lines.")
    else:
        top.caption(f"Line {line:,} of {where}, with {CONTEXT_LINES} lines either side.")
    back = "Back to the live tail" if job.is_active else "Back to the end of the log"
    top.button(back, key="log_back", icon=":material/vertical_align_bottom:",
               on_click=_back_to_tail)
    if page.lines:
        st.html(log_html(job, page.lines, dated=page.dated, multi=multi, ranks_shown=False,
                         highlight=(rank, line)))


def _search(job: JobView, query: str, multi: bool) -> None:
    problem = query_problem(query)
    if problem:
        st.caption(problem)
        return
    key = f"_log_search-{job.id}"
    cached = st.session_state.get(key)
    if cached is not None and cached[0] == query and not job.is_active:
        result: SearchResult = cached[1]
    else:
        result = portal().jobs.search_log(job.id, query)
        st.session_state[key] = (query, result)
    if not result.total:
        st.caption(f"No line contains “{plain(query)}” ({result.lines_searched:,} lines searched).")
        return
    where = ""
    if multi:
        where = " (" + ", ".join(f"node {r}: {c:,}" for r, c in sorted(result.per_rank.items())) + ")"
    text = f"{result.total:,} matching line{'s' if result.total != 1 else ''}{where}"
    if result.more:
        text += f"; the first {len(result.hits):,} below, {result.more:,} more"
    if not result.complete:
        text += f". The search stopped after {result.lines_searched:,} lines: search for something rarer"
    st.caption(text + f" · {result.seconds:.1f} s")
    lines = [LogLine(h.line, h.text, None, h.level, h.rank) for h in result.hits]
    with st.container(height=min(480, 40 + 22 * len(lines)), key="log_hits"):
        st.html(log_html(job, lines, dated=False, multi=multi, ranks_shown=multi, query=query))


def logs_tab(job: JobView) -> None:
    active, P = job.is_active, portal()
    if not active and P.jobs.log_pruned(job.id):
        st.info(f"This job's log was deleted {P.settings.log_retention_days:g} days after it ended (the portal's "
                "retention setting). Its metrics, charts and files are still here.")
        return
    ranks = P.jobs.log_ranks(job.id)
    multi = len(ranks) > 1
    line, linked_rank = _query_int("line", "a line number"), _query_int("rank", "a node number")
    if linked_rank is not None and linked_rank not in ranks:
        nodes = f"its nodes are {', '.join(map(str, ranks))}" if multi else "it ran on one node"
        st.warning(f"This job has no node {linked_rank}: {nodes}.")
        line = linked_rank = None
    # One row sized by its contents, which wraps on a narrow window (fixed columns cut the labels off at 800 px).
    controls = st.container(horizontal=True, vertical_alignment="bottom", gap="medium")
    rank = 0
    if multi:
        options = [MERGED, *ranks]
        start = options.index(linked_rank) if linked_rank is not None else 0
        rank = controls.selectbox("Rank", options, index=start, key="log_rank", format_func=_rank_label, width=220)
    controls.toggle("Auto-scroll", value=True, key="log_autoscroll")
    controls.toggle("Pause", value=False, key="log_paused", disabled=not active)
    log_url = download_url(job, "log", rank=max(rank, 0))
    if log_url:
        label = f"Download node {max(rank, 0)}'s log" if multi else "Download full log"
        controls.link_button(label, log_url, icon=":material/download:")
    query = st.text_input("Search the log", key="log_search", max_chars=MAX_QUERY,
                          placeholder="e.g. CUDA out of memory",
                          help="Finds lines containing this text (ignoring case) in every rank's log; each hit "
                               "links to its line.")
    if query:
        _search(job, query, multi)
    if line:
        _linked_line(job, line, linked_rank if linked_rank is not None else max(rank, 0), multi)
        return
    (live_log_pane if active else still_log_pane)(job, rank, multi)
