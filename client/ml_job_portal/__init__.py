"""Python client for the ML Job Portal REST API.

    from ml_job_portal import JobClient
    client = JobClient(cluster_url="http://127.0.0.1:8501", token="...")
    job = client.submit_job(name="gpt-finetune-v3", script="train_example.py", epochs=3)
    for line in job.stream_logs():
        print(line)
    print(job.wait().get_results().final_loss)
"""

from ml_job_portal.client import JobClient
from ml_job_portal.errors import (
    AuthenticationError,
    ConflictError,
    JobFailed,
    NotFoundError,
    PermissionDenied,
    PortalConnectionError,
    PortalError,
    ServerError,
    ValidationError,
)
from ml_job_portal.jobs import Job, JobResults
from ml_job_portal.sweeps import Sweep, int_range, loguniform, uniform

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "Job",
    "JobClient",
    "JobFailed",
    "JobResults",
    "NotFoundError",
    "PermissionDenied",
    "PortalConnectionError",
    "PortalError",
    "ServerError",
    "Sweep",
    "ValidationError",
    "__version__",
    "int_range",
    "loguniform",
    "uniform",
]
