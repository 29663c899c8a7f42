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
    assert save_upload(ws, "My Train!.py", b"print(2)\n", 1000) == "uploads/My-Train-2.py"
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
