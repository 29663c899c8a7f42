"""API tokens expire and admins manage everyone's: the expiry chosen at creation (at most the portal's maximum),
a token past it refused with a sentence, every user's tokens listed and revoked by an admin (API, client and the
"API tokens" page), and a researcher confined to their own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from ml_job_portal import JobClient, NotFoundError, PermissionDenied
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from services.config import Settings
from services.models import Role, User, ValidationProblem
from services.portal import Portal, build_portal
from services.store.db import alembic_config, make_engine
from services.store.orm import ApiToken, UTCDateTime
from services.tokens import TokenExpired
from tests.conftest import PortalServer, create_token
from tests.test_pages import APP, texts

ADA = User("ada", role=Role.ADMIN)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expire(p: Portal, token_id: int) -> None:
    """Move a token's expiry into the past, as time would."""
    with p.tokens.sessions.begin() as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_id).values(
            expires_at=datetime.now(UTC) - timedelta(hours=1)))


@pytest.fixture
def server(tmp_path) -> Iterator[PortalServer]:
    srv = PortalServer(tmp_path / "portal-data", env={"PORTAL_ADMINS": "ada"}).start()
    yield srv
    srv.stop()


def offline_portal(srv: PortalServer) -> Portal:
    """A second handle on the running portal's store, to look at or age its tokens."""
    return build_portal(Settings(data_dir=srv.data_dir, backend="local", admins=["ada"]))


# Expiry --------------------------------------------------------------------------------------------------
def test_a_token_past_its_expiry_gets_401_with_a_sentence(server):
    token = create_token(server.data_dir, "alice", "notebook")
    assert httpx.get(f"{server.url}/api/v1/me", headers=bearer(token)).json()["name"] == "alice"
    p = offline_portal(server)
    try:
        (view,) = p.tokens.list(User("alice"))
        expire(p, view.id)
    finally:
        p.close()
    r = httpx.get(f"{server.url}/api/v1/me", headers=bearer(token))
    assert r.status_code == 401
    assert r.json()["error"].startswith("The API token has expired (on ")
    assert "'API tokens' page" in r.json()["error"]
    # The owner's list (seen with another of their tokens) says so too.
    other = create_token(server.data_dir, "alice", "other")
    listed = {t["name"]: t for t in httpx.get(f"{server.url}/api/v1/tokens", headers=bearer(other)).json()["tokens"]}
    assert (listed["notebook"]["expired"], listed["notebook"]["active"]) == (True, False)
    assert listed["other"]["active"]


def test_the_lifetime_is_chosen_at_creation_within_the_maximum(any_portal):
    any_portal.settings.token_max_days = 30
    alice = User("alice")
    for days in (31, 0, -1, float("nan"), "7"):
        with pytest.raises(ValidationProblem) as problem:
            any_portal.tokens.create(alice, "notebook", days)
        assert "at most 30 days (the portal's maximum)" in problem.value.problems["days"]
    assert any_portal.tokens.list(alice) == [], "nothing is made from a refused lifetime"

    before = datetime.now(UTC)
    week, week_secret = any_portal.tokens.create(alice, "a week", 7)
    default, _ = any_portal.tokens.create(alice, "default")
    assert timedelta(days=7) <= week.expires_at - before < timedelta(days=7, minutes=1)
    assert timedelta(days=30) <= default.expires_at - before < timedelta(days=30, minutes=1), "default: the maximum"
    stored = {t.name: t for t in any_portal.tokens.list(alice)}
    assert stored["a week"].expires_at == week.expires_at and stored["a week"].expires_at.tzinfo is not None
    assert any_portal.tokens.authenticate(week_secret).name == "alice"

    expire(any_portal, week.id)
    with pytest.raises(TokenExpired, match="The API token has expired"):
        any_portal.tokens.authenticate(week_secret)
    assert not any_portal.tokens.list(alice)[-1].active


def test_migration_gives_existing_tokens_a_year_from_their_creation(database_url, tmp_path):
    engine = make_engine(database_url)
    made = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    # The table as revision 0015 left it (no expires_at), written through the store's own column types.
    old_tokens = sa.table("api_tokens", sa.column("owner"), sa.column("name"), sa.column("token_hash"),
                          sa.column("prefix"), sa.column("groups", sa.JSON), sa.column("created_at", UTCDateTime))
    try:
        cfg = alembic_config(engine)
        command.upgrade(cfg, "0015")
        with engine.begin() as conn:
            conn.execute(sa.insert(old_tokens).values(owner="alice", name="old", token_hash="0" * 64,
                                                      prefix="mlp_old", groups=[], created_at=made))
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    p = build_portal(Settings(data_dir=tmp_path / "portal-data", backend="local", database_url=database_url))
    try:
        (old,) = p.tokens.list(User("alice"))
        assert old.expires_at == made + timedelta(days=365) and old.expired, "made in 2025: a year is over"
        # New tokens keep their chosen expiry on this database too.
        fresh, _ = p.tokens.create(User("alice"), "new", 2)
        assert p.tokens.list(User("alice"))[0].expires_at == fresh.expires_at
    finally:
        p.close()


# Admins and researchers over the API and the client ------------------------------------------------------
def test_an_admin_lists_and_revokes_anyones_token_a_researcher_only_their_own(server):
    alice = create_token(server.data_dir, "alice", "alice laptop")
    bob = create_token(server.data_dir, "bob", "bob notebook")
    ada = create_token(server.data_dir, "ada", "ada admin")
    url = f"{server.url}/api/v1/tokens"

    mine = httpx.get(url, headers=bearer(bob)).json()["tokens"]
    assert [(t["owner"], t["name"]) for t in mine] == [("bob", "bob notebook")]
    assert mine[0]["expires_at"] and mine[0]["active"] and mine[0]["last_used_at"]
    r = httpx.get(url, params={"scope": "all"}, headers=bearer(bob))
    assert r.status_code == 403 and r.json()["error"].startswith("Only admins may see every user's tokens")
    assert httpx.get(url, params={"scope": "everyone"}, headers=bearer(bob)).status_code == 400

    everyone = {t["owner"]: t for t in httpx.get(url, params={"scope": "all"}, headers=bearer(ada)).json()["tokens"]}
    assert set(everyone) == {"alice", "bob", "ada"}
    assert {"created_at", "last_used_at", "expires_at", "revoked_at"} <= set(everyone["alice"])
    alice_id = everyone["alice"]["id"]

    # Bob cannot revoke alice's token: it is "not found" for him, and it keeps working.
    r = httpx.request("DELETE", f"{url}/{alice_id}", headers=bearer(bob), json={})
    assert r.status_code == 404 and r.json()["error"] == f"Token {alice_id} was not found."
    assert httpx.get(f"{server.url}/api/v1/me", headers=bearer(alice)).status_code == 200

    assert httpx.request("DELETE", f"{url}/{alice_id}", headers=bearer(ada), json={}).status_code == 204
    r = httpx.get(f"{server.url}/api/v1/me", headers=bearer(alice))
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert httpx.request("DELETE", f"{url}/999999", headers=bearer(ada), json={}).status_code == 404

    # The Python client: the same rules, as exceptions with the server's sentence.
    with JobClient(server.url, ada) as admin, JobClient(server.url, bob) as researcher:
        listed = {t["owner"]: t for t in admin.tokens(scope="all")}
        assert listed["alice"]["revoked_at"] and not listed["alice"]["active"]
        with pytest.raises(PermissionDenied, match="Only admins"):
            researcher.tokens(scope="all")
        with pytest.raises(NotFoundError):
            researcher.revoke_token(listed["ada"]["id"])
        admin.revoke_token(listed["bob"]["id"])
        assert [t["active"] for t in admin.tokens()] == [True], "ada's own token is untouched"
    assert httpx.get(f"{server.url}/api/v1/me", headers=bearer(bob)).status_code == 401


# The "API tokens" page -----------------------------------------------------------------------------------
@pytest.fixture
def page_as(portal, monkeypatch):
    """The tokens page in proxy mode, signed in as the given user."""
    portal.settings.auth_mode = "proxy"

    def open_as(user: User) -> AppTest:
        monkeypatch.setattr("pages.common.current_user", lambda *a, **k: user)
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        at.switch_page("pages/tokens.py").run()
        assert not at.exception
        return at

    return open_as


def test_an_admin_sees_all_users_tokens_and_revokes_one_on_the_page(portal, page_as):
    _, alice_secret = portal.tokens.create(User("alice"), "alice laptop")
    bob_token, _ = portal.tokens.create(User("bob"), "bob notebook")
    expire(portal, bob_token.id)

    at = page_as(User("bob"))
    assert "All users' tokens" not in texts(at) and "alice laptop" not in texts(at)
    assert "bob notebook" in texts(at) and "expired" in texts(at)
    assert not [b for b in at.button if b.key and "revoke-" in b.key], "an expired token has nothing to revoke"

    at = page_as(ADA)
    assert "All users' tokens" in texts(at)
    cards = "\n".join(m.value for m in at.markdown)
    assert "alice · **alice laptop**" in cards and "bob · **bob notebook**" in cards and "**expired**" in cards
    alice_id = next(t.id for t in portal.tokens.list(User("alice")))
    at.button(key=f"all-revoke-{alice_id}").click().run()
    assert "Revoked alice's token 'alice laptop'." in [s.value for s in at.success]
    assert portal.tokens.authenticate(alice_secret) is None
    assert f"all-revoke-{alice_id}" not in {b.key for b in at.button}


def test_the_create_form_offers_lifetimes_up_to_the_maximum(portal, page_as):
    portal.settings.token_max_days = 60
    at = page_as(User("alice"))
    days = at.selectbox(key="token_days")
    assert days.options == ["7 days", "30 days", "60 days (the maximum)"] and days.value == 60
    at.text_input(key="token_name").input("short-lived")
    days.set_value(7)
    at.button(key="create_token").click().run()
    (made,) = portal.tokens.list(User("alice"))
    assert timedelta(days=6, hours=23) < made.expires_at - datetime.now(UTC) <= timedelta(days=7)
    shown = texts(at)
    assert f"expires on {made.expires_at:%Y-%m-%d} (in " in shown and ("(in 6d 23h)" in shown or "(in 7d 0h)" in shown)


def test_other_users_token_names_reach_the_admin_as_plain_text(portal, page_as):
    portal.tokens.create(User("mallory"), "[Re-login](https://phish.example) ![x](https://t.example/p.png)")
    at = page_as(ADA)
    cards = "\n".join(m.value for m in at.markdown)
    assert "mallory" in cards and "](https://" not in cards and "](http" not in cards


def test_a_token_submit_goes_as_its_owner_with_the_groups_their_login_gave(portal: Portal) -> None:
    # Before: a token user had no groups, so API submits went to the default queue and erased the owner's groups,
    # the record a resubmission after an outage and the team channels read.
    signed_in = User("grace", groups=("team-b",))
    portal.jobs.submit(signed_in, {"name": "first", "script": "train_example.py", "epochs": 1})
    _view, secret = portal.tokens.create(signed_in, "notebook")
    by_token = portal.tokens.authenticate(secret)
    assert by_token is not None and by_token.groups == ("team-b",)
    portal.jobs.submit(by_token, {"name": "second", "script": "train_example.py", "epochs": 1})
    again = portal.tokens.authenticate(secret)
    assert again is not None and again.groups == ("team-b",)


def test_a_token_users_remembered_groups_route_their_job_but_open_no_hidden_team_nor_wider_priority(
        portal: Portal, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the groups remembered from grace's last sign-in counted as her IdP's word, so after leaving team-b her
    # token still showed its hidden jobs and gave her its wider priority limits.
    from services.priority_choice import allowed

    portal.jobs.teams.save(ADA, "team-b", source="identity", everyone_visible=False)
    hank = User("hank", groups=("team-b",))
    hanks = portal.jobs.submit(hank, {"name": "hidden", "script": "train_example.py", "epochs": 1})
    signed_in = User("grace", groups=("team-b",))
    portal.jobs.submit(signed_in, {"name": "first", "script": "train_example.py", "epochs": 1})
    _view, secret = portal.tokens.create(signed_in, "notebook")
    by_token = portal.tokens.authenticate(secret)
    assert by_token is not None and by_token.groups_remembered

    # Routing side: her token's job still goes to her team (its queue and channel follow).
    mine = portal.jobs.submit(by_token, {"name": "second", "script": "train_example.py", "epochs": 1})
    assert portal.jobs.get(by_token, mine).team == "team-b"
    # Visibility side: the hidden team's jobs are not hers to see through the token.
    listing = portal.jobs.listing(by_token, "all")
    seen = {j.id for j in portal.jobs.list_jobs(limit=100, owner=listing.owner, where=listing.where)}
    assert hanks not in seen and mine in seen
    signed = portal.jobs.listing(signed_in, "all")
    assert hanks in {j.id for j in portal.jobs.list_jobs(limit=100, owner=signed.owner, where=signed.where)}
    assert not portal.jobs.teams.may_see(by_token, "hank", "team-b")
    # Priorities: the group's wider entry is the signed-in grace's, not her token's.
    limits = {"group:team-b": ["low", "normal", "urgent"], "role:researcher": ["low", "normal"]}
    monkeypatch.setattr(portal.settings, "priority_limits", limits)
    assert allowed(portal.settings, signed_in)[0] == {"low", "normal", "urgent"}
    assert allowed(portal.settings, by_token)[0] == {"low", "normal"}
    # A remembered group may still narrow: an intern's token keeps the intern's limit.
    narrow = {"group:team-b": ["low"], "role:researcher": ["low", "normal"]}
    monkeypatch.setattr(portal.settings, "priority_limits", narrow)
    assert allowed(portal.settings, by_token)[0] == {"low"}
