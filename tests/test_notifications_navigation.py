"""Every page's navigation says how many notifications are unread ("Notifications (1)"), from a COUNT off an index,
and the Notifications page's "Mark all read" clears it. AppTest, real jobs (the browser test, tests/e2e, sees the
count change on an open page as an event arrives)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from tests.conftest import run_to_end

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


@pytest.fixture
def navigation(data_dir, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Opens the portal in a new browser session and returns the titles its navigation lists. AppTest keeps no
    element of st.navigation's (and runs a page it switched to without the entrypoint), so the call is watched on
    its way to Streamlit, which draws it unchanged."""
    real = st.navigation
    drawn: list[list[str]] = []

    def watched(pages: Any, **kwargs: Any) -> Any:
        drawn.append([p.title for section in pages.values() for p in section])
        return real(pages, **kwargs)

    monkeypatch.setattr(st, "navigation", watched)

    def titles() -> list[str]:
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        assert not at.exception
        return drawn[-1]

    return titles


def test_the_navigation_counts_unread_notifications_until_marked_read(navigation, portal, user,
                                                                      workspace_script) -> None:
    assert "Notifications" in navigation()
    workspace_script("boom.py", "import sys\nsys.exit(3)\n")
    for name in ("boom-a", "boom-b"):
        run_to_end(portal, user, portal.jobs.submit(user, {"name": name, "script": "boom.py", "epochs": 1}))
    assert "Notifications (2)" in navigation() and "Notifications" not in navigation()

    page = AppTest.from_file(APP, default_timeout=30)
    page.run()
    page.switch_page("pages/notifications.py").run()
    assert "Your notifications · 2 unread" in [h.value for h in page.subheader]
    page.button(key="n_mark_read").click().run()
    assert "Notifications" in navigation() and "Notifications (2)" not in navigation()


def test_the_count_is_read_from_the_index_alone(portal, user) -> None:
    """A COUNT per page view per user: it must not read the notifications' rows (their payloads)."""
    engine = portal.notifications.sessions.kw["bind"]
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan below is SQLite's")
    with engine.connect() as c:
        plan = " ".join(str(r[-1]) for r in c.execute(text(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM notifications WHERE owner = 'x' AND read_at IS NULL")))
    assert "COVERING INDEX ix_notifications_unread" in plan, plan
