"""Who the user is in each identity mode, and that identity headers count only in proxy mode."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.auth import (
    BOUND_LINK_SECONDS,
    UNBOUND_LINK_SECONDS,
    LinkRefused,
    bind_problem,
    current_user,
    may_act,
    may_download,
    may_see,
    open_link,
    sign_link,
)
from services.config import Settings
from services.models import Role, User
from tests.conftest import ROOT

HEADERS = {"X-Forwarded-User": "alice", "X-Forwarded-Email": "alice@example.org",
           "X-Forwarded-Groups": "ml-admins,research"}


def settings(tmp_path, **values) -> Settings:
    return Settings(data_dir=tmp_path, **values)


def test_single_mode_is_the_local_user_and_ignores_headers(tmp_path):
    user = current_user(settings(tmp_path, single_user="me"), HEADERS)
    assert user == User(name="me", role=Role.ADMIN)


def test_proxy_mode_takes_user_email_and_groups_from_the_proxy(tmp_path):
    s = settings(tmp_path, auth_mode="proxy", admins=["group:ml-admins"], viewers=["vera"])
    alice = current_user(s, HEADERS)
    assert (alice.name, alice.email, alice.groups, alice.role) == (
        "alice", "alice@example.org", ("ml-admins", "research"), Role.ADMIN)
    assert current_user(s, {"x-forwarded-user": "vera"}).role is Role.VIEWER  # header names ignore case
    assert current_user(s, {"X-Forwarded-User": "bob"}).role is Role.RESEARCHER
    assert current_user(s, {}) is None, "no proxy header: nobody is signed in"
    assert current_user(s, {"X-Forwarded-User": "bad\nname"}) is None
    assert current_user(s, {"X-Forwarded-User": "group:ml-admins"}) is None, "a group is not a user"


def test_proxy_groups_are_ignored_when_the_proxy_sends_none(tmp_path):
    # OpenShift's oauth-proxy sends no groups header: one typed by a user must not make them an admin.
    s = settings(tmp_path, auth_mode="proxy", admins=["group:ml-admins"], proxy_groups_header="")
    assert current_user(s, HEADERS).role is Role.RESEARCHER


def test_oidc_mode_uses_the_login_and_ignores_headers(tmp_path):
    s = settings(tmp_path, auth_mode="oidc", viewers=["lead@example.org"])
    assert current_user(s, HEADERS) is None
    assert current_user(s, HEADERS, {"is_logged_in": False}) is None
    lead = current_user(s, HEADERS, {"is_logged_in": True, "email": "lead@example.org", "sub": "123",
                                     "preferred_username": "admin"})
    assert lead.name == "lead@example.org" and lead.role is Role.VIEWER, "never the editable preferred_username"
    unverified = current_user(s, {}, {"is_logged_in": True, "email": "lead@example.org", "email_verified": False,
                                      "sub": "abc-123"})
    assert unverified.name == "abc-123"


def test_settings_take_comma_separated_lists_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PORTAL_ADMINS", "ada, group:ops")
    monkeypatch.setenv("PORTAL_AUTH_MODE", "proxy")
    s = Settings(data_dir=tmp_path)
    assert s.admins == ["ada", "group:ops"] and s.auth_mode == "proxy"


def test_permissions_by_role(tmp_path):
    s = settings(tmp_path)
    bob, vera, ada = User("bob"), User("vera", Role.VIEWER), User("ada", Role.ADMIN)
    assert may_act(bob, "bob") and not may_act(bob, "alice") and not may_act(vera, "alice") and may_act(ada, "alice")
    assert not may_download(bob, "alice") and may_download(vera, "alice") and may_download(ada, "alice")
    assert may_see(s, bob, "alice")
    hidden = settings(tmp_path, show_others_jobs=False)
    assert not may_see(hidden, bob, "alice") and may_see(hidden, vera, "alice") and may_see(hidden, bob, "bob")


def test_download_links_are_signed_and_expire(tmp_path):
    s = settings(tmp_path)
    token = sign_link(s, User("bob"), job=3, kind="log")
    assert open_link(s, token, None) == (User("bob"), {"job": 3, "kind": "log"})
    # The role is the settings' now, not what it was when the link was made.
    promoted = settings(tmp_path, viewers=["bob"])
    assert open_link(promoted, token, None)[0].role is Role.VIEWER
    # Change a character in the middle of the signature (the last one may only carry padding bits).
    cut = len(token) - 10
    with pytest.raises(LinkRefused, match="not valid or has expired"):
        open_link(s, token[:cut] + ("A" if token[cut] != "A" else "B") + token[cut + 1:], None)
    with pytest.raises(LinkRefused):
        open_link(settings(tmp_path / "other"), token, None)  # another portal's key does not open it
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0


def _signed_ago(s: Settings, seconds: float, monkeypatch, user: str = "bob") -> str:
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() - seconds)
    token = sign_link(s, User(user), job=3, kind="log")
    monkeypatch.setattr(itsdangerous.timed.time, "time", real)
    return token


def test_links_without_an_identity_on_the_request_are_short_lived(tmp_path, monkeypatch):
    s = settings(tmp_path, auth_mode="single")
    assert open_link(s, _signed_ago(s, UNBOUND_LINK_SECONDS - 30, monkeypatch), None)[0].name == "bob"
    with pytest.raises(LinkRefused, match="expired"):
        open_link(s, _signed_ago(s, UNBOUND_LINK_SECONDS + 30, monkeypatch), None)


@pytest.mark.parametrize("mode", ["proxy", "oidc"])
def test_links_are_bound_to_the_user_who_follows_them_where_the_request_says(tmp_path, monkeypatch, mode):
    s = settings(tmp_path, auth_mode=mode)
    token = _signed_ago(s, 3600, monkeypatch)  # an hour old: fine for its own user
    assert open_link(s, token, User("bob"))[0].name == "bob"
    with pytest.raises(LinkRefused, match="made for another user"):
        open_link(s, token, User("mallory"))
    with pytest.raises(LinkRefused, match="Sign in"):
        open_link(s, token, None)
    with pytest.raises(LinkRefused, match="expired"):
        open_link(s, _signed_ago(s, BOUND_LINK_SECONDS + 60, monkeypatch), User("bob"))


@pytest.mark.parametrize("address,refused", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                             ("0.0.0.0", True), ("", True), ("10.1.2.3", True)])
def test_single_and_proxy_modes_refuse_a_non_loopback_address(tmp_path, address, refused):
    assert bool(bind_problem(settings(tmp_path), address)) is refused
    # In proxy mode a portal reachable around the proxy would believe anyone's X-Forwarded-User.
    assert bool(bind_problem(settings(tmp_path, auth_mode="proxy"), address)) is refused
    assert bind_problem(settings(tmp_path, allow_insecure_bind=True), address) is None
    assert bind_problem(settings(tmp_path, auth_mode="oidc"), address) is None


def test_the_portal_does_not_start_in_single_mode_on_every_address(tmp_path):
    # Loads the app the way `streamlit run` does, with server.address set, without opening a socket.
    code = ("from streamlit import config; config.set_option('server.address', '0.0.0.0'); import runpy; "
            "runpy.run_path('portal_app.py', run_name='portal_app')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PORTAL_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode != 0 and "Refusing to listen on 0.0.0.0 in single-user mode" in out.stderr
