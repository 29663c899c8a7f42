"""Property-based run of the REST API against its own OpenAPI document (schemathesis): whatever a client
sends, the portal answers with a documented status and a sentence, never a server error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.openapi import openapi_document
from tests.conftest import PortalServer, create_token


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PortalServer, str]]:
    srv = PortalServer(tmp_path_factory.mktemp("fuzz") / "portal-data").start()
    try:
        yield srv, create_token(srv.data_dir, "fuzzer")
    finally:
        srv.stop()


# The document the server serves (tests/test_routes.py checks that it is served and covers every route).
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case, api_server) -> None:
    srv, token = api_server
    # Schemathesis also sends its own broken credentials; most cases must reach the handlers with a real token.
    if "authorization" not in {k.lower() for k in (case.headers or {})} or hash(case.formatted_path) % 5:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call(base_url=srv.url, timeout=30)
    where = f"{case.method} {case.formatted_path} {case.query or ''}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if response.status_code == 405:
        return  # a method the route does not have (TRACE, PATCH...): the router's own answer
    documented = case.operation.definition.raw["responses"]
    assert str(response.status_code) in documented, (
        f"{where} answered {response.status_code}, not in its documented responses: {response.text[:300]}")
    if response.status_code >= 400:
        assert response.json()["error"], "every error is a JSON sentence"
