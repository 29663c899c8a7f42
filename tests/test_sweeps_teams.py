"""Who sees a sweep follows its base's team, as its trial jobs are seen (real SQLite and PostgreSQL stores): a
teammate sees it, a hidden team's sweep is "not found" to everyone else, viewers included."""

from __future__ import annotations

import pytest

from services.models import NotFound, Role, User
from tests.test_sweeps import SCRIPT, spec

ADMIN, ALICE, BOB, CAROL, VERA = User("root", Role.ADMIN), User("alice"), User("bob"), User("carol"), \
    User("vera", Role.VIEWER)


def test_a_hidden_teams_sweep_is_seen_by_its_members_only(any_portal) -> None:
    p = any_portal
    teams = p.jobs.teams
    teams.save(ADMIN, "vision", everyone_visible=False)
    teams.set_member(ADMIN, "vision", "alice")
    teams.set_member(ADMIN, "vision", "bob")
    (p.settings.workspace_dir / "lr_sweep.py").write_text(SCRIPT)
    sweep = p.sweeps.create(ALICE, spec(method="grid", budget=1, parallel=1, params={
        "learning_rate": {"kind": "list", "values": [0.01]}}))  # no team asked for: alice's (only) team
    assert p.sweeps.get(BOB, sweep.id).name == "lr"  # her teammate reads it
    assert [s.id for s in p.sweeps.list(BOB, everyone=True)] == [sweep.id]
    for outsider in (CAROL, VERA):
        with pytest.raises(NotFound, match=f"Sweep {sweep.id} was not found"):
            p.sweeps.get(outsider, sweep.id)
        assert p.sweeps.list(outsider, everyone=True) == []
        assert p.sweeps.names(outsider, [sweep.id]) == {}
