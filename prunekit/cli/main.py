"""Entry point of the `prunekit` command; subcommands live in one module per concern."""

from __future__ import annotations

import typer

from prunekit.cli import config, events, local, remote

app = typer.Typer(
    name="prunekit",
    help="Prune and regularize PyTorch models; report what it cost. See README for exit codes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
local.register(app)
remote.register(app)
events.register(app)
config.register(app)


if __name__ == "__main__":
    app()
