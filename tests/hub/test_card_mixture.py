"""A data.mix run's sources, weights and tokens drawn, and the held-out curve's text, in report.md and
the model card (from a hand-written training record)."""

from test_card_tasks import RECORD, report

from uptrain.hub.card import model_card
from uptrain.report import report_markdown

TRAINING = {
    "tokens_seen": 1_000_000,
    "steps": 100,
    "datasets": [
        {
            "id": "data/T1.txt",
            "source": "data/T1.txt",
            "weight": 0.7,
            "blocks_drawn": 6836,
            "tokens_drawn": 699_904,
        },
        {
            "id": "data/T2.txt",
            "source": "data/T2.txt",
            "weight": 0.3,
            "blocks_drawn": 2930,
            "tokens_drawn": 300_096,
        },
    ],
    "heldout": {"text": "data/wiki-test.txt, first 8,192 tokens", "tokens_scored": 8191},
}


def test_report_lists_each_source_and_the_held_out_text():
    text = report_markdown({**report(), "training": TRAINING})
    assert "| training source | weight | tokens drawn |" in text
    assert "| data/T1.txt | 0.7 | 699,904 |" in text
    assert "| data/T2.txt | 0.3 | 300,096 |" in text
    assert "Held-out curve (training.png) on data/wiki-test.txt, first 8,192 tokens." in text


def test_card_lists_each_source_with_its_weight_and_tokens_drawn():
    card = model_card({**RECORD, "training": TRAINING}, repo_id="me/tiny-gqa")
    line = next(line for line in card.splitlines() if line.startswith("- **Uptraining:**"))
    assert "on T1.txt (weight 0.7, " in line and "T2.txt (weight 0.3, " in line
    assert line.count("tokens drawn)") == 2
