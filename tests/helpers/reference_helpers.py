"""A miniature reference model through scripts/build_reference_model.py's own code path, for the tests
of that script and of scripts/ablations.py (no ../shared: the 'WikiText' here is made up)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]

# 1 layer, width 32, 8 heads of 4 dims; 2 blocks of 32 tokens a step
MINI = [
    "--layers", "1", "--hidden", "32", "--heads", "8", "--intermediate", "64", "--vocab", "320",
    "--seq-len", "32", "--batch", "2", "--eval-blocks", "2", "--eval-every", "0",
    "--checkpoint-every", "0", "--no-stdlib", "--threads", "1",
]  # fmt: skip
MINI_TOKENS_PER_STEP = 2 * 32


def load_script(name: str) -> ModuleType:
    """A module from scripts/ (which is not a package), imported by path; scripts/ goes on sys.path, as
    `python scripts/NAME.py` puts it, so that the scripts' imports of each other resolve."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fake_wikitext(path: Path, articles: int = 6) -> Path:
    """Text in WikiText's layout: ` = Title = ` lines, ` = = Section = = ` lines, paragraphs."""
    words = ["the", "of", "and", "a", "to", "in", "is", "was", "for", "on", "as", "by", "with", "his"]
    lines = [" \n"]
    for a in range(articles):
        lines += [f" = Article {a} = \n", " \n"]
        for s in range(3):
            lines += [f" = = Section {s} = = \n", " \n"]
            body = " ".join(words[(a * 7 + s * 3 + i * i) % len(words)] for i in range(120))
            lines += [f" {body} . \n", " \n"]
    path.write_text("".join(lines))
    return path


def build_mini_reference(out: Path, wikitext: Path, steps: int, extra_tokens: int = 0) -> Path:
    """Pre-train the miniature reference for `steps` steps; `extra_tokens` (< one step) is asked for
    too, to check that the budget rounds down to whole steps."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    builder = load_script("build_reference_model")
    tokens = steps * MINI_TOKENS_PER_STEP + extra_tokens
    argv = ["--wikitext", str(wikitext), "--out", str(out), "--tokens", str(tokens), *MINI]
    args = builder.parse_args(argv)
    return builder.build_reference(args)
