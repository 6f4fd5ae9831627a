"""`prunekit login` and contexts: server URLs and API keys kept in a config file readable by its owner only.

The file is $XDG_CONFIG_HOME/prunekit/config.toml (default ~/.config/prunekit/config.toml), mode 0600. Options and
the PRUNEKIT_SERVER / PRUNEKIT_API_KEY variables still win over it: the file only supplies their defaults.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from prunekit.cli.exit_codes import ExitCode
from prunekit.client import DEFAULT_SERVER, ENV_SERVER, AuthError, PrunekitClient, PrunekitError

ENV_CONTEXT = "PRUNEKIT_CONTEXT"
DEFAULT_CONTEXT = "default"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
context_app = typer.Typer(help="Switch between the servers `prunekit login` saved.", no_args_is_help=True)


class ConfigError(Exception):
    """The config file cannot be used; the message says why in prunekit's words."""


@dataclass(frozen=True)
class Context:
    server: str
    api_key: str


@dataclass
class Config:
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)


def config_path() -> Path:
    """Where the config lives: $XDG_CONFIG_HOME/prunekit/config.toml, else ~/.config/prunekit/config.toml."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "prunekit" / "config.toml"


def load_config(path: Path | None = None) -> Config:
    """The saved contexts; an empty Config when there is no file yet."""
    path = path or config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({type(exc).__name__}); fix it or run `prunekit login` again") from None
    contexts = {}
    for name, entry in (raw.get("contexts") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("server"), str) or not entry.get("api_key"):
            raise ConfigError(f"{path}: context {name!r} needs a server and an api_key; run `prunekit login` again")
        contexts[name] = Context(entry["server"], str(entry["api_key"]))
    current = raw.get("current")
    return Config(current if isinstance(current, str) else None, contexts)


def save_config(config: Config, path: Path | None = None) -> Path:
    """Write the file atomically with mode 0600 (it holds API keys), its folder 0700."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # JSON strings are valid TOML basic strings; names are checked to be bare keys.
    lines = [f"current = {json.dumps(config.current)}"] if config.current else []
    for name, ctx in sorted(config.contexts.items()):
        lines += [
            "",
            f"[contexts.{name}]",
            f"server = {json.dumps(ctx.server)}",
            f"api_key = {json.dumps(ctx.api_key)}",
        ]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, ("\n".join(lines) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(code: ExitCode, message: str) -> NoReturn:
    _err().print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(int(code))


def _load_or_fail() -> Config:
    try:
        return load_config()
    except ConfigError as exc:
        _fail(ExitCode.INVALID_INPUT, str(exc))


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        _fail(ExitCode.INVALID_INPUT, f"context name {name!r}: use letters, digits, '-' and '_' (at most 64)")


def _command_defaults(command: Any, values: dict[str, str]) -> dict[str, Any]:
    # click's default_map: consulted after the command line and the environment, before the built-in default.
    # Not for login: a new login must not offer the saved key as the answer to its prompt.
    subcommands = getattr(command, "commands", None)  # a group (typer ships its own click: no isinstance)
    if isinstance(subcommands, dict):
        return {name: _command_defaults(sub, values) for name, sub in subcommands.items() if name != "login"}
    names = {p.name for p in command.params}
    return {k: v for k, v in values.items() if k in names}


def use_saved_context(
    ctx: typer.Context,
    context: Annotated[
        str | None,
        typer.Option(
            "--context", envvar=ENV_CONTEXT, show_envvar=True, help="Saved server to use (see `prunekit login`)."
        ),
    ] = None,
) -> None:
    """Prune and regularize PyTorch models; report what it cost. See README for exit codes."""
    config = _load_or_fail()
    name = context or config.current
    if context and context not in config.contexts:
        _fail(ExitCode.INVALID_INPUT, f"no saved context {context!r}; `prunekit context list` shows them")
    saved = config.contexts.get(name or "")
    if saved is not None:
        ctx.default_map = _command_defaults(ctx.command, {"server": saved.server, "api_key": saved.api_key})


def login(
    server: Annotated[str, typer.Option("--server", envvar=ENV_SERVER, help="Base URL of the prunekit server.")] = (
        DEFAULT_SERVER
    ),
    api_key: Annotated[
        str,
        typer.Option(
            "--api-key",
            prompt="API key",
            hide_input=True,
            help="Asked for when not given (not echoed).",
            show_default=False,
        ),
    ] = "",
    context: Annotated[str, typer.Option("--context", help="Name to save it under.")] = DEFAULT_CONTEXT,
    check: Annotated[bool, typer.Option(help="Check the key against the server before saving it.")] = True,
) -> None:
    """Save a server and API key (mode 0600) so later commands need neither --server nor PRUNEKIT_API_KEY."""
    _check_name(context)
    if check:
        try:
            with PrunekitClient(server, api_key, timeout=30) as client:
                client.list_jobs(limit=1)
        except AuthError:
            _fail(ExitCode.AUTH_ERROR, f"{server} refused this API key; nothing was saved")
        except PrunekitError as exc:
            _fail(ExitCode.UNREACHABLE, f"could not check the key at {server} ({exc}); use --no-check to save anyway")
    config = _load_or_fail()
    config.contexts[context] = Context(server.rstrip("/"), api_key)
    config.current = context
    path = save_config(config)
    _err().print(escape(f"saved context {context!r} for {server} in {path} (readable by you only); now in use"))


def logout(context: Annotated[str | None, typer.Option("--context", help="Context to forget.")] = None) -> None:
    """Forget a saved context (the one in use by default) and its key."""
    config = _load_or_fail()
    name = context or config.current
    if name not in config.contexts:
        _fail(ExitCode.INVALID_INPUT, f"no saved context {name!r}")
    del config.contexts[str(name)]
    if config.current == name:
        config.current = next(iter(sorted(config.contexts)), None)
    save_config(config)
    _err().print(escape(f"forgot context {name!r}" + (f"; now using {config.current!r}" if config.current else "")))


@context_app.command("list")
def context_list() -> None:
    """The saved contexts and their servers (never their keys); * marks the one in use."""
    config = _load_or_fail()
    if not config.contexts:
        _err().print("no saved contexts; `prunekit login --server URL` saves one")
    for name, saved in sorted(config.contexts.items()):
        typer.echo(f"{'*' if name == config.current else ' '} {name}\t{saved.server}")


@context_app.command("use")
def context_use(
    name: Annotated[str, typer.Argument(help="A context saved by `prunekit login --context NAME`.")],
) -> None:
    """Make a saved context the one later commands use."""
    config = _load_or_fail()
    if name not in config.contexts:
        _fail(ExitCode.INVALID_INPUT, f"no saved context {name!r}; `prunekit context list` shows them")
    config.current = name
    save_config(config)
    _err().print(escape(f"now using context {name!r} ({config.contexts[name].server})"))


def register(app: typer.Typer) -> None:
    """Attach login, logout and `context`, and let every command take its defaults from the saved context."""
    panel = "Server (client)"
    app.callback()(use_saved_context)
    app.command("login", rich_help_panel=panel)(login)
    app.command("logout", rich_help_panel=panel)(logout)
    app.add_typer(context_app, name="context", rich_help_panel=panel)
