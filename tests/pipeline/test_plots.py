"""The report's plots show their data: the points of each line and the height of each bar, read back from
the matplotlib Figure, are the values of metrics.jsonl and report.json (parsed here with json, not by
uptrain); and the PNGs written from them are valid, drawn without a display, with no temporary file left."""

from __future__ import annotations

import json

import pytest
from png_checks import assert_png

from uptrain.plots import perplexity_bars, training_figure
from uptrain.report import PLOT_FILES, draw_plots, plot_figures, read_metrics

RECORDS = [
    {"step": 0, "tokens": 0, "eval_loss": 9.7, "eval_ppl": 16_300.0},
    *({"step": s, "tokens": 512 * s, "loss": 9.7 - 0.2 * s} for s in range(1, 21)),
    {"step": 10, "tokens": 5120, "eval_loss": 6.8, "eval_ppl": 900.0},
    {"step": 20, "tokens": 10240, "eval_loss": 5.0, "eval_ppl": 150.0},
]
REPORT = {
    "tokens": 4096,
    "models": [
        {"role": "source", "perplexity": 23.4, "kv_bytes_per_token": 46080},
        {"role": "converted", "perplexity": 16_300.0, "kv_bytes_per_token": 15360},
        {"role": "uptrained", "perplexity": 150.0, "kv_bytes_per_token": 15360},
    ],
    "conversion": {"kv_heads_before": 3, "kv_heads_after": 1, "method": "mean"},
}


def _metrics_file(tmp_path, records):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 21, "tok')  # torn last line
    return path


def _lines(ax):
    """label -> the (x, y) points of that line, as plain floats."""
    return {line.get_label(): [tuple(map(float, p)) for p in line.get_xydata()] for line in ax.get_lines()}


def test_the_training_figure_plots_the_losses_and_perplexities_of_metrics_jsonl(tmp_path):
    path = _metrics_file(tmp_path, RECORDS)
    parsed = [json.loads(line) for line in path.read_text().splitlines()[:-1]]
    training = sorted((r["tokens"], r["loss"]) for r in parsed if "loss" in r)
    held_loss = sorted((r["tokens"], r["eval_loss"]) for r in parsed if "eval_loss" in r)
    held_ppl = sorted((r["tokens"], r["eval_ppl"]) for r in parsed if "eval_ppl" in r)
    assert len(training) == 20 and len(held_loss) == len(held_ppl) == 3

    fig = plot_figures(REPORT, read_metrics(path))["training"]
    loss_ax, ppl_ax = fig.axes
    assert _lines(loss_ax) == {"training loss": training, "held-out loss": held_loss}
    ppl = _lines(ppl_ax)
    assert ppl.pop("held-out, uptraining") == held_ppl
    # the source's and the converted model's perplexity as horizontal lines across the axis
    assert {label: {y for _, y in points} for label, points in ppl.items()} == {
        "source: 23.40": {23.4},
        "converted: 16,300.00": {16_300.0},
    }
    assert ppl_ax.get_yscale() == "log"
    assert "3 -> 1 KV heads (mean)" in fig.get_suptitle()


def test_the_bars_are_the_perplexities_and_kv_bytes_of_the_report():
    figures = plot_figures(REPORT, RECORDS)
    roles = [m["role"] for m in REPORT["models"]]
    for name, key in (("perplexity", "perplexity"), ("kv_cache", "kv_bytes_per_token")):
        (ax,) = figures[name].axes
        heights = [bar.get_height() for bar in ax.patches]
        assert heights == [m[key] for m in REPORT["models"]], name
        assert [bar.get_x() + bar.get_width() / 2 for bar in ax.patches] == [0, 1, 2]
        assert [ax.xaxis.get_major_formatter()(i) for i in range(3)] == roles
    labels = [text.get_text() for text in figures["perplexity"].axes[0].texts]
    assert labels == ["23.40", "16,300.00", "150.00"]
    assert figures["perplexity"].axes[0].get_yscale() == "log"  # 16,300 / 23.4 spans more than 10x
    assert figures["kv_cache"].axes[0].get_yscale() == "linear"
    assert [t.get_text() for t in figures["kv_cache"].axes[0].texts] == ["46,080 B", "15,360 B", "15,360 B"]


def test_training_curves_without_any_held_out_point():
    train_only = [r for r in RECORDS if "loss" in r]
    loss_ax, ppl_ax = plot_figures(REPORT, train_only)["training"].axes
    assert list(_lines(loss_ax)) == ["training loss"]
    assert list(_lines(ppl_ax)) == ["source: 23.40", "converted: 16,300.00"]  # the two reference lines
    loss_ax, ppl_ax = training_figure(train_only).axes  # nor any perplexity to draw: it says so
    assert len(_lines(loss_ax)["training loss"]) == 20 and not _lines(ppl_ax)
    assert [t.get_text() for t in ppl_ax.texts] == ["no held-out evaluation"]


def test_draw_plots_writes_each_figure_as_a_png_of_its_size(tmp_path):
    written = draw_plots(REPORT, RECORDS, tmp_path)
    # tasks.png only when the models were scored on lm_eval tasks (tests/hub/test_card_tasks.py)
    assert written == {name: tmp_path / file for name, file in PLOT_FILES.items() if name != "tasks"}
    dpi = 120  # uptrain.plots draws at 120 dpi: 11 x 4.2 inches for two panels, 6 x 4.2 for bars
    sizes = {name: (round(w * dpi), round(4.2 * dpi)) for name, w in (("training", 11), ("perplexity", 6))}
    sizes["kv_cache"] = sizes["perplexity"]
    for name, path in written.items():
        assert assert_png(path) == sizes[name], name
    assert not list(tmp_path.glob(".*")), "no temporary file is left behind"


def test_the_png_check_rejects_a_truncated_file(tmp_path):
    path = perplexity_bars([("source", 2.0), ("converted", 3.0)], tmp_path / "p.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AssertionError):
        assert_png(path)
