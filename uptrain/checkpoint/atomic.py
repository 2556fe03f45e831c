"""Outputs that appear whole or not at all.

Work happens in a temporary directory beside OUT, named `.OUT.uptrain-tmp-<pid>-<hex>`, which is
renamed to OUT at the end. An error or an interruption removes it; after a hard kill, the next
run for the same OUT removes leftovers whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from uptrain.errors import UptrainError

_TMP = re.compile(r"^\.(?P<name>.+)\.uptrain-(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove what killed runs left beside OUT; return what was removed. A previous OUT that a
    killed `--overwrite` had moved aside, but not yet replaced, is put back first."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for entry in sorted(out.parent.iterdir()):
        m = _TMP.match(entry.name)
        if not m or m["name"] != out.name or _pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not out.exists():
            entry.rename(out)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def check_output_free(out: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty OUT unless overwriting was asked for."""
    if out.is_file():
        raise UptrainError(f"{out} is a file; choose a directory for the output")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UptrainError(
            f"{out} already exists and is not empty; pass --overwrite or choose another output"
        )


def disk_error(exc: OSError, out: Path) -> UptrainError | None:
    """A one-line error for a full disk, a quota or a file-size limit, or None for other OS errors."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UptrainError(
            f"no space left on the device holding {out.parent}; free space or choose another output"
        )
    if exc.errno == errno.EFBIG:
        return UptrainError(
            f"a file in {out.parent} grew past the size this filesystem or your limit (ulimit -f) allows; "
            "raise the limit or choose another output"
        )
    return None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, so that a cleanup or a pair of renames is not cut
    in half (a second Ctrl-C is common). A signal that came meanwhile is delivered at the end."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes OUT when the block finishes without error."""
    out = Path(os.path.abspath(out))
    remove_stale_temporaries(out)
    check_output_free(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = out.parent / f".{out.name}.uptrain-tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        with signals_deferred():  # OUT is never left moved aside by an interrupt between the renames
            if out.exists():
                old = out.parent / f".{out.name}.uptrain-old-{tag}"
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(out)
            _fsync_dir(out.parent)
    except OSError as exc:
        with signals_deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        err = disk_error(exc, out)
        if err is not None:
            raise err from exc
        raise
    except BaseException:
        with signals_deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small file so that readers see the old content or the new, never a mix."""
    tmp = path.parent / f".{path.name}.uptrain-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
