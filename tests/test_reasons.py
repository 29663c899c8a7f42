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


def test_nan_or_inf_loss_is_the_reason():
    assert failure_reason(1, None, "Epoch 3/10 loss=nan\n") == "Exited with code 1: Loss became NaN"
    assert failure_reason(1, None, "{'loss': inf, 'epoch': 2.0}\n") == "Exited with code 1: Loss became infinite"
    tail = ("Epoch 2/5 train_loss: nan\nTraceback (most recent call last):\n  File \"t.py\", line 9\n"
            "RuntimeError: Function 'MseLossBackward0' returned nan values in its 0th output.\n")
    assert failure_reason(1, None, tail) == ("Exited with code 1: Loss became NaN (RuntimeError: Function "
                                             "'MseLossBackward0' returned nan values in its 0th output.)")
    assert failure_reason(1, None, "loss=0.5 lr=nan\n") == "Exited with code 1"


def test_nccl_error_is_the_reason():
    tail = "RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1207, unhandled system error\nNCCL Error 2: x\n"
    assert "NCCL" in failure_reason(1, None, tail)


def test_admin_patterns_come_first():
    import re

    patterns = [(re.compile(r"Dataset shard \d+ missing"), "Dataset incomplete (ask the data team)")]
    tail = "Traceback (most recent call last):\nFileNotFoundError: Dataset shard 7 missing\n"
    reason = failure_reason(1, None, tail, patterns=patterns)
    assert reason == "Exited with code 1: Dataset incomplete (ask the data team)"
