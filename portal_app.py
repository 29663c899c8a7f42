"""ML Job Portal: one process serving the pages, the HTTP routes, /healthz and the sync loop.

``streamlit run portal_app.py`` finds ``app`` below and serves it. For each browser session
Streamlit then executes this same file as ``__main__``: that run only draws the navigation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import streamlit as st

if __name__ == "__main__":
    from pages.common import health_banner, identity_badge, notifications_title, unread_notifications, unread_watch

    UNREAD = unread_notifications()  # "Notifications (3)" in the navigation, on every page
    PAGES = {
        "Experiments": [
            st.Page("pages/dashboard.py", title="Dashboard", icon=":material/dashboard:",
                    default=True),
            st.Page("pages/submit.py", title="Submit job", icon=":material/rocket_launch:", url_path="submit"),
            st.Page("pages/history.py", title="History", icon=":material/history:", url_path="history"),
            st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
            st.Page("pages/queues.py", title="Queues", icon=":material/hourglass_top:", url_path="queues"),
            st.Page("pages/usage.py", title="Usage", icon=":material/payments:", url_path="usage"),
            st.Page("pages/sweep.py", title="Sweeps", icon=":material/tune:", url_path="sweep"),
            st.Page("pages/teams.py", title="Teams", icon=":material/groups:", url_path="teams"),
        ],
        "Account": [
            st.Page("pages/tokens.py", title="API tokens", icon=":material/key:", url_path="tokens"),
            st.Page("pages/notifications.py", title=notifications_title(UNREAD), icon=":material/notifications:",
                    url_path="notifications"),
        ],
        "Job": [
            st.Page("pages/job.py", title="Job", icon=":material/monitoring:", url_path="job", visibility="hidden")
        ],
    }
    st.set_page_config(page_title="ML Job Portal", page_icon="🧪", layout="wide")
    page = st.navigation(PAGES)
    identity_badge()  # also the sign-in gate: nothing below runs without a user
    health_banner()
    with st.sidebar:
        unread_watch(UNREAD)
    page.run()
else:
    from starlette.middleware import Middleware
    from streamlit import config as st_config
    from streamlit.runtime.pages_manager import PagesManager

    from api import tcp_nodelay
    from api.guard import RequestGuard
    from api.routes import ROUTES
    from services.auth import bind_problem
    from services.backends.local_sandbox import sandbox_problem
    from services.config import get_settings
    from services.portal import get_portal

    # Before anything listens: single-user mode (no login) only on loopback, unless the admin says otherwise.
    # ... and a multi-user portal with local jobs only where each job can be shut out of the portal's files.
    problem = bind_problem(get_settings(), st_config.get_option("server.address")) or sandbox_problem(get_settings())
    if problem:
        raise SystemExit(problem)

    # The house layout keeps pages in pages/, which Streamlit would also treat as a legacy (v1)
    # pages folder until the first st.navigation call: a first request for /submit would then run
    # pages/submit.py without the navigation. Pages are only ever served through st.navigation.
    PagesManager.uses_pages_directory = False

    # Without it every request on a kept-alive connection waits ~40 ms for a delayed ACK (Nagle): see the module.
    tcp_nodelay.install()

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
        portal = get_portal()  # migrations run here, before the first request
        portal.sync.start()
        try:
            yield {}
        finally:
            portal.sync.stop()

    # The guard sees every request first (Host allow-list, size limit, browser protection headers): see api/guard.py.
    app = st.App(__file__, routes=ROUTES, lifespan=lifespan, middleware=[Middleware(RequestGuard)])
