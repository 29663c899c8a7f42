"""Metric names as the store keeps them, on SQLite and PostgreSQL alike (fixture database_url): metric_points.name
is VARCHAR(64) and the chart cache's per-rank entries ("name" + RANK_SEP + rank) are VARCHAR(80)."""

from __future__ import annotations

from services.auth import local_user
from tests.conftest import run_to_end

KEY = "gpu_memory_reserved_by_the_caching_allocator_on_device_zero_mb"  # 62 characters


def test_a_long_key_printed_with_a_unit_does_not_cost_the_job_its_loss(any_portal):
    """`KEY=3.2GB` is a 67-character name with its unit unless capped: PostgreSQL refused the whole chunk (the
    loss with it) and the sync loop retried it every tick."""
    assert len(KEY) == 62
    me = local_user(any_portal.settings)
    (any_portal.settings.workspace_dir / "long_key.py").write_text(
        f"print('Epoch 1/2 {KEY}=3.2GB loss=1.0')\n"
        f"print('[default1]:Epoch 1/2 {KEY}=3.1GB loss=2.0')\n"
        f"print('[default1]:Epoch 2/2 {KEY}=3.3GB loss=1.5')\n"
        f"print('Epoch 2/2 {KEY}=3.4GB loss=0.5')\n")
    job_id = any_portal.jobs.submit(me, {"name": "long-key", "script": "long_key.py", "epochs": 2})
    run_to_end(any_portal, me, job_id)
    any_portal.jobs.refresh_series(min_age_seconds=0, limit=100)
    series = any_portal.jobs.metric_series(job_id)
    assert series["loss"].y.tolist() == [1.0, 0.5]
    [mem] = [name for name in series if name.endswith(" (GB)")]
    assert len(mem) == 64 and series[mem].y.tolist() == [3.2, 3.4]
    ranks = any_portal.jobs.rank_series(job_id, [0, 1])
    assert ranks["loss"][1].y.tolist() == [2.0, 1.5] and ranks[mem][1].y.tolist() == [3.1, 3.3]
