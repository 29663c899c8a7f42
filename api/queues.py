"""GET /api/v1/queues: each queue's GPUs, its running jobs and its waiting jobs in the order they start."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.common import endpoint, jobs
from services import queues
from services.models import User


@endpoint()
def list_queues(request: Request, user: User) -> dict[str, Any]:
    return {"queues": [view.to_json() for view in queues.queue_views(jobs(), user)]}


ROUTES = [Route("/api/v1/queues", list_queues, methods=["GET"])]
