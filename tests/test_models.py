import pytest

from services.jobs import parse_request
from services.models import JobRequest, ValidationProblem, format_hours, split_args

GOOD = {"name": "gpt-finetune-v2", "script": "train.py"}


def problems(**overrides):
    with pytest.raises(ValidationProblem) as exc:
        parse_request(GOOD | overrides)
    return exc.value.problems


def test_defaults_are_a_valid_request():
    req = parse_request(GOOD)
    assert (req.learning_rate, req.epochs, req.batch_size, req.gpus, req.nodes) == (0.001, 10, 32, 0, 1)


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name_is_refused(name):
    assert "name" in problems(name=name)


def test_too_long_name_is_refused():
    assert "at most 63" in problems(name="a" * 64)["name"]


@pytest.mark.parametrize("name", ["GPT", "my run", "-lead", "trail-", "under_score", "dot.ted"])
def test_name_kubernetes_would_reject_is_explained(name):
    assert "lower-case letters, digits and '-'" in problems(name=name)["name"]


@pytest.mark.parametrize("field", ["learning_rate", "epochs", "batch_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_numbers_are_refused(field, value):
    assert problems(**{field: value})[field] == "must be greater than 0"


def test_script_must_be_python_and_inside_workspace():
    assert "Python file" in problems(script="train.sh")["script"]
    assert "inside the workspace" in problems(script="../etc/x.py")["script"]
    assert "inside the workspace" in problems(script="/etc/x.py")["script"]


def test_extra_args_are_split_like_a_shell_but_never_run_by_one():
    req = JobRequest(**GOOD, extra_args="--seed 42 --note 'two words' ; rm -rf /")
    assert req.extra_argv() == ["--seed", "42", "--note", "two words", ";", "rm", "-rf", "/"]
    assert "cannot split" in problems(extra_args="--note 'unbalanced")["extra_args"]
    with pytest.raises(ValueError):
        split_args(" ".join(["x"] * 101))


def test_checkpoint_interval_cannot_exceed_epochs():
    assert "checkpoint_every" in problems(epochs=5, checkpoint_every=6)


def test_unknown_fields_are_refused():
    assert "hack" in problems(hack=1)


def test_format_hours():
    assert format_hours(8) == "8 h"
    assert format_hours(1.5) == "1.5 h"
    assert format_hours(0.5) == "30 min"
    assert format_hours(0.001) == "4 s"
