"""refine's replay batches and precision: the calibration pass cuts the kept sequences into batches
of refine_batch_tokens (whole sequences), the rest into its own larger batches; refine under bf16
autocast still lowers the layer's error (the errors it reports are computed in fp32)."""

import json

import pytest
import torch
from method_helpers import calibrate
from tiny_models import build_tiny

from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.calibration.stats import BATCH_TOKENS, calibration_batches
from uptrain.convert.convert import convert_checkpoint


def test_kept_sequences_come_in_batches_of_refine_batch_tokens():
    sequences = torch.arange(12 * 100).reshape(12, 100)
    batches = calibration_batches(sequences, keep_sequences=5, keep_batch_tokens=200)
    kept = [b for b, keep in batches if keep]
    rest = [b for b, keep in batches if not keep]
    # 5 kept sequences of 100 tokens, 200 tokens a batch: 2 + 2 + 1 sequences, in order
    assert [len(b) for b in kept] == [2, 2, 1]
    assert torch.equal(torch.cat(kept), sequences[:5])
    # the other 7 in batches of BATCH_TOKENS // 100 sequences
    per = BATCH_TOKENS // 100
    assert [len(b) for b in rest] == [min(per, 7 - i) for i in range(0, 7, per)]
    assert torch.equal(torch.cat(rest), sequences[5:])


def test_a_batch_smaller_than_a_sequence_holds_one_sequence():
    sequences = torch.zeros(3, 64, dtype=torch.long)
    kept = [b for b, keep in calibration_batches(sequences, 3, keep_batch_tokens=10) if keep]
    assert [len(b) for b in kept] == [1, 1, 1]


def test_bf16_refine_lowers_every_layers_error(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    cal = calibrate(src, sequences=8, length=32, keep=4)
    settings = ConvertSection(
        groups=2, method="fit+refine", refine_steps=10, refine_lr=3e-3, refine_precision="bf16"
    )
    convert_checkpoint(open_source(src), tmp_path / "out", settings, calibration=cal)
    record = json.loads((tmp_path / "out" / "uptrain.json").read_text())["conversion"]
    figures = record["layer_figures"]
    assert record["method_options"]["refine_precision"] == "bf16"
    before, after = figures["refine_error_before"]["layers"], figures["refine_error_after"]["layers"]
    # refine keeps the start where it cannot improve it, so after <= before always; bf16 steps
    # must still improve on fit's start somewhere on this model
    assert all(a <= b for a, b in zip(after, before, strict=True))
    assert sum(after) < sum(before)


@pytest.mark.parametrize(
    "amx,capability,onednn_isa,expected",
    [
        (True, "AVX512", None, "bf16"),  # an AMX CPU, nothing limited
        (True, "AVX512", "AVX512_CORE_AMX", "bf16"),
        (True, "AVX2", None, "fp32"),  # ATEN_CPU_CAPABILITY=avx2: torch's kernels limited below AMX
        (True, "AVX512", "AVX2", "fp32"),  # ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's matmuls limited
        (False, "AVX512", None, "fp32"),  # no AMX in the CPU
    ],
)
def test_auto_refine_precision_follows_what_torch_may_use(monkeypatch, amx, capability, onednn_isa, expected):
    """auto picks bf16 only where the CPU has AMX and neither torch's dispatch (ATEN_CPU_CAPABILITY,
    read at torch's start, hence patched here) nor oneDNN (ONEDNN_MAX_CPU_ISA) is limited below it."""
    import torch

    from uptrain.convert.calibrated import refine_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    if onednn_isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_isa)
    assert refine_precision("auto") == expected
    assert refine_precision("fp32") == "fp32" and refine_precision("bf16") == "bf16"
