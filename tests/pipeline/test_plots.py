"""The report's plots are valid PNGs of the intended size, drawn without a display."""

from __future__ import annotations

import pytest
from png_checks import assert_png

from uptrain.plots import kv_cache_bars, perplexity_bars, training_curves

RECORDS = [
    {"step": 0, "tokens": 0, "eval_loss": 9.7, "eval_ppl": 16_300.0},
    *({"step": s, "tokens": 512 * s, "loss": 9.7 - 0.2 * s} for s in range(1, 21)),
    {"step": 10, "tokens": 5120, "eval_loss": 6.8, "eval_ppl": 900.0},
    {"step": 20, "tokens": 10240, "eval_loss": 5.0, "eval_ppl": 150.0},
]


def test_training_curves_perplexity_and_kv_bars_are_pngs_of_their_figure_size(tmp_path):
    dpi = 120
    drawn = {
        training_curves(RECORDS, tmp_path / "training.png", 23.4, 16_300.0, title="t"): (11, 4.2),
        perplexity_bars(
            [("source", 23.4), ("converted", 16_300.0), ("uptrained", 150.0)], tmp_path / "p.png"
        ): (
            6,
            4.2,
        ),
        kv_cache_bars([("source", 46080), ("converted", 15360), ("uptrained", 15360)], tmp_path / "k.png"): (
            6,
            4.2,
        ),
    }
    for path, (width, height) in drawn.items():
        assert assert_png(path) == (round(width * dpi), round(height * dpi))
    assert not list(tmp_path.glob(".*")), "no temporary file is left behind"


def test_training_curves_without_any_held_out_point_still_draw(tmp_path):
    path = training_curves([r for r in RECORDS if "loss" in r], tmp_path / "t.png")
    assert_png(path)


def test_the_png_check_rejects_a_truncated_file(tmp_path):
    path = perplexity_bars([("source", 2.0), ("converted", 3.0)], tmp_path / "p.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AssertionError):
        assert_png(path)
