"""Kueue's own words for a waiting Workload (the messages as Kueue 0.19 writes them, from
pkg/scheduler/flavorassigner and pkg/scheduler/preemption) turned into what a researcher reads. No cluster needed:
the control-plane tests (test_kueue.py) check the common cases against a real Kueue."""

from __future__ import annotations

import pytest

from services.backends.k8s_kueue import PREEMPTED, blocker


def workload(*conditions: dict) -> dict:
    return {"metadata": {"name": "job-mlp-1-abcde"}, "status": {"conditions": list(conditions)}}


def pending(message: str) -> dict:
    return {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": message}


@pytest.mark.parametrize("message,quota,expected", [
    ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor h100, "
     "4 more needed", 8, "team-a's quota of 8 GPUs is in use; 4 more needed"),
    ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor h100, "
     "2 more needed", None, "team-a's GPU quota is in use; 2 more needed"),
    ("couldn't assign flavors to pod set main: insufficient unused quota for memory in flavor h100, 16Gi more needed",
     8, "team-a's memory quota is in use; 16Gi more needed"),
    ("couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in flavor h100, previously "
     "considered podsets requests (0) + current podset request (12) > maximum capacity (8)", 8,
     "It asks for more GPUs than team-a's whole quota (8): it cannot start in this queue"),
    ("ClusterQueue team-a is inactive", 8, "The queue team-a is not active; ask your admin"),
    ("something Kueue says that the portal does not know", 8,
     "Waiting in team-a's queue: something Kueue says that the portal does not know"),
])
def test_kueue_messages_read_as_sentences(message: str, quota: int | None, expected: str) -> None:
    assert blocker(workload(pending(message)), "team-a", quota) == expected


def test_a_workload_not_yet_tried_waits_its_turn() -> None:
    assert blocker(workload(), "team-a", 8) == "Waiting for its turn in team-a's queue"


def test_a_preempted_workload_says_so_rather_than_its_quota_message() -> None:
    evicted = {"type": "Evicted", "status": "True", "reason": "Preempted",
               "message": "Preempted to accommodate a workload (UID: 1, JobUID: 2) due to prioritization in the "
                          "ClusterQueue; preemptor path: /team-a; preemptee path: /team-a"}
    quota = pending("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in "
                    "flavor h100, 4 more needed")
    assert blocker(workload(quota, evicted), "team-a", 8) == PREEMPTED
