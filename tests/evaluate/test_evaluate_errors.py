"""Every bad input to `uptrain eval`: one `error:` line naming the fix, a non-zero exit, no traceback."""

import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from tiny_models import build_tiny
from tiny_tokenizer import SENTENCES, add_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-errors")
    model = build_tiny("llama", root / "model", kv_heads=2, vocab_size=320)
    add_tokenizer(model)
    text = root / "text.txt"
    text.write_text(" ".join(SENTENCES * 4))
    return root, model, text


@pytest.fixture(scope="module")
def dataset_folder(setup):
    """A dataset folder laid out like a Hub dataset repo: configs in README.md, parquet splits."""
    folder = setup[0] / "wikitext-like"
    for config, split in [("raw", "test"), ("raw", "validation"), ("other", "test")]:
        (folder / config).mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": SENTENCES}).to_parquet(folder / config / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: raw\n  data_files:\n  - split: test\n    path: raw/test-*\n"
        "  - split: validation\n    path: raw/validation-*\n"
        "- config_name: other\n  data_files:\n  - split: test\n    path: other/test-*\n---\n"
    )
    return folder


def eval_cli(*args):
    return run_cli("eval", *args)


def test_dataset_folder_with_config_and_split_works(setup, dataset_folder, tmp_path):
    _, model, _ = setup
    r = eval_cli(model, "--dataset", dataset_folder, "--dataset-config", "raw", "--split", "validation")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--dataset-config", "nope", "--split", "test"], ["'nope' not found", "--dataset-config"]),
        (["--dataset-config", "raw", "--split", "train"], ["Unknown split", "--split"]),
        (["--dataset-config", "raw", "--text-column", "body"], ["no column 'body'", "--text-column"]),
    ],
)
def test_bad_config_split_or_column(setup, dataset_folder, args, fragments):
    assert_one_line_error(eval_cli(setup[1], "--dataset", dataset_folder, *args), *fragments)


def test_unknown_hub_dataset_offline(setup):
    r = eval_cli(setup[1], "--dataset", "nobody-here/no-such-dataset")
    assert_one_line_error(r, "no-such-dataset", "pass a local .txt")


def test_default_dataset_offline_suggests_a_local_file(setup):
    r = eval_cli(setup[1])  # HF_HUB_OFFLINE=1 in the tests: the Hub's wikitext is out of reach
    assert_one_line_error(r, "Salesforce/wikitext", "pass a local .txt")


def test_missing_dataset_file(setup):
    assert_one_line_error(eval_cli(setup[1], "--dataset", setup[0] / "nope.txt"), "does not exist")


def test_empty_text(setup, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert_one_line_error(eval_cli(setup[1], "--dataset", empty), "the text is empty")


def test_window_larger_than_positions(setup):
    r = eval_cli(setup[1], "--dataset", setup[2], "--window", "256")
    assert_one_line_error(r, "--window 256 is larger than", "128 positions", "--window 128")


def test_stride_larger_than_window(setup):
    r = eval_cli(setup[1], "--dataset", setup[2], "--window", "32", "--stride", "64")
    assert_one_line_error(r, "--stride 64")


def test_different_tokenizers(setup, tmp_path):
    _, model, text = setup
    other = build_tiny("llama", tmp_path / "other", kv_heads=2, vocab_size=320)
    add_tokenizer(other, sentences=["completely different words train another merge table"] * 3)
    r = eval_cli(model, other, "--dataset", text)
    assert_one_line_error(r, "different tokenizers", "share a tokenizer")


def test_tokenizer_larger_than_the_model_vocabulary(setup, tmp_path):
    _, model, text = setup
    small = build_tiny("llama", tmp_path / "small", kv_heads=2)  # 96 embeddings, no tokenizer
    r = eval_cli(small, "--dataset", text, "--tokenizer", model)
    assert_one_line_error(r, "only 96 embeddings")


def test_model_without_tokenizer(setup, tmp_path):
    bare = build_tiny("llama", tmp_path / "bare", kv_heads=2, vocab_size=320)
    assert_one_line_error(eval_cli(bare, "--dataset", setup[2]), "--tokenizer")


@pytest.mark.parametrize("name", ["missing-dir", "missing.gguf"])
def test_missing_model_path(setup, tmp_path, name):
    r = eval_cli(setup[1], tmp_path / name, "--dataset", setup[2])
    assert_one_line_error(r, name, "does not exist")


def test_missing_json_folder(setup, tmp_path):
    r = eval_cli(setup[1], "--dataset", setup[2], "--json", tmp_path / "no" / "r.json")
    assert_one_line_error(r, "--json", "does not exist")
