"""`uptrain eval` end to end on tiny models: one table for several models, JSON and Markdown."""

import json

import pytest
import torch
from cli_helpers import run_cli
from test_evaluate_perplexity import guide_loop
from tiny_models import build_tiny
from tiny_tokenizer import SENTENCES, add_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run as fast on one thread, and a busy shared machine cannot stall OpenMP."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TEXT = "\n".join(SENTENCES * 3)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """An MHA model and a GQA model (different random weights) sharing one tokenizer, and a text."""
    root = tmp_path_factory.mktemp("cli")
    mha = build_tiny("llama", root / "mha", kv_heads=8, vocab_size=320, seed=1)
    gqa = build_tiny("llama", root / "gqa", kv_heads=2, vocab_size=320, seed=2)
    add_tokenizer(mha)
    add_tokenizer(gqa)
    text = root / "text.txt"
    text.write_text(TEXT)
    return mha, gqa, text


def run_json(tmp_path, *args):
    out = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    result = run_cli("eval", *args, "--json", out, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_two_models_in_one_call_equal_two_calls(pair, tmp_path, monkeypatch):
    monkeypatch.chdir(pair[0].parent)
    mha, gqa, text = "mha", "gqa", "text.txt"
    common = ["--dataset", text, "--window", "32", "--stride", "16", "--batch-size", "3"]
    both, output = run_json(tmp_path, mha, gqa, *common)
    alone = [run_json(tmp_path, m, *common)[0]["models"][0] for m in (mha, gqa)]
    keys = ["perplexity", "nll", "tokens_scored", "word_perplexity", "byte_perplexity", "bits_per_byte"]
    for got, expected in zip(both["models"], alone, strict=True):
        assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}
    assert [m["kv_heads"] for m in both["models"]] == [8, 2]
    assert both["models"][0]["kv_bytes_per_token"] == 4 * both["models"][1]["kv_bytes_per_token"]
    rows = [line for line in output.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["mha", "gqa"]  # one table, a row per model
    assert f"{both['models'][1]['perplexity']:,.3f}" in rows[1]


def test_report_matches_an_independent_loop(pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mha, _, text = pair
    report, _ = run_json(tmp_path, mha, "--dataset", text, "--window", "32", "--stride", "12")
    ids = AutoTokenizer.from_pretrained(mha)(TEXT, return_tensors="pt")["input_ids"][0]
    expected, count = guide_loop(AutoModelForCausalLM.from_pretrained(mha).eval(), ids, 32, 12)
    m = report["models"][0]
    assert m["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert m["tokens_scored"] == count == len(ids) - 1
    assert report["tokens"] == len(ids)
    assert (report["window"], report["stride"]) == (32, 12)
    assert set(report["versions"]) >= {"uptrain", "torch", "transformers", "datasets"}
    for key in ("word_perplexity", "byte_perplexity", "bits_per_byte", "kv_bytes", "decode_tokens_per_s"):
        assert key in m


def test_max_tokens_defaults_markdown_and_decode_bench(pair, tmp_path):
    mha, gqa, text = pair
    md = tmp_path / "table.md"
    report, _ = run_json(
        tmp_path,
        *(mha, gqa, "--dataset", text, "--max-tokens", "100", "--markdown", md),
        *("--decode-bench", "--kv-context", "16", "--kv-batch", "2", "--decode-tokens", "3"),
    )
    assert report["tokens"] == 100
    assert (report["window"], report["stride"]) == (128, 64)  # min(128 positions, 2048), half of it
    first, second = report["models"]
    assert first["tokens_scored"] == 99
    assert first["decode_speedup"] == 1.0
    assert second["decode_speedup"] == pytest.approx(
        second["decode_tokens_per_s"] / first["decode_tokens_per_s"]
    )
    assert first["kv_bytes"] == first["kv_bytes_per_token"] * 2 * 16
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| model | KV heads | perplexity |")
    assert f"{first['perplexity']:,.3f}" in lines[2] and f"{second['perplexity']:,.3f}" in lines[3]


def test_no_harness_and_bf16(pair, tmp_path):
    mha, _, text = pair
    fp32, _ = run_json(tmp_path, mha, "--dataset", text, "--window", "64", "--no-harness")
    bf16, _ = run_json(tmp_path, mha, "--dataset", text, "--window", "64", "--no-harness", "--dtype", "bf16")
    assert fp32["models"][0]["word_perplexity"] is None
    assert (fp32["models"][0]["dtype"], bf16["models"][0]["dtype"]) == ("float32", "bfloat16")
    assert fp32["models"][0]["kv_bytes_per_token"] == 2 * bf16["models"][0]["kv_bytes_per_token"]
    assert bf16["models"][0]["perplexity"] == pytest.approx(fp32["models"][0]["perplexity"], rel=0.05)


def test_python_api_report_for_models_in_memory(pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uptrain.evaluate import EvalSettings, evaluate_models, perplexity, to_markdown

    mha, gqa, _ = pair
    tokenizer = AutoTokenizer.from_pretrained(mha)
    models = {p.name: AutoModelForCausalLM.from_pretrained(p).eval() for p in (mha, gqa)}
    settings = EvalSettings(window=32, stride=16, max_tokens=200, kv_context=64)
    report = evaluate_models(models, tokenizer, TEXT, settings, dataset={"source": "TEXT"})
    data = json.loads(json.dumps(report.to_dict()))
    for name, row in zip(models, data["models"], strict=True):
        expected = perplexity(models[name], tokenizer, TEXT, 32, 16, max_tokens=200)
        assert row["model"] == name
        assert row["perplexity"] == pytest.approx(expected.perplexity, rel=1e-12)
        assert row["kv_bytes"] == row["kv_bytes_per_token"] * 64
    rows = [line for line in to_markdown(report).splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == ["| model", "| mha", "| gqa"]


def test_model_cards_read_the_report(pair, tmp_path):
    import shutil

    from uptrain.hub.card_inputs import evaluation_setting, model_results

    source, converted = tmp_path / "source", tmp_path / "converted"
    shutil.copytree(pair[0], source)
    shutil.copytree(pair[1], converted)
    report, _ = run_json(
        tmp_path, source, converted, "--dataset", pair[2], "--window", "64", "--max-tokens", "300"
    )
    results = model_results({}, report)
    for role, entry in zip(("source", "converted"), report["models"], strict=True):
        assert results[role]["perplexity"] == entry["perplexity"]
        assert results[role]["bits_per_byte"] == entry["bits_per_byte"]
        assert results[role]["kv_bytes_per_token"] == entry["kv_bytes_per_token"]
    setting = evaluation_setting({}, report)
    assert (setting["tokens"], setting["window"], setting["stride"]) == (300, 64, 32)
    assert setting["dataset"] == str(pair[2])
