"""`prunekit login` and contexts: the key is kept in a 0600 file, never printed, and flags and env vars still win."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prunekit.cli import remote
from prunekit.cli.config import config_path, load_config
from prunekit.cli.exit_codes import ExitCode
from prunekit.cli.main import app
from prunekit.client import PrunekitClient
from tests.client.prunekit_fake_api import FAST_RETRY, GOOD_KEY, FakeServer


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("PRUNEKIT_SERVER", "PRUNEKIT_API_KEY", "PRUNEKIT_CONTEXT"):
        monkeypatch.delenv(name, raising=False)

    def make(server: str, api_key: str | None, http_timeout: float = 60.0) -> PrunekitClient:
        return PrunekitClient(server, api_key, timeout=http_timeout, retry=FAST_RETRY)

    monkeypatch.setattr(remote, "_client", make)  # quick retries for the dead server below
    yield tmp_path / "xdg"


def _run(*args: str, stdin: str | None = None, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), input=stdin, env=env or None, catch_exceptions=False)


def test_login_keeps_the_key_readable_by_its_owner_only_and_never_prints_it(
    fake: FakeServer, config_home: Path
) -> None:
    result = _run("login", "--server", fake.url, stdin=f"{GOOD_KEY}\n")  # asked for, not echoed
    assert result.exit_code == 0, result.output
    assert GOOD_KEY not in result.output
    path = config_path()
    assert path == config_home / "prunekit" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_config().contexts["default"].api_key == GOOD_KEY

    listed = _run("list", "--json")  # no --server, no PRUNEKIT_API_KEY: the saved context answers
    assert listed.exit_code == 0, listed.output
    assert GOOD_KEY not in _run("context", "list").output


def test_flags_and_environment_win_over_the_saved_context(fake: FakeServer, dead_url: str) -> None:
    assert _run("login", "--server", fake.url, "--api-key", GOOD_KEY).exit_code == 0
    assert _run("list", "--json", PRUNEKIT_API_KEY="wrong-key").exit_code == ExitCode.AUTH_ERROR
    assert _run("list", "--json", "--api-key", "wrong-key").exit_code == ExitCode.AUTH_ERROR
    assert _run("list", "--json", "--server", dead_url).exit_code == ExitCode.UNREACHABLE
    assert _run("list", "--json", PRUNEKIT_SERVER=dead_url).exit_code == ExitCode.UNREACHABLE


def test_a_refused_key_is_not_saved(fake: FakeServer) -> None:
    result = _run("login", "--server", fake.url, "--api-key", "wrong-key")
    assert result.exit_code == ExitCode.AUTH_ERROR and "nothing was saved" in result.output
    assert not config_path().exists()


def test_contexts_switch_servers(fake: FakeServer, dead_url: str) -> None:
    assert _run("login", "--server", fake.url, "--api-key", GOOD_KEY, "--context", "lab").exit_code == 0
    saved = _run("login", "--server", dead_url, "--api-key", "other-key", "--context", "ci", "--no-check")
    assert saved.exit_code == 0, saved.output
    listing = _run("context", "list").stdout
    assert f"* ci\t{dead_url}" in listing and f"  lab\t{fake.url}" in listing and "other-key" not in listing

    assert _run("list", "--json").exit_code == ExitCode.UNREACHABLE  # the newest login is in use
    assert _run("--context", "lab", "list", "--json").exit_code == 0
    assert _run("list", "--json", PRUNEKIT_CONTEXT="lab").exit_code == 0
    assert _run("context", "use", "lab").exit_code == 0
    assert _run("list", "--json").exit_code == 0
    unknown = _run("--context", "nope", "list")
    assert unknown.exit_code == ExitCode.INVALID_INPUT and "no saved context 'nope'" in unknown.output

    assert _run("logout").exit_code == 0
    assert set(load_config().contexts) == {"ci"} and load_config().current == "ci"


def test_a_damaged_config_file_is_reported_in_plain_words() -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("current = [unclosed\n")
    result = _run("list")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "cannot read" in result.output and "prunekit login" in result.output and "Traceback" not in result.output
