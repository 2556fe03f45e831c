"""`uptrain eval` against lm-evaluation-harness itself, on a tiny model and documents written here.

(a) word perplexity, byte perplexity and bits per byte of `uptrain eval --harness` equal those of
lm_eval's own entry point (simple_evaluate with its HFLM loading the same checkpoint) on a local
rolling-loglikelihood task over the same documents, raw and with the wikitext task's treatment
(its detokenizer and its word/byte counting on the original page, imported from lm_eval);
(b) a local multiple-choice task scored through `uptrain eval --tasks` gives lm_eval's accuracy.
"""

import json
import math

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import build_tiny
from tiny_tokenizer import add_tokenizer

lm_eval = pytest.importorskip("lm_eval")  # in the test extra, so CI runs these

WINDOW = 16  # a few disjoint windows per document, so the rolling windows matter
DOCUMENTS = [  # WikiText-style pages: the detokenizer changes every one of them
    " = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor . "
    "He had a guest @-@ starring role in 2000 ( a part of 3 @.@ 5 minutes ) .\n",
    ' = Du Fu = \n Du Fu was a poet ; his works number 1 @,@ 400 . " The Quick Brown Fox " is not one .\n',
    "Numbers like 2048 and 3.14 appear in text too , as do words 's and s ' .",
]

RAW_TARGET = '"{{page}}"'
WIKITEXT_TARGET = "!function utils.wikitext_detokenizer"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval")
    model = build_tiny("llama", root / "model", kv_heads=2, vocab_size=320, seed=4)
    add_tokenizer(model)
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"page": d}) + "\n" for d in DOCUMENTS))
    tasks = root / "tasks"
    tasks.mkdir()
    # the wikitext task's own functions, so the treatment compared is lm_eval's, not a copy
    (tasks / "utils.py").write_text(
        "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer\n"
    )
    for name, target in (("local_raw", RAW_TARGET), ("local_wikitext", WIKITEXT_TARGET)):
        (tasks / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {docs}\n"
            "output_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: ''\n"
            f"doc_to_target: {target}\nprocess_results: !function utils.process_results\n"
            "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
            "  - metric: bits_per_byte\n"
        )
    choices = root / "choices.jsonl"
    rows = [
        {
            "question": f"Question {i}: the fox is",
            "choices": ["quick", "brown", "lazy dog", "a poet"],
            "answer": i % 4,
        }
        for i in range(12)
    ]
    choices.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "local_mc.yaml").write_text(
        f"task: local_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {choices}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    return model, docs, tasks


def lm_eval_results(model, tasks, names, **model_args):
    """lm_eval's own entry point: simple_evaluate with the "hf" model loading the checkpoint (the
    task manager indexes only the tasks written here: lm_eval's own thousands take seconds)."""
    from lm_eval.tasks import TaskManager

    args = {"pretrained": str(model), "device": "cpu", "dtype": "float32", "batch_size": 1, **model_args}
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    out = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=names, task_manager=manager)
    return out["results"]


def uptrain_report(tmp_path, *args):
    path = tmp_path / "report.json"
    result = run_cli("eval", *args, "--json", path)
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())["models"][0]


@pytest.mark.slow
@pytest.mark.parametrize("treatment", ["none", "wikitext"])
def test_harness_metrics_equal_lm_eval(setup, tmp_path, treatment):
    model, docs, tasks = setup
    name = "local_raw" if treatment == "none" else "local_wikitext"
    theirs = lm_eval_results(model, tasks, [name], max_length=WINDOW)[name]
    ours = uptrain_report(
        tmp_path,
        str(model),
        "--dataset",
        str(docs),
        "--text-column",
        "page",
        "--window",
        str(WINDOW),
        "--detokenize",
        treatment,
    )
    # The same windows through the same float32 model; lm_eval sums each window's float32
    # log-probabilities in float32, uptrain in float64. Rounding of ~4.7 nats per token over 16-token
    # windows and ~160 tokens moves the log-likelihood by about 1e-5 nats, i.e. word perplexity
    # (LL / ~60 words) by ~2e-7 relative; measured: at most 9e-8. 1e-6 leaves room for that, and a
    # real difference (a crossed document boundary, a missing start token: percents) cannot hide in it.
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[metric] == pytest.approx(theirs[f"{metric},none"], rel=1e-6), metric
    assert ours["details"]["harness"]["documents"] == len(DOCUMENTS)
    # the treatment changes what is scored: the two tasks must not agree with each other
    other = "local_wikitext" if name == "local_raw" else "local_raw"
    elsewhere = lm_eval_results(model, tasks, [other], max_length=WINDOW)[other]
    assert not math.isclose(ours["word_perplexity"], elsewhere["word_perplexity,none"], rel_tol=1e-6)


@pytest.mark.slow
def test_tasks_accuracy_equals_lm_eval(setup, tmp_path):
    model, docs, tasks = setup
    theirs = lm_eval_results(model, tasks, ["local_mc"])["local_mc"]
    ours = uptrain_report(
        tmp_path,
        str(model),
        "--dataset",
        str(docs),
        "--text-column",
        "page",
        "--window",
        str(WINDOW),
        "--tasks",
        "local_mc",
        "--include-path",
        str(tasks),
        "--no-harness",
    )
    scores = ours["tasks"]["local_mc"]
    # the same model's loglikelihoods of the same prompts: the same argmax, so exactly equal
    assert scores["acc"] == theirs["acc,none"]
    assert scores["acc_norm"] == theirs["acc_norm,none"]
    assert scores["acc_stderr"] == pytest.approx(theirs["acc_stderr,none"], rel=1e-12)
