"""What every benchmark in scripts/ records, in one JSON shape that scripts/bench_all.py renders.

    {"benchmark": "convert", "title": ..., "command": ..., "machine": {...}, "versions": {...},
     "load_average": {"start": [1, 5, 15 min], "end": [...]}, "started": ..., "wall_s": ...,
     "settings": {...}, "figures": [{"name", "value", "unit", "target", "met", "note"}], "details": {...}}

`figures` holds the headline numbers (each comparison a ratio measured side by side in one run);
`details` holds everything else a reader may want (raw times, per-run values). Importing this module
imports no torch, so a parent process that only starts and times children stays light.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("benchmark", "title", "command", "machine", "versions", "load_average", "settings", "figures")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "ram_gib": round(ram / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "device": device,
    }


def versions() -> dict[str, str]:
    """Versions from package metadata (nothing else is imported); uptrain from the installed package."""
    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "safetensors", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    from uptrain import __version__

    found["uptrain"] = __version__
    return found


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def shown_path(text: str) -> str:
    """A path as a committed page may show it: relative to the checkout (or to its ../shared), or
    `package:PKG/FILE` for a file an installed package ships; never this machine's absolute path."""
    if not text.startswith("/"):
        return text
    path = Path(text).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent / "shared", "../shared/")):
        try:
            return prefix + path.relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    parts = path.parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return "package:" + "/".join(rest)
    return text


def command_line() -> str:
    script = shown_path(str(Path(sys.argv[0]).resolve()))
    return shlex.join(["python", script, *map(shown_path, sys.argv[1:])])


def figure(
    name: str,
    value: float,
    unit: str = "",
    target: str | None = None,
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One headline number. `target` is the goal in words (e.g. "<= 2.0"); `met` whether it held."""
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, "note": note}


class Report:
    """Collects one benchmark's results; `write` adds the machine, versions and end-of-run load."""

    def __init__(self, benchmark: str, title: str, settings: dict[str, Any], device: str = "cpu") -> None:
        self.data: dict[str, Any] = {
            "benchmark": benchmark,
            "title": title,
            "command": command_line(),
            "machine": machine(device),
            "versions": versions(),
            "load_average": {"start": load_average()},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": settings,
            "figures": [],
            "details": {},
        }
        self._t0 = time.perf_counter()

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.data["figures"].append(figure(*args, **kwargs))

    def write(self, path: Path) -> dict[str, Any]:
        self.data["load_average"]["end"] = load_average()
        self.data["wall_s"] = round(time.perf_counter() - self._t0, 1)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(_plain(self.data), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return self.data


def _plain(value: Any) -> Any:
    """JSON-ready: paths as text, NaN and infinities as null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (Path, str)):
        return shown_path(str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_figures(data: dict[str, Any]) -> None:
    print(f"{data['title']}  (load average {data['load_average']})")
    for f in data["figures"]:
        target = f" target {f['target']}" if f["target"] else ""
        met = "" if f["met"] is None else ("  met" if f["met"] else "  MISSED")
        print(f"  {f['name']:<48} {f['value']:>12.4g} {f['unit']:<8}{target}{met}")
