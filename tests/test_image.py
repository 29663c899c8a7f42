"""The container image, without a container engine: the Dockerfile's invariants, and the environment it
describes (its own install steps in a fresh virtual environment, its files, its env, its command) serving
/healthz and the first page."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dockerfile_parse import DockerfileParser

from tests.conftest import ROOT, free_port, wait_until

DOCKERFILE = ROOT / "Dockerfile"
SECRET_NAME = re.compile(r"(secret|token|passw|credential|api_?key|private)", re.I)
SECRET_FILE = re.compile(
    r"(^|/)(\.env|\.git|\.kube|kubeconfig|id_rsa|id_ed25519|portal-data|.*\.(pem|key|p12|db))($|/)")


@dataclass
class Stage:
    image: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def stages() -> list[Stage]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    args: dict[str, str] = {}
    out: list[Stage] = []
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "ARG" and not out:
            name, _, default = value.partition("=")
            args[name] = default
        elif kind == "FROM":
            words = value.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            out.append(Stage(image, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        elif kind != "COMMENT":
            out[-1].instructions.append((kind, value))
    return out


def final_env() -> dict[str, str]:
    return dict(DockerfileParser(path=str(DOCKERFILE)).envs)


def test_dockerfile_invariants() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "build tools must stay in a build stage"
    for stage in all_stages:
        name, _, tag = stage.image.rpartition(":")
        assert name and tag and tag != "latest", f"{stage.image}: base images need a pinned tag"
        assert "slim" in tag, f"{stage.image}: the base image should be a slim one"
    final = all_stages[-1]
    kinds = [k for k, _ in final.instructions]
    users = [v for k, v in final.instructions if k == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("0", "root"), "the last USER must not be root"
    assert users[-1].split(":")[0].isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert any("healthcheck" in v for k, v in final.instructions if k == "HEALTHCHECK"), "HEALTHCHECK is missing"
    assert any("/data" in v for k, v in final.instructions if k == "VOLUME")
    assert kinds.count("CMD") == 1
    text = DOCKERFILE.read_text()
    assert "requirements-dev" not in text, "test tools must not be installed into the image"
    for tool in ("gcc", "build-essential", "apt-get install", "curl", "wget"):
        assert not any(tool in v for k, v in final.instructions if k == "RUN"), f"{tool} in the final image"
    for stage in all_stages:
        for kind, value in stage.instructions:
            if kind in ("ENV", "ARG"):
                names = re.findall(r"(\w+)=", value) or [value.split()[0]]
                assert not [n for n in names if SECRET_NAME.search(n)], f"secret-like {kind}: {value}"
            if kind in ("COPY", "ADD"):
                assert kind == "COPY", "ADD can fetch URLs and unpack archives: use COPY"
                sources = [w for w in shlex.split(value) if not w.startswith("--")][:-1]
                for src in sources:
                    assert not SECRET_FILE.search(src.strip("./") or src), f"{src} must not be copied"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*", ".dockerignore must exclude by default"


def test_image_runs_its_user_in_group_zero_with_a_group_writable_data_dir() -> None:
    run = " ".join(v for k, v in stages()[-1].instructions if k == "RUN")
    uid = re.search(r"--uid (\d+)", run)
    assert uid and int(uid.group(1)) > 0
    assert "--gid 0" in run, "OpenShift's arbitrary UID is in group 0"
    assert re.search(r"chown \d+:0 /data", run) and re.search(r"chmod (2?775|g\+rwx?) /data", run)
    users = [v for k, v in stages()[-1].instructions if k == "USER"]
    assert users[-1] == uid.group(1)


class ImageEnvironment:
    """The final image's filesystem laid out under a temporary root: /opt/venv, /app, /data, $HOME."""

    def __init__(self, root: Path):
        self.root = root
        self.paths = {"/opt/venv": root / "opt" / "venv", "/app": root / "app", "/data": root / "data",
                      "/tmp": root / "home"}
        for path in self.paths.values():
            path.mkdir(parents=True, exist_ok=True)

    def map(self, text: str, extra: dict[str, Path] | None = None) -> str:
        # One pass, whole path components only: the temporary root (and a checkout) may lie under /tmp.
        paths = self.paths | (extra or {})
        names = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
        return re.sub(rf"(?<![\w/.-])({names})(?=/|$|[\s:\"'])", lambda m: str(paths[m.group(1)]), text)

    def build(self, build_stage: Stage) -> None:
        """Run the build stage's own steps: its COPYs from the context, then its RUN lines."""
        copies: dict[str, Path] = {}
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
        for kind, value in build_stage.instructions:
            if kind == "ENV":
                env.update(dict(w.split("=", 1) for w in shlex.split(value)))
            elif kind == "COPY":
                src, dest = shlex.split(value)
                copies[dest] = ROOT / src
            elif kind == "RUN":
                words = [w for w in shlex.split(value) if not w.startswith("--mount=")]
                cmd = self.map(" ".join(shlex.quote(w) for w in words), copies)
                subprocess.run(["bash", "-c", cmd], check=True, env=env, timeout=900, capture_output=True)

    def copy_app(self, final: Stage) -> None:
        workdir = "/"
        for kind, value in final.instructions:
            if kind == "WORKDIR":
                workdir = value
            elif kind == "COPY" and not value.startswith("--from="):
                src, dest = [w for w in shlex.split(value) if not w.startswith("--")]
                target = Path(self.map(dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"))
                source = ROOT / src
                if source.is_dir():
                    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(source, target / source.name if dest.endswith("/") else target)
        self.workdir = Path(self.map(workdir))

    def env(self, port: int) -> dict[str, str]:
        env = {k: self.map(v) for k, v in final_env().items()}
        # The one deviation: tests bind to loopback and a free port.
        env.update(STREAMLIT_SERVER_ADDRESS="127.0.0.1", STREAMLIT_SERVER_PORT=str(port))
        return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnvironment:
    all_stages = stages()
    env = ImageEnvironment(tmp_path_factory.mktemp("image"))
    env.build(all_stages[0])
    env.copy_app(all_stages[-1])
    return env


@pytest.fixture(scope="module")
def image_server(image: ImageEnvironment) -> Iterator[tuple[ImageEnvironment, str, dict[str, str]]]:
    port = free_port()
    env = image.env(port)
    cmd = json.loads(DockerfileParser(path=str(DOCKERFILE)).cmd)
    exe = shutil.which(cmd[0], path=env["PATH"])
    assert exe and exe.startswith(str(image.paths["/opt/venv"])), f"{cmd[0]} must come from the image's venv"
    log = image.root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, *cmd[1:]], cwd=image.workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=90, interval=0.5)
        yield image, url, env
    finally:
        proc.terminate()
        proc.wait(20)


def test_image_serves_healthz_and_the_first_page(image_server: tuple[ImageEnvironment, str, dict[str, str]]) -> None:
    image, url, env = image_server
    health = httpx.get(f"{url}/healthz", timeout=5).json()
    assert health["status"] == "ok" and health["backend"] == "local"
    page = httpx.get(f"{url}/", timeout=5)
    assert page.status_code == 200 and "<noscript>" in page.text
    assert (image.paths["/data"] / "portal.db").is_file(), "the database lives in the data volume"
    assert not list(image.workdir.rglob("*.pyc")), "nothing is written into the app directory"
    hc = next(v for k, v in stages()[-1].instructions if k == "HEALTHCHECK")
    probe = json.loads(hc.split("CMD", 1)[1])
    assert subprocess.run(probe, cwd=image.workdir, env=env, timeout=30).returncode == 0


def test_image_holds_no_test_or_build_tools(image: ImageEnvironment) -> None:
    bin_dir = image.paths["/opt/venv"] / "bin"
    assert (bin_dir / "streamlit").exists()
    for tool in ("pytest", "ruff", "playwright", "schemathesis"):
        assert not (bin_dir / tool).exists(), f"{tool} must not be in the image"
    assert not (image.workdir / "tests").exists() and not (image.workdir / "bench").exists()
