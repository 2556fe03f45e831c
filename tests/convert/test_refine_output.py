"""After fit, refine moves o_proj only when asked (--refine-output): by default the output
projection is exactly the one the closed-form `fit` folded, while K/V/Q move. After mean it trains
o_proj always."""

import torch
from method_helpers import calibrate
from safetensors.torch import load_file
from tiny_models import build_tiny

from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint


def _convert(src, out, method, cal, **options):
    settings = ConvertSection(groups=2, method=method, **options)
    convert_checkpoint(open_source(src), out, settings, calibration=cal)
    return load_file(out / "model.safetensors")


def test_refine_freezes_o_proj_unless_refine_output(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    cal = calibrate(src)
    fit = _convert(src, tmp_path / "fit", "fit", cal)
    frozen = _convert(src, tmp_path / "frozen", "fit+refine", cal, refine_steps=10, refine_lr=3e-3)
    trained = _convert(
        src, tmp_path / "trained", "fit+refine", cal, refine_steps=10, refine_lr=3e-3, refine_output=True
    )
    layer = "model.layers.0.self_attn."
    # fit is deterministic and refine starts from it, so "frozen" means bit-equal (tolerance 0).
    assert torch.equal(frozen[layer + "o_proj.weight"], fit[layer + "o_proj.weight"])
    assert not torch.equal(trained[layer + "o_proj.weight"], fit[layer + "o_proj.weight"])
    for name in ("k_proj.weight", "v_proj.weight", "q_proj.weight"):
        assert not torch.equal(frozen[layer + name], fit[layer + name]), name


def test_refine_after_mean_trains_o_proj(tmp_path):
    """Mean-pooling folds nothing into o_proj, so refine trains it whatever refine_output says."""
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    cal = calibrate(src)
    mean = _convert(src, tmp_path / "mean", "mean", cal)
    refined = _convert(src, tmp_path / "refined", "mean+refine", cal, refine_steps=10, refine_lr=3e-3)
    name = "model.layers.0.self_attn.o_proj.weight"
    assert not torch.equal(refined[name], mean[name])
