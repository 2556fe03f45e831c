"""Talking to the Hub through failures: transient ones are retried with exponential backoff, the
rest become one line that names the fix.

Transient: HTTP 408, 429 and 5xx, and a dropped, refused or timed-out connection. A retried upload
is the whole upload_folder call again; huggingface_hub skips LFS objects the Hub already holds.
401/403 name HF_TOKEN. The messages never quote a request's headers, so the token stays out.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from uptrain.errors import UptrainError

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all, waiting base_delay x 2^k seconds (at most max_delay) in between."""

    attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (failures - 1))


DEFAULT_RETRY = RetryPolicy()


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    for _ in range(16):
        if exc is None:
            return
        yield exc
        exc = exc.__cause__ or exc.__context__


def http_status(exc: BaseException) -> int | None:
    for e in _chain(exc):
        code = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a dropped, refused or timed-out connection, for the HTTP client in use."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        try:
            http = importlib.import_module(name)
        except ImportError:
            continue
        types += [http.TimeoutException, http.NetworkError, http.RemoteProtocolError]
    return tuple(types)


def network_failure(exc: BaseException) -> BaseException | None:
    errors = _network_errors()
    return next((e for e in _chain(exc) if isinstance(e, errors)), None)


def is_transient(exc: BaseException) -> bool:
    return http_status(exc) in TRANSIENT_STATUS or network_failure(exc) is not None


def _hub_error(exc: BaseException, what: str, repo_id: str, endpoint: str, attempts: int) -> UptrainError:
    status = http_status(exc)
    if status in (401, 403):
        return UptrainError(
            f"the Hub refused {what} for {repo_id} (HTTP {status}): the token is missing, invalid or lacks "
            "write access; set HF_TOKEN to a token with write access (or run `hf auth login`)"
        )
    if status in TRANSIENT_STATUS:
        return UptrainError(
            f"the Hub kept answering HTTP {status} to {what} ({attempts} attempts); retry later"
        )
    network = network_failure(exc)
    if network is not None:
        return UptrainError(
            f"cannot reach the Hub at {endpoint} for {what} ({type(network).__name__}, {attempts} attempts); "
            "check your network or HF_ENDPOINT"
        )
    if status == 404:
        return UptrainError(
            f"{what} for {repo_id} failed with HTTP 404; "
            "check REPO_ID and that HF_TOKEN may write to its owner"
        )
    detail = next(
        (str(e.server_message) for e in _chain(exc) if getattr(e, "server_message", None)), str(exc)
    )
    first = detail.strip().splitlines()[0] if detail.strip() else type(exc).__name__
    code = f"HTTP {status}: " if status else ""
    return UptrainError(f"{what} for {repo_id} failed ({code}{first}); fix what it names and push again")


def call_with_retries(
    what: str,
    fn: Callable[[], T],
    *,
    repo_id: str,
    endpoint: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """fn(), retried on transient failures; any failure left becomes a one-line UptrainError."""
    policy = policy or DEFAULT_RETRY
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except UptrainError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line (or a retry)
            if not is_transient(exc) or attempt == policy.attempts:
                raise _hub_error(exc, what, repo_id, endpoint, attempt) from exc
            status = http_status(exc)
            reason = f"HTTP {status}" if status else type(network_failure(exc)).__name__
            delay = policy.delay(attempt)
            log.warning(
                "%s failed (%s); retrying in %.3g s (attempt %d of %d)",
                what, reason, delay, attempt + 1, policy.attempts,
            )  # fmt: skip
            sleep(delay)
    raise AssertionError("unreachable")
