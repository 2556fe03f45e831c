"""Running the CLI in-process the way a user runs it, and checking the one-line error contract."""

from __future__ import annotations

from typer.testing import CliRunner

from uptrain.cli import app


def run_cli(*args: str, env: dict | None = None, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, input=input)


def assert_one_line_error(result, *fragments: str, code: int | None = None) -> str:
    """A non-zero exit, exactly one `error:` line naming the problem, and no traceback."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def subprocess_env(**extra: str) -> dict:
    """Environment for running `python -m uptrain` in a subprocess from this source tree."""
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env
