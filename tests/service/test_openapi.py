"""The OpenAPI document describes the real API: its auth, its problem responses and the JobSpec it accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobstore.settings import Settings
from prunekit.spec.job import JobSpec
from service.app import create_app
from service.core.errors import PROBLEM_MEDIA_TYPE

PROBLEM_REF = "#/components/schemas/Problem"
JOB_SPEC_REF = "#/components/schemas/JobSpec"


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(
        database_url=f"sqlite:///{tmp}/prunekit.db",
        storage_dir=tmp / "storage",
        broker_dir=tmp / "broker",
        api_keys="alice:key-alice-openapi",  # type: ignore[arg-type]
    )
    # No lifespan: the document needs neither the database nor the broker.
    response = TestClient(create_app(settings)).get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _problem_statuses(operation: dict[str, Any]) -> set[int]:
    return {
        int(status)
        for status, resp in operation["responses"].items()
        if resp.get("content", {}).get(PROBLEM_MEDIA_TYPE, {}).get("schema") == {"$ref": PROBLEM_REF}
    }


def test_bearer_security_scheme_on_authenticated_routes_only(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "http", "scheme": "bearer", "description": schemes["apiKey"]["description"]}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            names = {p["name"].lower() for p in op.get("parameters", [])}
            assert "authorization" not in names, f"{method} {path} documents Authorization as a parameter"
            if path.startswith("/v1/"):
                assert {"apiKey": []} in op["security"], f"{method} {path}"
    for public in ("/livez", "/readyz", "/metrics"):
        assert "security" not in doc["paths"][public]["get"]
    # Read-only pages a browser opens also take the jobs page's session cookie.
    assert doc["paths"]["/v1/jobs/{job_id}/report"]["get"]["security"] == [{"apiKey": []}, {"session": []}]
    assert doc["paths"]["/v1/jobs/{job_id}"]["get"]["security"] == [{"apiKey": []}]


def test_problem_responses_are_problem_json(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert {"status", "code", "title", "detail", "type", "instance", "errors"} <= set(problem["properties"])
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's own 422 is never sent

    paths = doc["paths"]
    assert {401, 413, 415, 422, 500} <= _problem_statuses(paths["/v1/jobs"]["post"])
    assert {401, 404, 422, 500} <= _problem_statuses(paths["/v1/jobs/{job_id}"]["get"])
    assert {404, 409, 416} <= _problem_statuses(paths["/v1/jobs/{job_id}/artifact"]["get"])
    for path, ops in paths.items():
        for method, op in ops.items():
            assert 500 in _problem_statuses(op), f"{method} {path}"
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) and PROBLEM_MEDIA_TYPE not in resp.get("content", {}):
                    # Only the jobs page's HTML sign-in form and /readyz's checks are not problem bodies.
                    assert (path, status) in {("/ui", "401"), ("/readyz", "503")}, f"{method} {path} {status}"


def test_job_submission_spec_is_the_job_spec(doc: dict[str, Any]) -> None:
    content = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"]["properties"]["spec"] == {"$ref": JOB_SPEC_REF}
    assert content["multipart/form-data"]["schema"]["properties"]["spec"]["$ref"] == JOB_SPEC_REF
    job_spec = doc["components"]["schemas"]["JobSpec"]
    assert set(job_spec["properties"]) == set(JobSpec.model_fields)
    # Every schema the JobSpec refers to is in the document too.
    for ref in {part.split("'")[0] for part in str(doc).split("#/components/schemas/")[1:]}:
        assert ref in doc["components"]["schemas"], ref


def test_a_real_error_matches_the_documented_problem(doc: dict[str, Any], tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/prunekit.db",
        storage_dir=tmp_path / "storage",
        broker_dir=tmp_path / "broker",
        api_keys="alice:key-alice-openapi",  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/v1/jobs/job_0")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    schema = {"$ref": PROBLEM_REF, "components": doc["components"]}
    jsonschema.validate(response.json(), schema)


def test_method_not_allowed_names_every_method_of_the_path(client: TestClient) -> None:
    # /v1/jobs is served by two routes (GET list, POST submit): Starlette alone named only the first.
    r = client.request("OPTIONS", "/v1/jobs")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    r = client.request("PUT", "/v1/jobs/job_123")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
