"""scripts/long_run.py's crossing rule: the tokens at which held-out perplexity first reaches a
target, interpolated in log-perplexity between the evaluations around it."""

from __future__ import annotations

import json
import math

from reference_helpers import load_script


def test_tokens_to_reach_interpolates_in_log_perplexity():
    long_run = load_script("long_run")
    points = [(0, 1000.0), (100, 100.0), (200, 10.0)]
    # 100 -> 10 over tokens 100..200: log-linear, so 10**1.5 = 31.6 is reached half-way, at 150
    assert long_run.tokens_to_reach(points, 10**1.5) == 150
    assert long_run.tokens_to_reach(points, 1000.0) == 0  # already there at the start
    assert long_run.tokens_to_reach(points, 100.0) == 100
    assert long_run.tokens_to_reach(points, 9.0) is None  # never reached
    # an exact hand computation at another target: log(1000/300) / log(1000/100) of the first interval
    expected = round(100 * math.log(1000 / 300) / math.log(10))
    assert long_run.tokens_to_reach(points, 300.0) == expected == 52


def test_heldout_points_skip_a_torn_line_and_keep_the_last_value_per_token(tmp_path):
    long_run = load_script("long_run")
    lines = [
        json.dumps({"step": 0, "tokens": 0, "eval_ppl": 500.0}),
        json.dumps({"step": 1, "tokens": 512, "loss": 5.0}),
        json.dumps({"step": 2, "tokens": 1024, "eval_ppl": 80.0}),
        '{"step": 3, "tokens": 15',
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    assert long_run.heldout_points(tmp_path) == [(0, 500.0), (1024, 80.0)]
