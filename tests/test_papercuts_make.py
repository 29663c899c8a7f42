"""`make run` on a fresh machine: the long first install shows its progress, and the portal it starts watches no
files (the watcher is off in .streamlit/config.toml; tests/e2e/test_papercuts_browser.py counts its watches)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

READ = ("import json; from streamlit import config; config.get_config_options(force_reparse=True); "
        "print(json.dumps(config.get_option('server.fileWatcherType')))")


def test_streamlit_reads_that_the_portal_watches_no_files() -> None:
    out = subprocess.run([sys.executable, "-c", READ], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == "none"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_on_a_fresh_machine_says_it_installs_and_shows_pips_progress(tmp_path) -> None:
    fresh = tmp_path / "venv"  # not there yet: what `make run` does the first time
    out = subprocess.run(["make", "-n", "run", f"VENV={fresh}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    install = next(line for line in out.splitlines() if "pip install" in line)
    assert " -q" not in install and "--progress-bar on" in install
    said = out.splitlines()[out.splitlines().index(install) - 1]
    assert said.startswith("echo ") and "Installing the portal's Python packages" in said
