"""docker-compose.yml and Dockerfile checked without Docker (none runs here): `docker compose config`-level checks.

The compose file is validated against the Compose Specification's JSON Schema (compose_spec.json, Apache-2.0,
vendored from the compose-spec project as shipped in docker-compose 1.29.2), then against what prunekit needs:
known settings, migrations before the API, healthchecks, queues, the GPU reservation, runnable commands.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from jobstore.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("compose_spec.json")
PRUNEKIT_SERVICES = ("migrate", "api", "worker-cpu", "worker-gpu")
LONG_RUNNING = ("postgres", "redis", "minio", "api", "worker-cpu", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in _validator().iter_errors(compose)]
    assert errors == []


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["healtcheck"] = broken["services"]["api"].pop("healthcheck")
    assert list(_validator().iter_errors(broken)), "a misspelt service key must fail the schema check"


def test_every_prunekit_variable_is_a_setting(compose: dict[str, Any], dockerfile: str) -> None:
    fields = {f"PRUNEKIT_{name.upper()}" for name in Settings.model_fields}
    used = {k for name in PRUNEKIT_SERVICES for k in _env(compose["services"][name]) if k.startswith("PRUNEKIT_")}
    used |= set(re.findall(r"\b(PRUNEKIT_[A-Z0-9_]+)=", dockerfile))
    assert used, "no PRUNEKIT_ settings found"
    assert sorted(used - fields) == []


def test_services_start_in_order_and_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
    for name in ("api", "worker-cpu", "worker-gpu"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        for infra in ("redis", "minio"):
            assert deps[infra]["condition"] == "service_healthy", f"{name} must wait for {infra}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_api_and_workers_share_the_distributed_settings(compose: dict[str, Any]) -> None:
    envs = [_env(compose["services"][n]) for n in PRUNEKIT_SERVICES]
    for key in ("PRUNEKIT_DATABASE_URL", "PRUNEKIT_BROKER_URL", "PRUNEKIT_STORAGE_BACKEND", "PRUNEKIT_S3_BUCKET"):
        assert len({env[key] for env in envs}) == 1, f"{key} differs between services"
    api = envs[1]
    assert api["PRUNEKIT_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert api["PRUNEKIT_BROKER_URL"].startswith("redis://redis:")
    assert api["PRUNEKIT_STORAGE_BACKEND"] == "s3"
    assert api["PRUNEKIT_MIGRATE_ON_START"] == "false"  # the migrate service does it, once


def test_redis_persists_and_workers_consume_their_queues(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    cpu, gpu = services["worker-cpu"]["command"], services["worker-gpu"]["command"]
    assert cpu[cpu.index("-Q") + 1] == "cpu"
    assert gpu[gpu.index("-Q") + 1] == "gpu" and gpu[gpu.index("-c") + 1] == "1"  # one job per GPU
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "deploy" not in services["worker-cpu"]


@pytest.mark.parametrize("name", PRUNEKIT_SERVICES)
def test_commands_name_modules_that_run(compose: dict[str, Any], name: str) -> None:
    cmd = compose["services"][name]["command"]
    if cmd[:2] == ["python", "-m"]:
        spec = importlib.util.find_spec(cmd[2])
        assert spec is not None and spec.origin is not None, cmd
        assert '__name__ == "__main__"' in Path(spec.origin).read_text(), f"{cmd[2]} does nothing when run"
    else:
        assert cmd[:3] == ["celery", "-A", "worker.main"], cmd
        assert importlib.util.find_spec("worker.main") is not None


def test_dockerfile_copies_what_exists_and_is_not_ignored(dockerfile: str) -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    sources = [
        src
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    ]
    assert sources, "no COPY lines found"
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert src.split("/")[0].rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"
    assert "USER prunekit" in dockerfile  # jobs never run as root in the image


def test_dockerfile_installs_every_package_the_project_ships(dockerfile: str) -> None:
    import tomllib

    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.rstrip("*") for p in includes)
    copied = {line.split()[1].rstrip("/") for line in dockerfile.splitlines() if line.startswith("COPY ")}
    for package in packages:
        assert package in copied, f"the Dockerfile does not COPY {package}/"
        assert f"{package}/__init__.py" in dockerfile, f"the dependency layer does not stub {package}/"


def test_healthchecks_probe_routes_the_api_serves(compose: dict[str, Any], dockerfile: str) -> None:
    from service.app import create_app

    paths = set(create_app(Settings(auth_disabled=True)).openapi()["paths"])
    probes = re.findall(r"http://127\.0\.0\.1:8000(/\w+)", json.dumps(compose) + dockerfile)
    assert probes and set(probes) <= paths, (probes, sorted(paths))
