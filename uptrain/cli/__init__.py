"""The `uptrain` command line: a thin typer layer over the library.

Every user mistake surfaces as one line, `error: <what to fix>`, on stderr with a non-zero exit
code; tracebacks appear only with `uptrain --debug ...` (or UPTRAIN_DEBUG=1).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from typing import Any

import click
import typer
from typer.core import TyperGroup

try:  # typer >= 0.25 ships its own copy of click; older releases use click itself
    from typer import _click as typer_click
except ImportError:  # pragma: no cover
    typer_click = click

from uptrain import __version__
from uptrain.errors import SettingError, UptrainError, as_flag

CLICK_ERRORS = (click.ClickException, typer_click.ClickException)
ABORTS = (click.exceptions.Abort, typer.Abort)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _debug_requested(args: list[str]) -> bool:
    return "--debug" in args or os.environ.get("UPTRAIN_DEBUG") == "1"


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


_signalled: list[int] = []  # the SIGINT/SIGTERM received during this command, if any
_resent: list[threading.Timer] = []  # signals sent again after arriving inside a finalizer


def _raise_interrupt(signum: int, frame: Any) -> None:
    # Recorded as well as raised: a KeyboardInterrupt raised while torch's C++ code is calling back
    # into Python can come out as another exception (e.g. a ValueError about a storage's shape).
    _signalled.append(signum)
    if _inside_finalizer(frame):
        # Python prints an exception raised in a __del__ ("Exception ignored in ...") and drops it, so
        # the command would go on: the signal is sent again a moment later, outside the finalizer
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        _resent.append(timer)
        timer.start()
        return
    raise KeyboardInterrupt


def _inside_finalizer(frame: Any) -> bool:
    """Whether the signal arrived while a __del__ method was running (e.g. the regex objects that
    importing transformers frees)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


class UptrainGroup(TyperGroup):
    """Turns every failure into one line and an exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        extra.pop("standalone_mode", None)
        debug = _debug_requested(args)
        _signalled.clear()
        previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = super().main(args=args, prog_name=prog_name or "uptrain", standalone_mode=False, **extra)
        except CLICK_ERRORS as exc:
            if not exc.format_message():  # no arguments at all: the help was shown
                sys.exit(exc.exit_code)
            command = next((a for a in args if not a.startswith("-")), None)
            hint = f"uptrain {command} --help" if command in self.commands else "uptrain --help"
            _fail(f"{exc.format_message()} (see '{hint}')", exc.exit_code)
        except ABORTS:
            _fail("interrupted", EXIT_INTERRUPTED)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except UptrainError as exc:
            if debug:
                traceback.print_exc()
            # a setting the library names by its field is an option here: <groups> -> --groups
            _fail(exc.said(as_flag) if isinstance(exc, SettingError) else str(exc), exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
            if _signalled:  # an interrupt that surfaced as another exception
                _fail("interrupted", EXIT_INTERRUPTED)
            if debug:
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _fail(f"{type(exc).__name__}: {first} (an internal error; rerun with --debug and report it)", 1)
        finally:
            for timer in _resent:  # the command is over: a signal still to be sent again is moot
                timer.cancel()
            _resent.clear()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if code == EXIT_INTERRUPTED:
            _fail("interrupted", EXIT_INTERRUPTED)
        sys.exit(code or 0)


app = typer.Typer(
    cls=UptrainGroup,
    name="uptrain",
    help="Convert a multi-head-attention LM to grouped-query (GQA) or multi-query (MQA) attention, "
    "then uptrain it to recover its quality (Ainslie et al. 2023).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"uptrain {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """uptrain: MHA -> GQA/MQA conversion and uptraining."""


from uptrain.cli import convert as _convert  # noqa: E402,F401  (registers its commands)
from uptrain.cli import eval as _eval  # noqa: E402,F401
from uptrain.cli import plan as _plan  # noqa: E402,F401
from uptrain.cli import push as _push  # noqa: E402,F401
from uptrain.cli import run as _run  # noqa: E402,F401
from uptrain.cli import train as _train  # noqa: E402,F401


def main() -> None:
    app()
