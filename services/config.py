"""One settings object for the whole portal (env vars ``PORTAL_*``, optional YAML/TOML file)."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from services.config_costs import CostSettings
from services.models import Role


def _config_file() -> Path | None:
    raw = os.environ.get("PORTAL_CONFIG_FILE")
    return Path(raw).expanduser() if raw else None


LOCAL_REPLICAS = ("PORTAL_LEADER_ELECTION=on needs the Kubernetes backend (a Lease elects the replica that runs the "
                  "sync loop): replicas of a portal whose jobs run on its own machine are not supported")


class Settings(CostSettings):
    """Every knob an admin can turn. Env var = ``PORTAL_`` + upper-case field name."""

    model_config = SettingsConfigDict(env_prefix="PORTAL_", extra="ignore")

    data_dir: Path = Field(
        default=Path("portal-data"),
        description="Where the database, job working directories, logs and the workspace live.",
    )
    backend: Literal["auto", "local", "kubernetes"] = Field(
        default="auto",
        description="Where jobs run. 'auto': kubernetes in a cluster or with a kubeconfig, else local.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: a SQLite file portal.db in the data directory.",
    )
    max_gpus_per_node: int = Field(default=8, ge=0)
    max_nodes: int = Field(default=4, ge=1)
    max_runtime_hours: float = Field(default=72.0, gt=0)
    default_runtime_hours: float = Field(default=8.0, gt=0)
    max_upload_mb: float = Field(default=5.0, gt=0)
    default_cpu: str = "4"
    default_memory: str = "16Gi"
    stop_grace_seconds: float = Field(default=10.0, ge=0)
    sync_interval_seconds: float = Field(default=0.5, gt=0)
    python_executable: str = Field(
        default="", description="Interpreter for local jobs. Empty: the portal's own interpreter."
    )
    local_gpus: int = Field(
        default=-1, ge=-1, le=1024,
        description="GPUs the local backend's queue shares among its jobs. -1: the machine's own (NVML's count).",
    )
    local_max_gpus_per_user: int = Field(
        default=0, ge=0, description="Local backend: GPUs one person's jobs may hold at once (more wait). 0: no limit."
    )
    local_max_jobs_per_user: int = Field(
        default=0, ge=0, description="Local backend: jobs one person may run at once (more wait). 0: no limit."
    )
    dashboard_page_size: int = Field(default=10, ge=1, le=200)

    # Identity (services/auth.py) --------------------------------------------------------------------
    auth_mode: Literal["single", "proxy", "oidc"] = Field(
        default="single",
        description="Who is asking. single: the one local user (laptop); proxy: an auth proxy's headers; "
        "oidc: Streamlit's login against an OIDC provider (.streamlit/secrets.toml [auth]).",
    )
    admins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Users (or group:NAME) who manage every job and see the settings. Comma-separated.",
    )
    viewers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Users (or group:NAME) who read every job and the history (data leads). Comma-separated.",
    )
    proxy_user_header: str = Field(default="X-Forwarded-User", description="proxy mode: header with the user name.")
    proxy_email_header: str = Field(default="X-Forwarded-Email", description="proxy mode: header with the e-mail.")
    proxy_groups_header: str = Field(
        default="X-Forwarded-Groups",
        description="proxy mode: header with comma-separated groups. Empty: groups are not trusted.",
    )
    show_others_jobs: bool = Field(
        default=True, description="Researchers see others' jobs read-only. False: only their own (and 'not found')."
    )
    team_groups: str = Field(
        default="", description="Which identity groups count as teams (services/teams.py): a regular expression the "
        "whole group name must match, e.g. 'team-.*'. Empty: every group is a team.",
    )
    allow_insecure_bind: bool = Field(
        default=False,
        description="Let single mode (no login) listen on a non-loopback address. Only behind your own auth.",
    )
    single_user: str = Field(default="", description="single mode: the user's name. Empty: the login name.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"],
        description="Host names the portal answers to (pages, their WebSocket, downloads, the API), comma-separated; "
        "'*.example.com' matches subdomains. Any other Host header gets a 400 (DNS rebinding).",
    )
    max_request_mb: float = Field(
        default=16.0, gt=0, description="Largest request body of any route, refused while it streams (uploads have "
        "their own, smaller max_upload_mb).",
    )
    token_max_days: float = Field(
        default=365.0, gt=0, description="Longest lifetime an API token may be given; new tokens default to it.",
    )
    local_job_uid_base: int = Field(
        default=2_100_000_000, ge=1000, le=4_000_000_000,
        description="proxy/oidc modes with the local backend: each job runs under its own unprivileged UID/GID "
        "base + (job id mod local_job_uid_count), with no network of its own (needs root).",
    )
    local_job_uid_count: int = Field(default=1_000_000, ge=1, le=100_000_000)
    secret_key_file: str = Field(
        default="", description="Key that signs download links. Empty: secret.key in the data directory (made once)."
    )
    metrics_token_file: str = Field(
        default="", description="File holding the bearer token a Prometheus scraper sends to GET /metrics, re-read "
        "on every scrape. Empty: only admins (their API token or session) may read /metrics.",
    )

    # GPU telemetry (services/gpu_telemetry.py) ---------------------------------------------------
    prometheus_url: str = Field(
        default="",
        description="Prometheus (or Thanos Querier) holding the DCGM exporter's series, e.g. "
        "https://thanos-querier.openshift-monitoring.svc:9091. Empty: no GPU metrics for cluster jobs.",
    )
    prometheus_token: str = Field(default="", description="Bearer token sent to Prometheus. Empty: none.")
    prometheus_token_file: str = Field(
        default="",
        description="File holding the bearer token, re-read on every query (OpenShift: "
        "/var/run/secrets/kubernetes.io/serviceaccount/token). Used when prometheus_token is empty.",
    )
    prometheus_ca_file: str = Field(
        default="", description="CA bundle that signed Prometheus's certificate. Empty: the system's CAs."
    )
    prometheus_pod_label: str = Field(
        default="pod",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="Label holding the job pod's name on DCGM series ('exported_pod' when Prometheus renamed it).",
    )
    prometheus_namespace_label: str = Field(
        default="namespace",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="Label holding the job pod's namespace on DCGM series ('exported_namespace' when renamed).",
    )
    gpu_sample_seconds: float = Field(
        default=15.0, gt=0, description="How often running jobs' GPUs, CPU and memory are read."
    )
    gpu_idle_percent: float = Field(
        default=10.0, ge=0, le=100, description="A job whose GPU utilisation stays below this is idle."
    )
    gpu_idle_minutes: float = Field(
        default=15.0, gt=0, description="How long a job must stay below gpu_idle_percent to be flagged idle."
    )

    log_retention_days: float = Field(
        default=0, ge=0, description="Delete archived logs of jobs that ended this many days ago; the job, its "
        "metrics and charts stay. 0: keep logs forever.")
    failure_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Extra failure causes: regular expression -> the reason shown, tried first on a failed job's "
        'last log lines, e.g. {"Dataset shard \\d+ missing": "Dataset incomplete"}.',
    )

    # Notifications (services/notifications*.py, docs/notifications.md) ------------------------------
    public_url: str = Field(
        default="", description="The portal's address as users reach it (e.g. https://portal.example.com): the "
        "link in every notification. Empty: messages name the job's path only.",
    )
    smtp_host: str = Field(default="", description="SMTP server that sends notification e-mails. Empty: no e-mail.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_user: str = Field(default="", description="SMTP login. Empty: send without logging in.")
    smtp_password_file: str = Field(default="", description="File holding the SMTP password, read at each send.")
    smtp_from: str = Field(default="ml-portal@localhost", description="The From address of notification e-mails.")
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["hooks.slack.com", "*.webhook.office.com", "*.logic.azure.com"],
        description="Host names notification webhooks may point at, comma-separated ('*.example.com' matches "
        "subdomains): a webhook must not become a way to reach internal addresses.",
    )
    team_webhooks: dict[str, str] = Field(
        default_factory=dict, description='Group -> webhook URL, e.g. {"team-a": "slack:https://hooks.slack.com/…"}: '
        "the failures of the group's members are said there too ('slack:', 'teams:', 'mattermost:' or 'generic:' "
        "picks the message's shape; on the webhook allow-list like any webhook).",
    )
    team_webhook_secret_file: str = Field(
        default="", description="File holding the key that signs team webhooks' messages. Empty: unsigned.")
    notify_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Attempts per message before its channel is disabled.")
    notify_retry_seconds: float = Field(
        default=30.0, gt=0, description="Wait before the first retry of a message; doubled for each next one.")
    notify_send_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Wall-clock limit on one delivery, whatever the receiver does; then "
        "it counts as failed and is retried.")
    notify_parallel: int = Field(
        default=4, ge=1, le=32, description="Channels the sender delivers to at once (one message per channel at a "
        "time).")
    notify_test_per_hour: int = Field(
        default=5, ge=1, le=1000, description="Test and e-mail confirmation messages a user may send per hour.")

    # Model registry (services/model_registry.py, docs/registry.md) ------------------------------------
    mlflow_tracking_uri: str = Field(default="", description="The team's MLflow tracking server, where Register "
                                     "model puts a job's model. Empty: none, unless mlflow_group_uris has one.")
    mlflow_group_uris: dict[str, str] = Field(default_factory=dict, description='Group -> MLflow tracking server, '
                                              'e.g. {"team-a": "https://mlflow-a.example.com"}: the first group of '
                                              "the job's owner listed here wins, else mlflow_tracking_uri.")
    mlflow_token_file: str = Field(default="", description="File holding the bearer token sent to MLflow, read at "
                                   "each registration. Empty: mlflow_username and its password file, or no login.")
    mlflow_username: str = Field(default="", description="MLflow login (basic auth) when there is no token file.")
    mlflow_password_file: str = Field(default="", description="File holding mlflow_username's password.")
    mlflow_group_credentials: dict[str, dict[str, str]] = Field(
        default_factory=dict, description='Group -> its own MLflow login, e.g. {"team-a": {"token_file": '
        '"/secrets/a/token"}} or {"team-b": {"username": "b", "password_file": "/secrets/b/pw"}}: for a job of a '
        "member, sent only to that group's server (mlflow_group_uris, else mlflow_tracking_uri); else the one login.")

    # Kubernetes backend -------------------------------------------------------------------------
    kubeconfig: str = Field(default="", description="Path of a kubeconfig. Empty: KUBECONFIG, then ~/.kube/config.")
    namespace: str = Field(default="", description="Namespace for jobs. Empty: the pod's own, or the context's.")
    job_image: str = Field(default="python:3.11-slim", description="Container image that runs the scripts.")
    job_service_account: str = Field(default="", description="ServiceAccount of job pods (no token is mounted).")
    job_run_as_user: int = Field(
        default=1000, ge=0, description="UID of job containers (never root). 0: leave it to the cluster "
        "(OpenShift's restricted policy assigns the project's own UID range; the openshift overlay sets 0).")
    job_name_prefix: str = Field(default="mlp", pattern=r"^[a-z]([-a-z0-9]{0,20}[a-z0-9])?$")
    job_ttl_hours: float = Field(default=24 * 7, gt=0, description="Finished Jobs are removed after this long.")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on job pods.")
    job_template: str = Field(default="", description="Path of the admin's Jinja2 job template (optional).")
    job_data_volume_claim: str = Field(
        default="",
        description="PVC holding the portal's data directory (ReadWriteMany), mounted into job pods: the script "
        "comes from it and the job's files land in it, so the Files tab shows them. Empty: ConfigMap + emptyDir.",
    )
    kube_request_timeout_seconds: float = Field(default=10.0, gt=0)
    log_poll_seconds: float = Field(default=2.0, gt=0, description="How often running pods' logs are read.")
    kueue_default_queue: str = Field(
        default="", description="Kueue LocalQueue (in the jobs' namespace) that jobs wait in when the cluster has "
        "Kueue. Empty: jobs are not queued through Kueue, unless kueue_group_queues names a queue for the user.",
    )
    kueue_group_queues: dict[str, str] = Field(
        default_factory=dict, description='Group -> Kueue LocalQueue, e.g. {"team-a": "team-a"}: a user\'s jobs go '
        "to the queue of the first group listed here that they are in, else to kueue_default_queue.",
    )
    priority_limits: dict[str, list[str]] = Field(
        default_factory=dict, description='Who may use which priorities, e.g. {"group:interns": ["low", "normal"], '
        '"role:researcher": ["low", "normal", "urgent"]}: a user in a listed group may use what their listed groups '
        "allow, else what their role's entry allows; no entry, or an admin: every priority.",
    )
    leader_election: Literal["auto", "on", "off"] = Field(
        default="auto", description="More than one portal replica on one store: the one holding a Kubernetes Lease "
        "runs the sync loop and its workers, the others serve pages and the API. auto: on with the kubernetes "
        "backend and a PostgreSQL database_url.",
    )
    leader_lease_name: str = Field(
        default="ml-portal-leader", pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$",
        description="The Lease (in the portal's namespace) the replicas compete for.",
    )
    leader_lease_seconds: float = Field(
        default=15.0, ge=3, le=300, description="How long a leader's lease lasts unrenewed: a replica that died is "
        "replaced after at most about this long. Renewed every third of it.",
    )
    kueue_visibility_url: str = Field(
        default="", description="Where Kueue's visibility API (positions in a queue) answers. Empty: through the "
        "Kubernetes API server (the APIService Kueue installs); a test control plane without it: Kueue's own port.",
    )
    tensorboard_idle_minutes: float = Field(
        default=30.0, gt=0, le=24 * 60, description="A TensorBoard the portal started for a job (or a set of jobs) is "
        "stopped after this many minutes without a request through the portal.",
    )
    tensorboard_max_sessions: int = Field(
        default=4, ge=1, le=64, description="TensorBoards running at once at most (each is a process of a few hundred "
        "MB): one more stops the one idle longest.",
    )

    @field_validator("admins", "viewers", "allowed_hosts", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [item.strip() for item in v.split(",") if item.strip()]
        return v

    @field_validator("mlflow_group_credentials")
    @classmethod
    def _mlflow_logins(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for group, login in v.items():
            unknown = set(login) - {"token_file", "username", "password_file"}
            if unknown or not (login.get("token_file") or (login.get("username") and login.get("password_file"))):
                raise ValueError(f"group {group!r}: give token_file, or username and password_file"
                                 + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
        return v

    @field_validator("failure_patterns")
    @classmethod
    def _patterns_compile(cls, v: dict[str, str]) -> dict[str, str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"failure pattern {pattern!r} is not a regular expression: {exc}") from None
        return v

    @field_validator("priority_limits")
    @classmethod
    def _limit_keys(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        roles = tuple(r.value for r in Role)
        for key in v:
            kind, _, name = key.partition(":")
            if not name or kind not in ("group", "role") or (kind == "role" and name not in roles):
                raise ValueError(f"priority_limits: {key!r} is neither 'group:NAME' nor 'role:' followed by one of "
                                 f"{', '.join(roles)}")
        return v

    @model_validator(mode="after")
    def _replicas_need_a_cluster(self) -> Settings:
        if self.leader_election == "on" and self.resolved_backend() == "local":
            raise ValueError(LOCAL_REPLICAS)
        return self

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            # Env vars win over the file so one value can be overridden without editing it.
            if path.suffix in (".yaml", ".yml"):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            elif path.suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                raise ValueError(f"PORTAL_CONFIG_FILE must end in .yaml, .yml or .toml: {path}")
        return tuple(sources)

    # Derived locations -------------------------------------------------------------------------
    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'portal.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def workspace_dir(self) -> Path:
        return self.data_dir / "workspace"

    def kubeconfig_path(self) -> Path | None:
        for candidate in (self.kubeconfig, os.environ.get("KUBECONFIG", "").split(os.pathsep)[0], "~/.kube/config"):
            if candidate and Path(candidate).expanduser().is_file():
                return Path(candidate).expanduser()
        return None

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        return "kubernetes" if in_cluster or self.kubeconfig_path() else "local"

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
