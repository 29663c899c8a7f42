import os

import pytest

from services.models import NotFound, ValidationProblem
from services.workspace import confined, sanitize_filename, save_upload, seed_workspace


def test_first_start_puts_the_example_in_the_workspace(tmp_path):
    seed_workspace(tmp_path / "ws")
    assert (tmp_path / "ws" / "train_example.py").is_file()
    (tmp_path / "ws" / "train_example.py").unlink()
    seed_workspace(tmp_path / "ws")  # a user who deleted it is not overruled on the next start
    assert not (tmp_path / "ws" / "train_example.py").exists()


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "", "a\x00b"])
def test_paths_cannot_escape(tmp_path, bad):
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError):
        confined(tmp_path, bad)


def test_symlinks_out_are_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "link")
    with pytest.raises(FileNotFoundError):
        confined(root, "link")


def test_upload_rules(tmp_path):
    ws = tmp_path / "ws"
    with pytest.raises(ValidationProblem, match="not a Python file"):
        save_upload(ws, "notes.txt", b"hello", 1000)
    with pytest.raises(ValidationProblem, match="limit is"):
        save_upload(ws, "big.py", b"x = 1\n" * 1000, 1000)
    with pytest.raises(ValidationProblem, match="not valid Python"):
        save_upload(ws, "broken.py", b"def (:\n", 1000)
    first = save_upload(ws, "../../My Train!.py", b"print(1)\n", 1000)
    assert first == "uploads/My-Train.py"
    assert save_upload(ws, "My Train!.py", b"print(1)\n", 1000) == first  # same content: same file
    assert save_upload(ws, "My Train!.py", b"print(2)\n", 1000) == "uploads/My-Train--2.py"
    assert sanitize_filename("..\\..\\evil.PY") == "evil.py"


def test_output_file_download_is_confined(portal, user):
    job_id = portal.jobs.submit(user, {"name": "f", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    from tests.conftest import run_to_end

    run_to_end(portal, user, job_id)
    fd, name = portal.jobs.open_output_file(user, job_id, "model.json")
    os.close(fd)
    assert name == "model.json"
    for bad in ["../job.log", "../../portal.db", "/etc/passwd", "nope.txt", "a/../../job.log", ""]:
        with pytest.raises(NotFound):
            portal.jobs.open_output_file(user, job_id, bad)


@pytest.mark.parametrize("source", [b"-" * 1_000_000 + b"1", b"1" + b"+1" * 2_000_000, b"\xff\xfe not utf-8"])
def test_an_upload_python_cannot_parse_is_refused_with_a_sentence(tmp_path, source):
    # The parser gives up on these with MemoryError / RecursionError, not SyntaxError: still the uploader's file.
    with pytest.raises(ValidationProblem, match="not valid Python"):
        save_upload(tmp_path / "ws", "deep.py", source, 10_000_000)


def test_a_long_listing_is_the_first_thousand_files_in_natural_order(tmp_path):
    from services.workspace import MAX_LISTED_FILES, list_files

    for n in range(2000):  # in byte order epoch5.pt comes after epoch1999.pt: a cut in that order lost it
        (tmp_path / f"epoch{n}.pt").write_bytes(b"w")
    listed = [f.path for f in list_files(tmp_path)]
    assert listed == [f"epoch{n}.pt" for n in range(MAX_LISTED_FILES)]


def test_a_git_folder_in_the_workspace_does_not_push_your_scripts_out_of_the_listing(portal, user):
    ws = portal.jobs.workspace
    own = ws.own_dir(user)
    (own / ".git" / "objects").mkdir(parents=True)
    for n in range(1100):
        (own / ".git" / "objects" / f"{n:04x}").write_bytes(b"o")
    (own / "train_v2.py").write_text("print(1)\n")
    paths = [f.path for f in ws.files(user)]
    assert "train_v2.py" in paths and not [p for p in paths if p.startswith(".")]


def test_has_files_is_right_for_empty_nested_and_linked_output(tmp_path):
    from services.workspace import has_files

    out = tmp_path / "output"
    out.mkdir()
    (out / "empty-folder").mkdir()
    assert not has_files(out)
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    (out / "link.txt").symlink_to(outside)  # a link the job made is not a file it wrote
    (out / "linked-folder").symlink_to(tmp_path)
    os.link(outside, out / "hard.txt")  # nor is a hard link to someone else's file
    assert not has_files(out)
    (out / "empty-folder" / "deep").mkdir()
    (out / "empty-folder" / "deep" / "model.bin").write_bytes(b"w")
    assert has_files(out)
    assert not has_files(tmp_path / "missing")


def test_has_files_stops_at_the_first_file(tmp_path, monkeypatch):
    from services import safe_files
    from services.workspace import has_files

    out = tmp_path / "output"
    (out / "checkpoints").mkdir(parents=True)
    for n in range(5000):
        (out / "checkpoints" / f"step{n}.pt").write_bytes(b"w")
    calls = []
    real_stat = os.stat

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(safe_files.os, "stat", counted)
    assert has_files(out)
    monkeypatch.undo()
    assert len(calls) <= 2, f"{len(calls)} names stat-ed for one card"  # was every one of the 5,000


def test_an_upload_named_like_a_version_is_not_taken_for_one(tmp_path):
    """`submit_job(script="train.py")` runs the newest train.py; a script the user named train-2.py is another one."""
    from services.config import Settings
    from services.models import User
    from services.portal import build_portal
    from services.script_names import save_upload as upload
    from services.script_names import script_path

    portal = build_portal(Settings(data_dir=tmp_path / "data", auth_mode="proxy", backend="local"))
    try:
        ws, ada = portal.jobs.workspace, User("ada")
        assert upload(ws, ada, "train.py", b"print('v1')\n") == "uploads/train.py"
        assert upload(ws, ada, "train-2.py", b"print('another script')\n") == "uploads/train-2.py"
        assert script_path(ws, ada, "train.py") == "uploads/train.py"
        second = upload(ws, ada, "train.py", b"print('v2')\n")
        assert second == "uploads/train--2.py" and script_path(ws, ada, "train.py") == second
        assert script_path(ws, ada, "train-2.py") == "uploads/train-2.py"
        assert sanitize_filename("a -- b.py") == "a-b.py"  # so no user's name reads as a version
    finally:
        portal.close()
