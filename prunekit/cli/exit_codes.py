"""Exit codes of the `prunekit` command, stable for CI pipelines (documented in README)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    INVALID_INPUT = 2  # bad spec, model, data or arguments (also typer's usage errors)
    GATE_MISSED = 3  # the job ran, but a quality gate failed
    JOB_FAILED = 4
    CANCELED = 5
    WAIT_TIMEOUT = 6
    AUTH_ERROR = 7
    UNREACHABLE = 8  # the server could not be reached (after retries)
    GATE_INCONCLUSIVE = 9  # no gate failed, but a latency / speedup gate's interval straddles its threshold
