"""Harness documents: the wikitext detokenizer equal to lm_eval's, the --max-tokens cut, articles,
and the one-line errors of --tasks and --detokenize."""

import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from uptrain.evaluate.documents import (
    documents_within,
    harness_documents,
    wikitext_articles,
    wikitext_detokenize,
)
from uptrain.evaluate.tasks import parse_tasks, task_scores
from uptrain.task_table import main_metric

PAGES = [
    " = Ise @-@ class battleship = \n The ships ' guns ( 14 @-@ inch ) fired 1 @,@ 400 rounds ; "
    '" quoted " and [ bracketed ] text , { braces } : 3 @.@ 5 km at 30 ° N . It \'s done ! Why ? \n',
    " = = = Sub = = = \n = = Section = = \n = = = = Deep = = = = \n The ' single ' and s ' case .\n",
]


def test_detokenizer_equals_lm_eval():
    lm = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext")
    text = Path(__file__).resolve().parents[2] / "../shared/data/wikitext-2-raw-test.txt"
    pages = PAGES + (wikitext_articles(text.read_text(encoding="utf-8"))[:20] if text.is_file() else [])
    for page in pages:
        assert wikitext_detokenize(page) == lm.wikitext_detokenizer({"page": page})
    assert wikitext_detokenize(PAGES[0]) != PAGES[0]


def test_treatment_scores_detokenized_and_counts_the_original():
    docs = harness_documents(["", "  \n", PAGES[0]], "wikitext")  # blank rows are not documents
    assert len(docs) == 1
    assert docs[0].original == PAGES[0] and docs[0].scored == wikitext_detokenize(PAGES[0])
    assert harness_documents([PAGES[0]])[0].scored == PAGES[0]


def test_documents_within_the_covered_text():
    documents = ["abc", "defg", "hi"]
    joined = "\n\n".join(documents)
    assert documents_within(documents, joined, "\n\n") == documents
    assert documents_within(documents, joined[:7], "\n\n") == ["abc", "de"]  # "abc\n\nde"
    assert documents_within(documents, joined[:4], "\n\n") == ["abc"]  # the cut falls in the separator
    assert documents_within(documents, joined[:2], "\n\n") == ["ab"]


def test_wikitext_articles_split_at_top_level_headings():
    text = " = A = \r\n Body a .\r\n = = Sub = = \r\n More a .\r\n = B = \r\n Body b .\r\n"
    assert wikitext_articles(text) == [
        " = A = \n Body a .\n = = Sub = = \n More a .\n",
        " = B = \n Body b .\n",
    ]


def test_task_scores_and_main_metric():
    results = {
        "results": {
            "arc_easy": {
                "alias": "arc_easy",
                "acc,none": 0.5,
                "acc_stderr,none": 0.1,
                "acc_norm,none": 0.25,
                "acc_norm_stderr,none": "N/A",
            }
        }
    }
    scores = task_scores(results)
    assert scores == {"arc_easy": {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.25}}
    assert main_metric(scores["arc_easy"]) == "acc_norm"
    assert main_metric({"word_perplexity": 3.0, "bits_per_byte": 1.0}) == "word_perplexity"
    assert parse_tasks(" hellaswag, arc_easy ,,") == ("hellaswag", "arc_easy")


def test_tasks_without_lm_eval_is_a_one_line_error(tiny_llama, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    text = tmp_path / "t.txt"
    text.write_text("some text")
    result = run_cli("eval", str(tiny_llama), "--dataset", str(text), "--tasks", "hellaswag")
    assert_one_line_error(result, "--tasks needs lm-evaluation-harness", "pip install 'uptrain-gqa[eval]'")


def test_unknown_detokenizer_is_refused(tiny_llama, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("some text")
    result = run_cli("eval", str(tiny_llama), "--dataset", str(text), "--detokenize", "moses")
    assert_one_line_error(result, "--detokenize 'moses'", "use one of none, wikitext")


@pytest.mark.slow
def test_unknown_task_is_refused_before_loading(tiny_llama, tmp_path):
    pytest.importorskip("lm_eval")
    text = tmp_path / "t.txt"
    text.write_text("some text")
    empty = tmp_path / "tasks"
    empty.mkdir()
    result = run_cli(
        "eval", str(tiny_llama), "--dataset", str(text), "--tasks", "no_such_task", "--include-path", empty
    )
    assert_one_line_error(result, "lm_eval has no task no_such_task")
