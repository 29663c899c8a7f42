"""The Streamlit settings the portal ships in .streamlit/config.toml, as `streamlit run` (and the image) read them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

READ = ("import json; from streamlit import config; config.get_config_options(force_reparse=True); "
        "print(json.dumps({k: config.get_option(k) for k in ('runner.postScriptGC', 'server.address')}))")


def test_streamlit_reads_the_portals_settings_from_the_project() -> None:
    out = subprocess.run([sys.executable, "-c", READ], cwd=ROOT, capture_output=True, text=True, check=True)
    options = json.loads(out.stdout.strip().splitlines()[-1])
    # A full garbage collection after every fragment run made ten viewers of a live log cost a whole core
    # (bench/many_viewers.py); Python's generational collector is enough.
    assert options["runner.postScriptGC"] is False
    assert options["server.address"] == "127.0.0.1"  # a laptop's portal is not on the network by default


def test_the_image_ships_those_settings() -> None:
    assert "COPY .streamlit ./.streamlit" in (ROOT / "Dockerfile").read_text()
    assert "!.streamlit/" in (ROOT / ".dockerignore").read_text()
