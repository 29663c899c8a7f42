"""Model registrations' talk with MLflow, in a long-lived child process of the portal (services/registry_worker.py)
that loads MLflow's client once: one JSON line per registration on stdin, {"plan": ..., "login": {...}}, answered by
one JSON line on stdout: {"ok": true, "run_id", "version", "model_url"} or {"error": sentence, "transient": bool}.
The login (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, as MLflow's client reads
them at each request) is set in this process's environment for that registration only: never in the portal's.

Idempotent by the registration's id, tagged on the run and the version: a version tagged with it is the answer (its
alias set again); a run tagged with it is reused (its files uploaded again over the same names); only then is
anything made. So a portal killed anywhere in here makes no second version when it runs the registration again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any
from urllib.parse import quote

TAG = "portal.registration"
# MLflow's error codes for what trying again does not change (a login refused, a bad name, no permission).
PERMANENT = {"INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_DOES_NOT_EXIST",
             "BAD_REQUEST", "INVALID_STATE", "FEATURE_DISABLED"}


def register(plan: dict[str, Any]) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    uri, key, name = plan["tracking_uri"], plan["key"], plan["model_name"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = [v for v in client.search_model_versions(f"tags.`{TAG}` = '{key}'") if v.name == name]
    if found:
        version, run_id = found[0].version, found[0].run_id
    else:
        run_id = _run(client, plan, Metric, Param, RunTag)
        try:
            client.create_registered_model(name, description=plan["description"])
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name, f"runs:/{run_id}/{plan['artifact_path']}", run_id=run_id,
                                              tags={**plan["tags"]}, description=plan["description"]).version
    if plan.get("alias"):
        client.set_registered_model_alias(name, plan["alias"], version)
    return {"ok": True, "run_id": run_id, "version": str(version),
            "model_url": f"{uri.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"}


def _run(client: Any, plan: dict[str, Any], metric: Any, param: Any, run_tag: Any) -> str:
    """The run that holds the files, params and metrics: the one an earlier attempt made, else a new one."""
    experiment = client.get_experiment_by_name(plan["experiment"])
    exp_id = experiment.experiment_id if experiment is not None else client.create_experiment(plan["experiment"])
    earlier = client.search_runs([exp_id], f"tags.`{TAG}` = '{plan['key']}'", max_results=1)
    if earlier:
        run_id = earlier[0].info.run_id
    else:
        tags = {**plan["tags"], "mlflow.runName": plan["run_name"], "mlflow.user": plan["tags"]["portal.owner"],
                "mlflow.note.content": plan["description"]}
        run_id = client.create_run(exp_id, run_name=plan["run_name"], tags=tags).info.run_id
        params = [param(k, v) for k, v in plan["params"].items()]
        now = int(time.time() * 1000)
        metrics = [metric(k, v, now, 0) for k, v in plan["metrics"].items()]
        for i in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, metrics=metrics if i == 0 else [], params=params[i:i + 100])
    client.log_artifacts(run_id, plan["staged"], plan["artifact_path"])
    client.set_terminated(run_id, "FINISHED")
    return run_id


LOGIN_VARS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def answer(plan: dict[str, Any], login: dict[str, str]) -> dict[str, Any]:
    for var in LOGIN_VARS:  # the previous registration's login (another team's, perhaps) is gone first
        os.environ.pop(var, None)
    os.environ.update({k: v for k, v in login.items() if k in LOGIN_VARS})
    try:
        return register(plan)
    except Exception as exc:  # every failure becomes a sentence on the job page, never a traceback
        code = getattr(exc, "error_code", "")
        message = str(getattr(exc, "message", "") or exc).strip().splitlines()[0][:500] if str(exc) else type(
            exc).__name__
        if code in PERMANENT:
            return {"error": f"MLflow at {plan['tracking_uri']} refused it: {message}", "transient": False}
        return {"error": f"MLflow at {plan['tracking_uri']} could not be reached or failed: {message}",
                "transient": True}
    finally:
        for var in LOGIN_VARS:
            os.environ.pop(var, None)


def main() -> None:
    import mlflow.entities  # noqa: F401 - MLflow loaded once, before the first registration
    from mlflow import MlflowClient  # noqa: F401

    out = sys.stdout
    sys.stdout = sys.stderr  # whatever MLflow prints cannot be taken for an answer
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            print(json.dumps(answer(request["plan"], request.get("login") or {})), file=out, flush=True)


if __name__ == "__main__":
    main()
