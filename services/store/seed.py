"""Bulk-insert synthetic finished jobs (for benchmarks, demos and paging tests)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Engine, insert

from services.jobs import search_text
from services.models import GROUP_OF, JobStatus
from services.store.orm import Job, utcnow

BATCH = 5000
MIX = [JobStatus.SUCCEEDED] * 6 + [JobStatus.FAILED] * 2 + [JobStatus.STOPPED] + [JobStatus.RUNNING]
# A team's spread for varied=True: most runs on one GPU, some on none or on a node's worth.
GPU_MIX = [0, 1, 1, 1, 2, 4, 8]
TEMPLATE_MIX = [None, None, "bert-finetune", "resnet-sweep", "llm-lora", "diffusion"]


def seed_jobs(engine: Engine, n: int, owner: str | Sequence[str] = "researcher", *,
              status: JobStatus | None = None, seed: int = 0, varied: bool = False) -> None:
    """n finished (and some running) jobs of `owner` (or of owners drawn from a list). varied=True also
    spreads GPUs and templates, as a team's real history would."""
    rng = random.Random(seed)
    now = utcnow()
    rows = []
    for i in range(n):
        st = status or rng.choice(MIX)
        who = owner if isinstance(owner, str) else rng.choice(owner)
        gpus = rng.choice(GPU_MIX) if varied else 1
        template = rng.choice(TEMPLATE_MIX) if varied else None
        # Seeded history lies in the past: each job started a minute after the last and ran 30 minutes.
        created = now - timedelta(minutes=n - i + 30)
        lr = rng.choice([1e-4, 3e-4, 1e-3, 3e-3])
        name = f"exp-{i:07d}"
        loss = round(rng.uniform(0.05, 2.0), 4)
        request = {"name": name, "script": "train_example.py", "learning_rate": lr, "epochs": 10,
                   "batch_size": rng.choice([16, 32, 64]), "gpus": gpus, "nodes": 1, "max_runtime_hours": 8,
                   "template": template or ""}
        rows.append({
            "submission_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "owner": who, "name": name, "status": st.value, "status_group": GROUP_OF[st].value,
            "reason": "Exited with code 1" if st is JobStatus.FAILED else None,
            "backend": "local", "backend_ref": None,
            "request": request,
            "spec": None, "gpus": gpus, "nodes": 1, "cost_per_hour": 2.9 * max(gpus, 0.25), "template": template,
            "created_at": created, "started_at": created, "updated_at": created,
            "finished_at": None if st is JobStatus.RUNNING else created + timedelta(minutes=30),
            "epoch": 10, "total_epochs": 10, "progress": 1.0 if st is JobStatus.SUCCEEDED else 0.5,
            "latest_metrics": {"loss": loss}, "final_metrics": {} if st is JobStatus.RUNNING else {"loss": loss},
            "search_text": search_text(name, who, request, [], ""),
            "final_loss": None if st is JobStatus.RUNNING else loss,
            "cost": None if st is JobStatus.RUNNING else round(1.45 * max(gpus, 0.25), 4),
            "gpu_hours": None if st is JobStatus.RUNNING else 0.5 * gpus,
        })
        if len(rows) >= BATCH:
            _flush(engine, rows)
    _flush(engine, rows)


def _flush(engine: Engine, rows: list[dict]) -> None:
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(Job), rows)
        rows.clear()
