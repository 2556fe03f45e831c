"""A calibrated conversion SIGKILLed after some layers continues, when the same command runs again,
after the last layer it finished, and writes what an uninterrupted run writes; one with other
settings starts over. The state beside OUT (and a translating family's translation) is gone once a
conversion finishes.

Outputs are compared bitwise: the carried hidden states are saved in the dtype they were computed
in (float32), so the resumed layers run the same kernels on the same numbers as an uninterrupted
run does (refine draws nothing at random).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_helpers import run_cli, subprocess_env
from method_helpers import save_char_tokenizer
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_models import build_tiny

LAYERS = 8
TEXT = "The quick brown fox jumps over the lazy dog. Grouped-query attention shares keys and values.\n" * 20


def arguments(text, steps: int = 20) -> list[str]:
    return [
        "-g", "2", "--method", "fit+refine", "--sequential", "--calibration-data", str(text),
        "--calibration-tokens", "400", "--calibration-seq-len", "40", "--refine-steps", str(steps),
    ]  # fmt: skip


def layers_done(state) -> int:
    path = state / "carry.safetensors"
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as f:  # replaced atomically: always whole
        return int(f.metadata()["done"])


def kill_after(src, out, args, layers: int) -> int:
    """Start `uptrain convert`, SIGKILL it once `layers` layers are done; the layers done then."""
    state = out.parent / f".{out.name}.uptrain-partial"
    command = [sys.executable, "-m", "uptrain", "convert", str(src), str(out), *args]
    proc = subprocess.Popen(
        command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while layers_done(state) < layers and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = layers_done(state)
    assert layers <= done < LAYERS, f"killed after {done} layers; the test needs {layers} to {LAYERS - 1}"
    assert not out.exists()
    return done


def weights(path) -> dict[str, torch.Tensor]:
    return {n: t for f in sorted(path.glob("*.safetensors")) for n, t in load_file(f).items()}


def calibration_record(out) -> dict:
    return json.loads((out / "uptrain.json").read_text())["conversion"]["calibration"]


@pytest.mark.parametrize("model_type", ["llama", "gpt_neox"])  # gpt_neox: calibrated on its translation
def test_a_killed_calibrated_conversion_resumes_after_its_last_finished_layer(tmp_path, model_type):
    src = build_tiny(model_type, tmp_path / "src", kv_heads=8, num_hidden_layers=LAYERS)
    save_char_tokenizer(src)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    args = arguments(text)
    reference = tmp_path / "reference"
    assert run_cli("convert", src, reference, *args).exit_code == 0
    assert "resumed_after_layer" not in calibration_record(reference)

    out = tmp_path / "out"
    done = kill_after(src, out, args, 2)
    r = run_cli("convert", src, out, *args)
    assert r.exit_code == 0, r.output
    assert f"resuming the calibrated conversion after layer {done} of {LAYERS}" in r.output
    assert f"calibrated layer {LAYERS}/{LAYERS}" in r.output  # off a terminal: a line per layer
    assert calibration_record(out)["resumed_after_layer"] == done
    new, ref = weights(out), weights(reference)
    assert new.keys() == ref.keys() and all(torch.equal(new[n], ref[n]) for n in ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.txt", "out", "reference", "src"]


def test_a_conversion_with_other_settings_does_not_resume(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=8, num_hidden_layers=LAYERS)
    save_char_tokenizer(src)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    out = tmp_path / "out"
    kill_after(src, out, arguments(text, steps=20), 2)
    r = run_cli("convert", src, out, *arguments(text, steps=19))
    assert r.exit_code == 0, r.output
    assert "resuming" not in r.output
    assert "resumed_after_layer" not in calibration_record(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.txt", "out", "src"]
