"""The settings of what jobs cost and of the budgets that limit them (services/costs.py, services/budgets.py): a part
of `Settings` (services/config.py), which takes its env prefix and file sources."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings


class CostSettings(BaseSettings):
    currency: str = "$"
    gpu_price_per_hour: float = Field(default=2.50, ge=0, description="Price of one GPU for one hour.")
    node_price_per_hour: float = Field(
        default=0.40, ge=0, description="Price of one node's CPU and memory for one hour."
    )
    prices: list[dict[str, Any]] = Field(
        default_factory=list, description="Prices seeded under the admin's own (services/costs.py), e.g. "
        '[{"gpu_type": "a100", "gpu_hour": 3.2, "node_hour": 0.5, "effective_from": "2026-01-01"}] or '
        '{"node": "gpu-7", ...}.',
    )
    budget_stops_running: bool = Field(
        default=False, description="A budget spent to 100 % also stops its team's or user's running jobs. False: "
        "they keep running; only new jobs are held back.",
    )
    budget_holds_kueue_queues: bool = Field(
        default=False, description="With Kueue: a team's budget that says 'wait' at its limit, once spent, holds "
        "the team's ClusterQueue (stopPolicy Hold) until it is raised or the month turns. Needs the ClusterRole of "
        "manifests/components/kueue-budget-hold (ClusterQueues are cluster-scoped).",
    )
    default_gpu_type: str = Field(
        default="gpu", description="The GPU type a cluster job is priced as when its node says none "
        "(the local backend's is 'local').",
    )
    gpu_type_node_label: str = Field(
        default="nvidia.com/gpu.product", max_length=317, description="The node label whose value is the GPU "
        "type of the pods on that node (NVIDIA GPU feature discovery's); it wins over the Kueue flavor. Empty: "
        "nodes are not read. Needs manifests/components/node-gpu-types (get on nodes).",
    )

    def cost_per_hour(self, gpus: int, nodes: int) -> float:
        return round(nodes * (self.node_price_per_hour + gpus * self.gpu_price_per_hour), 2)
