"""Units and their formatting, one formatter each: token counts, bytes, percentages.

The CLI, the model card, the report and the budget all print through these, so a number reads the
same everywhere ("97.3K" tokens, "45.0 KiB", "5.0%").
"""

from __future__ import annotations

import math
import re

_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_TOKENS = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


def parse_tokens(value: int | float | str) -> int:
    """A token count written as 2000000, 2e6, "2M", "1.5T" or "100_000"."""
    if isinstance(value, bool):
        raise ValueError(f"a token count must be a number such as 2000000 or '2T', not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a token count must be a whole number >= 0, not {value!r}")
        return value
    if isinstance(value, float):
        number = value
    else:
        m = _TOKENS.match(str(value))
        if not m:
            raise ValueError(f"a token count must be a number such as 2000000 or '2T', not {value!r}")
        number = float(m[1].replace("_", "").replace(",", "")) * _SUFFIXES[m[2].upper()]
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(f"a token count must be a whole number >= 0, not {value!r}")
    return int(number)


class TokenCount(int):
    """An int that a config may write as "2T" or "100B"."""

    type_label = "token count (e.g. 2000000 or '2T')"

    @classmethod
    def from_config_value(cls, value: object) -> TokenCount:
        return cls(parse_tokens(value))  # type: ignore[arg-type]

    def to_config_value(self) -> int:
        return int(self)


def format_tokens(n: float) -> str:
    """Compact token counts: 100 -> "100", 97_280 -> "97.3K", 2e12 -> "2.0T", 1e11 -> "100B"."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            x = n / scale
            one_decimal = float(f"{x:.1f}")
            whole = one_decimal >= 100 or (one_decimal >= 10 and one_decimal == int(one_decimal))
            return f"{x:.0f}{suffix}" if whole else f"{x:.1f}{suffix}"
    return f"{n:.0f}"


def format_percent(fraction: float) -> str:
    """5% as "5.0%"; below 1%, two significant digits ("0.26%", "0.0012%")."""
    pct = fraction * 100
    return f"{pct:.1f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"


def format_bytes(n: float) -> str:
    """Binary units: 1,536 -> "1.5 KiB", 46,080 -> "45.0 KiB"; below 1 KiB, whole bytes ("512 B")."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_duration(seconds: float) -> str:
    """45 s, 3 min 20 s, 2 h 5 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
