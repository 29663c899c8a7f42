"""The portal's front door (api/guard.py) on the running portal, started as a user starts it: it answers only to
the host names it is given (DNS rebinding), its mutations come only from its own pages, its responses carry the
browser protections, and a body too large or too deep is refused with a sentence, cheaply."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psutil
import pytest
import websockets.sync.client

from tests.conftest import PortalServer, create_token

EXAMPLE = {"name": "guarded", "script": "train_example.py", "epochs": 1, "extra_args": "--seconds-per-epoch 0"}
MAX_REQUEST_MB = 2  # small, so a body the guard itself must cut is quick to send


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalServer]:
    env = {"PORTAL_MAX_REQUEST_MB": str(MAX_REQUEST_MB)}
    srv = PortalServer(tmp_path_factory.mktemp("guard") / "portal-data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token(server: PortalServer) -> str:
    return create_token(server.data_dir, "alice")


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def jobs_of(server: PortalServer, token: str) -> list[dict]:
    return httpx.get(f"{server.url}/api/v1/jobs?scope=all&limit=200", headers=auth(token)).json()["jobs"]


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes


def raw(server: PortalServer, head: str) -> Raw:
    """One request written by hand: how a Host header can be left out (HTTP/1.0) or a WebSocket upgrade asked."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data or (not data.startswith(b"HTTP/1.1 101") and len(data) < 65536):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Raw(int(status_line.split()[1]), headers, body)


def static_asset(server: PortalServer) -> str:
    html = httpx.get(server.url + "/").text
    return "/" + re.search(r'src="\./(static/js/index\.[^"]+\.js)"', html).group(1)


ALLOWED = ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "localhost", "[::1]:{port}",
           "localhost.:{port}"]
REFUSED = ["attacker.example:{port}", "attacker.example", "localhost.attacker.example:{port}",
           "127.0.0.1.nip.io:{port}", "evil.localhost:{port}", "127.0.0.1:{port}@attacker.example", "[::2]:{port}"]


def test_pages_assets_and_links_answer_only_to_the_allowed_host_names(server, token):
    paths = {"/": 200, "/submit": 200, static_asset(server): 200, "/download/not-a-link": 404}
    for host in ALLOWED:
        for path, status in paths.items():
            r = httpx.get(server.url + path, headers={"Host": host.format(port=server.port)})
            assert r.status_code == status, (host, path, r.text[:200])
        r = httpx.get(f"{server.url}/api/v1/me", headers=auth(token, Host=host.format(port=server.port)))
        assert r.status_code == 200 and r.json()["name"] == "alice", (host, r.text)
    for host in REFUSED:
        for path in paths:
            r = httpx.get(server.url + path, headers={"Host": host.format(port=server.port)})
            assert r.status_code == 400, (host, path, r.status_code)
            assert r.text.startswith("This portal does not answer to this host name"), (host, path, r.text)
            assert "<html" not in r.text and "index." not in r.text
        r = httpx.get(f"{server.url}/api/v1/me", headers=auth(token, Host=host.format(port=server.port)))
        assert r.status_code == 400 and "host name" in r.json()["error"], (host, r.text)


def test_a_request_without_a_host_header_is_refused(server, token):
    for path in ("/", "/submit", "/api/v1/me"):
        r = raw(server, f"GET {path} HTTP/1.0\nAuthorization: Bearer {token}\n")
        assert r.status == 400 and b"host name" in r.body, (path, r)
    # Two Host headers are not one name to check either.
    r = raw(server, f"GET / HTTP/1.1\nHost: 127.0.0.1:{server.port}\nHost: attacker.example\nConnection: close\n")
    assert r.status == 400


def test_healthz_answers_the_probes_whatever_their_host(server):
    # Container and kubelet probes reach the pod by its IP or loopback; the route changes nothing and says no more.
    r = httpx.get(f"{server.url}/healthz", headers={"Host": "10.128.4.17:8501"})
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["x-frame-options"] == "DENY"


def test_metrics_answers_a_scraper_by_pod_ip_but_still_wants_its_token(server):
    # Prometheus scrapes each pod by its IP: a host check there would make the shipped ServiceMonitor useless.
    r = httpx.get(f"{server.url}/metrics", headers={"Host": "10.128.4.17:4180"})
    assert r.status_code == 401 and "host name" not in r.text


def upgrade(server: PortalServer, host: str | None, origin: str | None) -> Raw:
    key = base64.b64encode(os.urandom(16)).decode()
    head = "GET /_stcore/stream HTTP/1.1\nUpgrade: websocket\nConnection: Upgrade\n"
    head += f"Sec-WebSocket-Key: {key}\nSec-WebSocket-Version: 13\n"
    head += f"Host: {host}\n" if host is not None else ""
    head += f"Origin: {origin}\n" if origin is not None else ""
    return raw(server, head)


def test_the_pages_websocket_opens_only_for_allowed_hosts_and_origins(server):
    port = server.port
    # Streamlit's own client, as the browser's page uses it.
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/_stcore/stream", origin=f"http://127.0.0.1:{port}",
                                        subprotocols=["streamlit"], open_timeout=10) as ws:
        assert ws.protocol.state.name == "OPEN"
    assert upgrade(server, f"localhost:{port}", f"http://localhost:{port}").status == 101
    assert upgrade(server, f"127.0.0.1:{port}", None).status == 101  # a script: no Origin
    # A rebound name: the page's Origin is its own Host, and both are the attacker's.
    for host, origin in [(f"attacker.example:{port}", f"http://attacker.example:{port}"),
                         (f"attacker.example:{port}", None),
                         (None, None),
                         (f"127.0.0.1:{port}", f"http://attacker.example:{port}"),
                         (f"127.0.0.1:{port}", "null"),
                         # Another local server's page: Streamlit alone lets any localhost origin in.
                         (f"127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"),
                         (f"127.0.0.1:{port}", f"http://localhost:{port}")]:
        r = upgrade(server, host, origin)
        assert r.status in (400, 403), (host, origin, r.status)
        assert r.status != 101


def test_an_unknown_host_cannot_create_a_job_even_with_a_token(server, token):
    before = len(jobs_of(server, token))
    for host in (f"attacker.example:{server.port}", "attacker.example"):
        r = httpx.post(f"{server.url}/api/v1/jobs", json=EXAMPLE,
                       headers=auth(token, Host=host, Origin=f"http://{host}", **{"Sec-Fetch-Site": "same-origin"}))
        assert r.status_code == 400 and r.json()["error"].startswith("This portal does not answer"), r.text
    assert len(jobs_of(server, token)) == before, "a job was created through a host name the portal does not own"


def test_mutations_come_only_from_the_portals_own_origin(server, token):
    port = server.port
    refused = [{"Origin": f"http://attacker.example:{port}"}, {"Origin": f"http://127.0.0.1:{port + 1}"},
               {"Origin": f"http://localhost:{port}"},  # another origin than the Host the request went to
               {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}]
    before = len(jobs_of(server, token))
    for headers in refused:
        r = httpx.post(f"{server.url}/api/v1/jobs", json=EXAMPLE, headers=auth(token, **headers))
        assert r.status_code == 403 and "Cross-site" in r.json()["error"], (headers, r.text)
    # A rebound page's Origin is the Host it sends: same origin to the browser, and still refused.
    rebound = f"attacker.example:{port}"
    r = httpx.post(f"{server.url}/api/v1/jobs", json=EXAMPLE,
                   headers=auth(token, Host=rebound, Origin=f"http://{rebound}", **{"Sec-Fetch-Site": "same-origin"}))
    assert r.status_code == 400, r.text
    assert len(jobs_of(server, token)) == before
    for headers in [{}, {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
                    {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}]:
        r = httpx.post(f"{server.url}/api/v1/jobs", json=EXAMPLE, headers=auth(token, **headers))
        assert r.status_code == 201, (headers, r.text)
    assert len(jobs_of(server, token)) == before + 3


def csp_directives(value: str) -> dict[str, list[str]]:
    return {name: rest for name, *rest in (d.split() for d in value.split(";") if d.strip())}


def test_responses_carry_the_browser_protections(server, token):
    for path in ("/", "/submit", "/job?id=1", static_asset(server), "/api/v1/me", "/download/not-a-link"):
        r = httpx.get(server.url + path, headers=auth(token))
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "same-origin", path
        csp = csp_directives(r.headers["content-security-policy"])
        assert csp["frame-ancestors"] == ["'none'"], path
        assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
        assert set(csp["img-src"]) <= {"'self'", "data:", "blob:"}, "an image from another host could be a tracker"
        assert csp["object-src"] == ["'none'"] and csp["connect-src"] == ["'self'"]


def test_deeply_nested_json_gets_a_sentence(server, token):
    before = len(jobs_of(server, token))
    inside_a_job = json.dumps(EXAMPLE)[:-1] + ', "tags": ' + "[" * 70 + "]" * 70 + "}"
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 40_000 + b"1" + b"}" * 40_000, inside_a_job.encode()):
        r = httpx.post(f"{server.url}/api/v1/jobs", content=body,
                       headers=auth(token, **{"Content-Type": "application/json"}))
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"] == "The request body is nested more than 64 levels deep."
    assert len(jobs_of(server, token)) == before


class Counted:
    """A request body made on the fly (nothing held in memory) that remembers how much of it was sent."""

    def __init__(self, total_mb: int, prefix: bytes = b""):
        self.total, self.prefix, self.sent = total_mb * 1024 * 1024, prefix, 0

    def __iter__(self) -> Iterator[bytes]:
        chunk = b" " * (1024 * 1024)
        yield self.prefix
        while self.sent < self.total:
            self.sent += len(chunk)
            yield chunk


def rss_mb(server: PortalServer) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def early_answer(server: PortalServer, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """What a browser or curl gets: they read while they send, so they see an answer that comes before their
    body is through. Sends the head and `body` (no more, whatever the head announces), then reads the answer."""
    port = int(server.url.rsplit(":", 1)[1])
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status = int(raw.split(b" ", 2)[1])
    return status, raw.split(b"\r\n\r\n", 1)[1]


def chunked(data: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 65536]), data[i:i + 65536]) for i in range(0, len(data), 65536))


def test_a_huge_body_is_refused_while_it_streams(server, token):
    before_jobs = len(jobs_of(server, token))
    rss_before = rss_mb(server)
    json_head = auth(token, **{"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    # Chunked (no length said): the API stops at its 256 KB and answers at once, while the client still sends.
    note = b'{"name": "huge", "note": "' + b" " * 600_000
    status, body = early_answer(server, "/api/v1/jobs", json_head, chunked(note))
    assert status == 413 and json.loads(body)["error"] == "The request body is larger than 256 KB."
    # An upload the route would read further is cut by the portal-wide limit, also while it streams.
    upload = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.py"\r\n\r\n' + b"#" * (3 * 2**20)
    status, body = early_answer(server, "/api/v1/files", auth(token, **{
        "Content-Type": "multipart/form-data; boundary=b", "Transfer-Encoding": "chunked"}), chunked(upload))
    assert status == 413
    assert json.loads(body)["error"] == f"The request body is larger than the portal's limit of {MAX_REQUEST_MB} MB."
    # A Content-Length over the limit is refused before a byte of the body is read, on pages too.
    for path in ("/api/v1/jobs", "/submit"):
        status, body = early_answer(server, path, auth(token, **{"Content-Type": "application/json",
                                                                 "Content-Length": str(500 * 2**20)}), b"")
        assert status == 413 and b"larger than the portal's limit" in body, (path, body[:200])
    # A client that does not read while it sends (httpx) and goes on for 200 MB: cut off early, nothing buffered.
    for path, ctype, prefix in (("/api/v1/jobs", "application/json", note[:30]),
                                ("/api/v1/files", "multipart/form-data; boundary=b", upload[:80])):
        sent = Counted(200, prefix=prefix)
        try:
            r = httpx.post(f"{server.url}{path}", content=sent, timeout=60,
                           headers=auth(token, **{"Content-Type": ctype}))
            assert r.status_code == 413, r.text[:300]
        except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
            pass  # the portal ended the connection before this client read its answer: what it may do
        assert sent.sent < 64 * 2**20, f"{path}: {sent.sent / 2**20:.0f} MB were sent before the answer"
    assert rss_mb(server) - rss_before < 40, f"the portal grew by {rss_mb(server) - rss_before:.0f} MB"
    assert len(jobs_of(server, token)) == before_jobs
    # The portal still answers afterwards.
    assert httpx.get(f"{server.url}/api/v1/me", headers=auth(token)).status_code == 200


def test_a_malformed_upload_gets_a_sentence(server, token):
    for ctype, body in [("multipart/form-data", b"garbage"), ("multipart/form-data; boundary=b", b"no parts here"),
                        ("multipart/form-data; boundary=b", b"--b\r\nX: y\r\n\r\nx\r\n--b--\r\n")]:
        r = httpx.post(f"{server.url}/api/v1/files", content=body, headers=auth(token, **{"Content-Type": ctype}))
        assert r.status_code == 400, r.text
        message = r.json()["error"]
        assert message.startswith("The upload could not be read as multipart/form-data") and message.endswith(".")
        assert "400:" not in message


def test_each_overlay_answers_to_its_route_or_ingress_host() -> None:
    import yaml

    from api.guard import host_allowed
    from tests.conftest import ROOT

    overlays = ROOT / "manifests" / "overlays"
    hosts = {"kubernetes": yaml.safe_load((overlays / "kubernetes" / "ingress.yaml").read_text())["spec"]["rules"][0]
             ["host"], "openshift": yaml.safe_load((overlays / "openshift" / "route.yaml").read_text())["spec"]["host"]}
    for overlay, host in hosts.items():
        kustomization = yaml.safe_load((overlays / overlay / "kustomization.yaml").read_text())
        config = next(g for g in kustomization["configMapGenerator"] if g["name"] == "ml-portal-config")
        allowed = dict(v.split("=", 1) for v in config["literals"])["PORTAL_ALLOWED_HOSTS"].split(",")
        assert allowed == [host], (overlay, allowed, host)
        assert host_allowed(host, allowed) and not host_allowed("127.0.0.1:8501", allowed)
        sidecar = (overlays / overlay / "proxy-sidecar.yaml").read_text()
        assert "--pass-host-header=true" in sidecar, "the proxy must pass the browser's Host on"


@pytest.mark.parametrize("host,allowed,expected", [
    ("portal.example.com", "portal.example.com", True),
    ("Portal.Example.COM:443", "portal.example.com", True),
    ("portal.example.com.", "portal.example.com", True),
    ("portal.example.com:8443", "portal.example.com:8443", True),
    ("portal.example.com:8444", "portal.example.com:8443", False),
    ("portal.example.com", "portal.example.com:8443", False),
    ("a.example.com", "*.example.com", True),
    ("a.b.example.com:8501", "*.example.com", True),
    ("example.com", "*.example.com", False),
    ("evilexample.com", "*.example.com", False),
    ("example.com.attacker.test", "*.example.com", False),
    ("[::1]:8501", "[::1]", True),
    ("[::1]:8501", "::1", True),
    ("[::2]", "[::1]", False),
    ("", "localhost", False),
    ("localhost:80:80", "localhost", False),
    ("localhost/evil", "localhost", False),
    ("anything.test", "*", True),
])
def test_the_allow_list_entries(host: str, allowed: str, expected: bool) -> None:
    from api.guard import host_allowed

    assert host_allowed(host, allowed.split(",")) is expected
