"""Teams on SQLite and PostgreSQL (real stores, real local jobs): which team a job belongs to, who sees it under
"My team" and "Everyone", who may stop it, and team templates."""

from __future__ import annotations

import pytest

from services.history import HistoryQuery
from services.models import Forbidden, JobStatus, NotFound, Role, User, ValidationProblem
from services.store.orm import Job
from services.store.seed import seed_jobs
from tests.conftest import run_to_end, wait_until

ADMIN = User("root", Role.ADMIN)
ALICE, BOB, EVE, CAROL = User("alice"), User("bob"), User("eve"), User("carol")
VERA = User("vera", Role.VIEWER)
LOOP = "import time\nfor i in range(600):\n    print(f'Epoch {i+1}/600', flush=True)\n    time.sleep(0.1)\n"


@pytest.fixture
def vision(any_portal):
    """A hidden admin-defined team: alice leads it, bob and eve are members; carol is in no team."""
    teams = any_portal.jobs.teams
    teams.save(ADMIN, "vision", everyone_visible=False)
    teams.set_member(ADMIN, "vision", "alice", lead=True)
    teams.set_member(ADMIN, "vision", "bob")
    teams.set_member(ADMIN, "vision", "eve")
    return any_portal


def seeded(p, owner: str, team: str | None) -> int:
    seed_jobs(p.jobs.sessions.kw["bind"], 1, owner=owner, status=JobStatus.SUCCEEDED, seed=hash(owner) % 100)
    with p.jobs.session() as s:
        job = s.query(Job).filter(Job.owner == owner).order_by(Job.id.desc()).first()
        job.team = team
        return job.id


def ids(p, user: User, scope: str) -> set[int]:
    listing = p.jobs.listing(user, scope)
    return {j.id for j in p.jobs.list_jobs(limit=100, owner=listing.owner, where=listing.where)}


def test_a_member_sees_a_teammates_job_under_my_team_and_a_hidden_team_is_kept_from_others(vision):
    p = vision
    bobs = seeded(p, "bob", "vision")
    carols = seeded(p, "carol", None)
    assert ids(p, ALICE, "team") == {bobs}
    assert ids(p, ALICE, "mine") == set()
    assert p.jobs.get(ALICE, bobs).team == "vision"
    assert sum(p.jobs.counts(**vars(p.jobs.listing(ALICE, "team"))).values()) == 1
    # carol is no member: under Everyone she sees her own and not vision's, and its id is "not found".
    assert ids(p, CAROL, "all") == {carols}
    assert sum(p.jobs.counts(**vars(p.jobs.listing(CAROL, "all"))).values()) == 1
    with pytest.raises(NotFound, match=f"Job {bobs} was not found"):
        p.jobs.get(CAROL, bobs)
    assert ids(p, CAROL, "team") == set()
    # The History says the same, page and totals.
    assert [j.id for j in p.history.page(CAROL, HistoryQuery())] == [carols]
    assert p.history.summary(CAROL, HistoryQuery()).jobs == 1
    assert [j.id for j in p.history.page(ALICE, HistoryQuery(scope="team"))] == [bobs]
    assert p.history.summary(ALICE, HistoryQuery(scope="team")).jobs == 1
    # Admins see everything; a team others may see is listed for them again.
    assert ids(p, ADMIN, "all") == {bobs, carols}
    p.jobs.teams.save(ADMIN, "vision", everyone_visible=True)
    assert ids(p, CAROL, "all") == {bobs, carols}
    assert p.jobs.get(CAROL, bobs).owner == "bob"


def test_a_job_belongs_to_one_of_its_submitters_teams(vision, monkeypatch):
    p = vision
    first = p.jobs.submit(BOB, {"name": "default-team", "script": "train_example.py", "epochs": 1})
    assert p.jobs.get(BOB, first).team == "vision"
    with pytest.raises(ValidationProblem) as refused:
        p.jobs.submit(CAROL, {"name": "not-mine", "script": "train_example.py", "team": "vision"})
    assert refused.value.problems == {"team": "You are not in the team 'vision'; your teams: none."}
    # An identity group is a team too (first, as the identity lists it), unless PORTAL_TEAM_GROUPS leaves it out.
    dora = User("dora", groups=("nlp", "staff"))
    assert [t.name for t in p.jobs.teams.teams_of(dora)] == ["nlp", "staff"]
    chosen = p.jobs.submit(dora, {"name": "nlp-run", "script": "train_example.py", "epochs": 1, "team": "staff"})
    assert p.jobs.get(dora, chosen).team == "staff"
    p.jobs.teams.settings.team_groups = "nlp|vision"
    assert [t.name for t in p.jobs.teams.teams_of(dora)] == ["nlp"]
    with pytest.raises(ValidationProblem, match="You are not in the team 'staff'; your teams: nlp"):
        p.jobs.validate({"name": "x", "script": "train_example.py", "team": "staff"}, dora)
    # A clone keeps the team, a retry too; a cloner from outside the team gets their own.
    run_to_end(p, BOB, first)
    assert p.jobs.clone_values(ALICE, first)["team"] == "vision"
    retried = p.jobs.retry(BOB, first)
    assert p.jobs.get(BOB, retried).team == "vision"
    assert "team" not in p.jobs.clone_values(ADMIN, first)


def test_a_lead_stops_a_members_job_and_a_member_may_not(vision):
    p = vision
    (p.settings.workspace_dir / "loop.py").write_text(LOOP)
    job_id = p.jobs.submit(BOB, {"name": "long-run", "script": "loop.py"})
    wait_until(lambda: p.sync.tick() or p.jobs.get(BOB, job_id).status is JobStatus.RUNNING, timeout=60)
    with pytest.raises(Forbidden, match=r"^Only bob or a lead of the team vision may stop job long-run\.$"):
        p.jobs.stop(EVE, job_id)
    with pytest.raises(NotFound):  # no member of a hidden team: not even there
        p.jobs.stop(CAROL, job_id)
    assert p.jobs.teams.is_lead(ALICE, "vision") and p.jobs.teams.leads("vision") == ["alice"]
    assert p.jobs.teams.members("vision") == ["alice", "bob", "eve"]
    p.jobs.stop(ALICE, job_id)
    assert run_to_end(p, BOB, job_id).status is JobStatus.STOPPED
    assert any("Stop requested by alice" in e[2] for e in p.jobs.events(job_id))


def test_team_templates_are_shared_with_the_team_only(vision):
    p = vision
    p.templates.save(BOB, "vision-preset", {"epochs": 3}, team="vision")
    p.templates.save(CAROL, "for-all", {"epochs": 4})
    assert [t.name for t in p.templates.list(ALICE)] == ["for-all", "vision-preset"]
    assert [t.name for t in p.templates.list(CAROL)] == ["for-all"]
    with pytest.raises(NotFound):
        p.templates.get_by_name("vision-preset", CAROL)
    with pytest.raises(ValidationProblem, match="You are not in the team 'vision'"):
        p.templates.save(CAROL, "sneaky", {"epochs": 1}, team="vision")
    assert p.templates.get_by_name("vision-preset", ALICE).values == {"epochs": 3}


def test_only_admins_define_teams(vision):
    with pytest.raises(Forbidden, match="Only an admin may define teams"):
        vision.jobs.teams.save(ALICE, "mine")
    with pytest.raises(ValidationProblem, match="Kueue LocalQueue name"):
        vision.jobs.teams.save(ADMIN, "vision", default_queue="Not A Queue")
    assert vision.jobs.teams.save(ADMIN, "vision", default_queue="vision-q", everyone_visible=False).default_queue \
        == "vision-q"
    assert vision.jobs.teams.queue_of("vision") == "vision-q"
    # A viewer reads every job but a hidden team's: admins only.
    assert not vision.jobs.teams.may_see(VERA, "bob", "vision")


def test_a_sweeps_trials_belong_to_the_team_of_its_base(any_portal):
    from tests.test_sweeps import SCRIPT, drive, spec, sweep_jobs

    p = any_portal
    (p.settings.workspace_dir / "lr_sweep.py").write_text(SCRIPT)
    dora = User("dora", groups=("nlp", "staff"))
    sweep = p.sweeps.create(dora, spec(method="grid", budget=2, parallel=2, base={"team": "staff"}, params={
        "learning_rate": {"kind": "list", "values": [0.01, 0.1]}}))
    drive(p, dora, sweep.id)
    assert [j.team for j in sweep_jobs(p, sweep.id)] == ["staff", "staff"]


def test_a_sign_in_group_named_like_an_admin_defined_team_does_not_make_its_holder_a_member(vision):
    # Before: mallory's IdP group "vision" made her a member of the admin's hidden team, its jobs hers to see.
    p = vision
    bobs = seeded(p, "bob", "vision")
    mallory = User("mallory", groups=("vision", "staff"))
    assert p.jobs.teams.team_names(mallory) == ["staff"]
    assert bobs not in ids(p, mallory, "all") and ids(p, mallory, "team") == set()
    assert not p.jobs.teams.may_see(mallory, "bob", "vision")
    with pytest.raises(ValidationProblem, match="You are not in the team 'vision'"):
        p.jobs.validate({"name": "x", "script": "train_example.py", "team": "vision"}, mallory)
    # On the admin's list she is in, whatever her groups say.
    p.jobs.teams.set_member(ADMIN, "vision", "mallory")
    assert p.jobs.teams.team_names(mallory) == ["vision", "staff"]
    assert bobs in ids(p, mallory, "all")


def test_history_shows_teammates_jobs_where_others_jobs_are_hidden(vision, monkeypatch):
    # Before: with PORTAL_SHOW_OTHERS_JOBS=false the History's "My team" and "Everyone" held only one's own jobs.
    p = vision
    monkeypatch.setattr(p.settings, "show_others_jobs", False)
    bobs, alices, carols = seeded(p, "bob", "vision"), seeded(p, "alice", "vision"), seeded(p, "carol", None)
    for scope in ("team", "all"):
        assert {j.id for j in p.history.page(ALICE, HistoryQuery(scope=scope))} == {bobs, alices}
        assert p.history.summary(ALICE, HistoryQuery(scope=scope)).jobs == 2
    assert [j.id for j in p.history.page(ALICE, HistoryQuery(scope="mine"))] == [alices]
    assert [j.id for j in p.history.page(CAROL, HistoryQuery(scope="all"))] == [carols]
    assert p.history.summary(CAROL, HistoryQuery()).jobs == 1
    assert {j.id for j in p.history.page(ADMIN, HistoryQuery())} == {bobs, alices, carols}


def test_team_counts_are_read_from_the_team_index_alone(vision):
    """The dashboard's counts under "My team" (and the hidden teams' under "Everyone") on each 2 s refresh: before,
    (team, id) led to every row of the team's jobs to read its status group."""
    from sqlalchemy import event, text

    p = vision
    engine = p.jobs.sessions.kw["bind"]
    seed_jobs(engine, 3, owner="bob", status=JobStatus.SUCCEEDED, seed=7)
    seed_jobs(engine, 3, owner="dan", status=JobStatus.FAILED, seed=8)
    with p.jobs.session() as s:
        for job in s.query(Job).filter(Job.owner == "bob"):
            job.team = "vision"
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "count(" in statement.lower() and "jobs.team" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        assert sum(p.jobs.counts(**vars(p.jobs.listing(ALICE, "team"))).values()) == 3
        assert sum(p.jobs.counts(**vars(p.jobs.listing(CAROL, "all"))).values()) == 3
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    assert len(seen) == 2
    with engine.connect() as conn:
        for statement, parameters in seen:
            if engine.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
                assert "COVERING INDEX ix_jobs_team_group" in plan, plan
            else:  # a few rows: the planner would read the table; the question is whether the index serves alone
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters))
                assert "Index Only Scan using ix_jobs_team_group" in plan, plan


def test_a_sign_in_group_too_long_for_a_team_name_is_no_team_and_its_holder_can_still_submit(any_portal):
    # An LDAP DN as a group was offered as the job's team; on PostgreSQL jobs.team (100) refused the insert.
    dn = "cn=ml-researchers,ou=groups,ou=research,ou=departments,dc=corp,dc=example,dc=com,o=example-holdings-intl"
    assert len(dn) > 100
    frank = User("frank", groups=(dn, "nlp"))
    assert [t.name for t in any_portal.jobs.teams.teams_of(frank)] == ["nlp"]
    job = any_portal.jobs.submit(frank, {"name": "ldap-run", "script": "train_example.py", "epochs": 1})
    assert any_portal.jobs.get(frank, job).team == "nlp"
