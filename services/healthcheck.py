"""Container health probe: exit 0 when the portal in this container answers /healthz with "ok".

Used by the image's HEALTHCHECK and by the Kubernetes exec probes, which also work when the portal
listens on the pod's loopback address only (behind the auth proxy sidecar).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def probe_url() -> str:
    address = os.environ.get("STREAMLIT_SERVER_ADDRESS", "127.0.0.1")
    if address in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is reached through loopback
        address = "127.0.0.1"
    port = os.environ.get("STREAMLIT_SERVER_PORT", "8501")
    return f"http://{address}:{port}/healthz"


def main() -> int:
    try:
        with urllib.request.urlopen(probe_url(), timeout=4) as resp:  # noqa: S310 - fixed http URL
            body = json.loads(resp.read())
    except Exception as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if body.get("status") != "ok":
        print(f"unhealthy: {body}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
