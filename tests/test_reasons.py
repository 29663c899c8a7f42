import signal

from services.reasons import failure_reason


def test_exit_code():
    assert failure_reason(2, None, "usage: train.py") == "Exited with code 2"


def test_cuda_oom_from_log_tail():
    tail = "Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert failure_reason(1, None, tail) == "Out of GPU memory"


def test_oom_killer():
    assert failure_reason(None, signal.SIGKILL, "") == "Killed: out of memory"
    assert failure_reason(137, None, "") == "Killed: out of memory"


def test_max_runtime():
    assert failure_reason(None, signal.SIGTERM, "", timed_out_hours=8) == "Hit max runtime (8 h)"


def test_python_exception_line_is_the_reason():
    tail = 'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: bad shape (3, 4)\n'
    assert failure_reason(1, None, tail) == "Exited with code 1: ValueError: bad shape (3, 4)"
