"""The rows of the bad-input matrix (tests/cli/test_bad_input_matrix.py): each names a command, the mistake,
the arguments that make it, what the one error line must say, and how to damage a checkpoint first.
EXISTING names the tests in other files that prove further rows, so that they are counted, not repeated."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bad_input import (
    DELETE,
    Inputs,
    add_to_index,
    copy_of,
    edit_json,
    truncate_first_shard,
)
from bad_input import then as steps
from bad_input import write as write_file
from train_runs import SMALL, TINY, sets

COMMANDS = ("cli", "convert", "inspect", "eval", "train", "push", "run", "demo")


@dataclass(frozen=True)
class Case:
    command: str  # which row of the matrix: a command, or "cli" for the global layer
    name: str
    args: Callable[[Inputs], list]
    fragments: tuple[str, ...]  # what the error line must say (the problem and its fix)
    prepare: Callable[[Inputs], None] | None = None
    code: int | None = None
    hub: tuple = ()  # answers the local Hub gives to its first calls ("down": nothing listens)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.name}"


def train_args(*assignments: str, config=None) -> Callable[[Inputs], list]:
    """`uptrain train` on configs/tiny-cpu.yaml (or the work directory's c.yaml), small, into OUT."""

    def args(p: Inputs) -> list:
        path = p.work / "c.yaml" if config == "work" else TINY
        resolved = [a.format(p=p) for a in assignments]
        return ["train", "--config", path, "--output", p.out, *sets(*SMALL, *resolved)]

    return args


MODEL_PATH = ("model.tiny=null", "model.convert=null")


CASES = [
    # -- the global CLI layer -------------------------------------------------------------------------
    Case("cli", "unknown-command", lambda p: ["frobnicate"], ("No such command", "uptrain --help"), code=2),
    Case(
        "cli",
        "unknown-option",
        lambda p: ["convert", p.mha, p.out, "-g", "2", "--nope"],
        ("No such option: --nope", "uptrain convert --help"),
        code=2,
    ),
    Case(
        "cli",
        "not-an-integer",
        lambda p: ["convert", p.mha, p.out, "-g", "two"],
        ("'--groups'", "uptrain convert --help"),
        code=2,
    ),
    Case(
        "cli",
        "missing-argument",
        lambda p: ["push", p.gqa],
        ("Missing argument 'repo_id'", "uptrain push --help"),
        code=2,
    ),
    # -- convert: damaged sources ------------------------------------------------------------------------
    Case(
        "convert",
        "refine-precision-unknown",
        lambda p: ["convert", p.mha, p.out, "-g", "2", "--method", "fit+refine", "--refine-precision", "fp8"],
        ("--refine-precision 'fp8' is not one of auto, fp32, bf16",),
    ),
    Case(
        "convert",
        "refine-batch-tokens-zero",
        lambda p: [
            "convert",
            p.mha,
            p.out,
            "-g",
            "2",
            "--method",
            "fit+refine",
            "--refine-batch-tokens",
            "0",
        ],
        ("--refine-batch-tokens must be at least 1",),
    ),
    Case(
        "convert",
        "config-not-json",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("config.json is not valid JSON", "re-download"),
        steps(copy_of("mha"), write_file("config.json", "{not json")),
    ),
    Case(
        "convert",
        "config-not-an-object",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("not a JSON object", "re-download"),
        steps(copy_of("mha"), write_file("config.json", "[1, 2]")),
    ),
    Case(
        "convert",
        "config-heads-a-string",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("no valid 'num_attention_heads'", "fix the config"),
        steps(copy_of("mha"), edit_json("config.json", num_attention_heads="8")),
    ),
    Case(
        "convert",
        "config-kv-heads-do-not-divide",
        lambda p: ["convert", p.src, p.out, "-g", "1"],
        ("8 query heads and 3 KV heads", "do not divide"),
        steps(copy_of("mha"), edit_json("config.json", num_key_value_heads=3)),
    ),
    Case(
        "convert",
        "config-more-layers-than-weights",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("no tensor model.layers.2.", "do not match config.json"),
        steps(copy_of("mha"), edit_json("config.json", num_hidden_layers=3)),
    ),
    Case(
        "convert",
        "config-without-model-type",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("is not supported", "llama"),
        steps(copy_of("mha"), edit_json("config.json", model_type=DELETE)),
    ),
    Case(
        "convert",
        "tensor-shape-contradicts-config",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("but config.json implies", "do not match their config"),
        steps(copy_of("mha"), edit_json("config.json", head_dim=4)),
    ),
    Case(
        "convert",
        "index-weight-map-not-a-mapping",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("not a valid weight index", "re-download"),
        steps(copy_of("mha"), write_file("model.safetensors.index.json", '{"weight_map": []}')),
    ),
    Case(
        "convert",
        "index-lists-a-tensor-no-shard-holds",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("lists tensors that its shards do not hold", "re-download"),
        steps(copy_of("mha"), add_to_index("model.extra.weight")),
    ),
    Case(
        "convert",
        "index-file-name-not-a-string",
        lambda p: ["convert", p.src, p.out, "-g", "2"],
        ("not a plain file name", "refusing"),
        steps(copy_of("mha"), edit_json("model.safetensors.index.json", weight_map={"x.weight": 5})),
    ),
    Case(
        "convert",
        "output-is-a-file",
        lambda p: ["convert", p.mha, p.work / "taken", "-g", "2"],
        ("is a file", "choose a directory"),
        write_file("taken", "mine", under=""),
    ),
    Case(
        "convert",
        "source-is-a-plain-file",
        lambda p: ["convert", p.work / "weights.bin", p.out, "-g", "2"],
        ("is a file", "SRC must be a model directory"),
        write_file("weights.bin", b"\x80\x04", under=""),
    ),
    Case(
        "convert",
        "invalid-hub-id",
        lambda p: ["convert", "a/b/c", p.out, "-g", "2"],
        ("does not exist and is not a valid Hub id", "check the path"),
    ),
    Case(
        "convert",
        "revision-for-a-local-directory",
        lambda p: ["convert", p.mha, p.out, "-g", "2", "--revision", "v1"],
        ("--revision applies to Hub ids only", "drop it"),
    ),
    Case(
        "convert",
        "corrupt-gguf",
        lambda p: ["convert", p.work / "model.gguf", p.out, "-g", "1"],
        ("cannot read the GGUF file", "re-download"),
        write_file("model.gguf", b"GGUF\x07\x00\x00\x00" + bytes(range(200)), under=""),
    ),
    Case(
        "convert",
        "gguf-file-flag-on-a-gguf-source",
        lambda p: ["convert", p.work / "model.gguf", p.out, "-g", "1", "--gguf-file", "x.gguf"],
        ("already a .gguf file", "drop --gguf-file"),
        write_file("model.gguf", b"GGUF", under=""),
    ),
    Case(
        "convert",
        "hub-keeps-answering-500",
        lambda p: ["convert", "someone/model", p.out, "-g", "2"],
        ("HTTP 500", "retry later"),
        hub=(500,) * 10,
    ),
    Case(
        "convert",
        "hub-drops-the-connection",
        lambda p: ["convert", "someone/model", p.out, "-g", "2"],
        ("someone/model", "check your network"),
        hub=("reset",) * 10,
    ),
    Case(
        "convert",
        "hub-unreachable",
        lambda p: ["convert", "someone/model", p.out, "-g", "2"],
        ("cannot be reached", "HF_ENDPOINT"),
        hub=("down",),
    ),
    # -- inspect ----------------------------------------------------------------------------------------
    Case("inspect", "missing", lambda p: ["inspect", p.work / "nope"], ("does not exist", "check the path")),
    Case(
        "inspect",
        "unsupported-architecture",
        lambda p: ["inspect", p.src],
        ("'opt' is not supported", "llama"),
        steps(copy_of("mha"), edit_json("config.json", model_type="opt")),
    ),
    Case("inspect", "pickled-weights", lambda p: ["inspect", p.pickled], ("pickled", "--allow-pickle")),
    Case(
        "inspect",
        "truncated-shard",
        lambda p: ["inspect", p.src],
        ("truncated or corrupt", "re-download"),
        steps(copy_of("mha"), truncate_first_shard),
    ),
    # -- eval ---------------------------------------------------------------------------------------------
    Case("eval", "pickled-weights", lambda p: ["eval", p.pickled, "--dataset", p.text], ("--allow-pickle",)),
    Case(
        "eval",
        "unknown-dtype",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--dtype", "int4"],
        ("'int4' is not one of", "bf16"),
    ),
    Case(
        "eval",
        "batch-size-zero",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--batch-size", "0"],
        ("--batch-size 0", "at least 1"),
    ),
    Case(
        "eval",
        "kv-batch-zero",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--kv-batch", "0"],
        ("--kv-batch 0", "at least 1"),
    ),
    Case(
        "eval",
        "unknown-device",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--device", "tpu"],
        ("--device 'tpu' is not a torch device", "cpu"),
    ),
    Case(
        "eval",
        "gpu-this-machine-lacks",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--device", "cuda:99"],
        ("--device cuda:99",),
    ),
    Case(
        "eval",
        "json-path-is-a-directory",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--json", p.work],
        ("is a directory", "name a file"),
    ),
    Case(
        "eval",
        "tokenizer-path-missing",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--tokenizer", p.work / "tok"],
        ("tokenizer", "does not exist", "check the path"),
    ),
    Case(
        "eval",
        "unsupported-text-file",
        lambda p: ["eval", p.mha, "--dataset", p.work / "text.csv"],
        ("not a .txt, .json, .jsonl or .parquet file",),
        write_file("text.csv", "a,b\n1,2\n", under=""),
    ),
    Case(
        "eval",
        "model-config-not-json",
        lambda p: ["eval", p.src, "--dataset", p.text],
        ("config.json is not valid JSON", "re-download"),
        steps(copy_of("gqa"), write_file("config.json", "{")),
    ),
    Case(
        "eval",
        "window-too-small",
        lambda p: ["eval", p.mha, "--dataset", p.text, "--window", "1"],
        ("--window 1 is too small", "at least 2"),
    ),
    Case(
        "eval",
        "hub-keeps-answering-500",
        lambda p: ["eval", "someone/model", "--dataset", p.text],
        ("HTTP 500", "retry later"),
        hub=(500,) * 10,
    ),
    # -- train ---------------------------------------------------------------------------------------------
    Case(
        "train",
        "yaml-syntax-error",
        train_args(config="work"),
        ("is not valid YAML at line", "fix the file"),
        write_file("c.yaml", "model:\n  path: [unclosed\n", under=""),
    ),
    Case(
        "train",
        "yaml-not-a-mapping",
        train_args(config="work"),
        ("must be a mapping of sections",),
        write_file("c.yaml", "- model\n- data\n", under=""),
    ),
    Case(
        "train",
        "yaml-not-text",
        train_args(config="work"),
        ("is not UTF-8 text", "YAML file"),
        write_file("c.yaml", b"\xff\xfe\x00\x81binary", under=""),
    ),
    Case(
        "train",
        "yaml-key-twice",
        train_args(config="work"),
        ("the key 'lr' appears twice", "fix the file"),
        write_file("c.yaml", "model:\n  path: m\noptim:\n  lr: 1.0e-4\n  lr: 3.0e-4\n", under=""),
    ),
    Case(
        "train",
        "yaml-nested-too-deeply",
        train_args(config="work"),
        ("nested too deeply", "fix the file"),
        write_file("c.yaml", "model: " + "[" * 1000 + "]" * 1000 + "\n", under=""),
    ),
    Case(
        "train",
        "config-is-a-directory",
        lambda p: ["train", "--config", p.work, "--output", p.out],
        ("is a directory", "--config"),
    ),
    Case(
        "train",
        "learning-rate-nan",
        train_args("optim.lr=.nan"),
        ("optim.lr must be a finite number", "nan"),
    ),
    Case(
        "train",
        "token-count-negative",
        train_args("budget.max_tokens=-5"),
        ("budget.max_tokens", "whole number >= 0"),
    ),
    Case("train", "set-without-value", train_args("optim.lr"), ("--set 'optim.lr' is not key=value",)),
    Case(
        "train",
        "groups-do-not-divide-the-heads",
        train_args("model.convert.groups=3"),
        ("model.convert.groups 3 is invalid", "choose one of [1, 2, 4, 8]"),
    ),
    Case(
        "train",
        "groups-wrong-for-the-source",
        train_args("model.tiny=null", "model.convert.source={p.mha}", "model.convert.groups=5"),
        ("model.convert.groups 5 is invalid", "choose one of [1, 2, 4, 8]"),
    ),
    Case(
        "train",
        "tokenizer-of-another-model",
        train_args(*MODEL_PATH, "model.path={p.small}", "model.tokenizer={p.mha}"),
        ("has 320 tokens but the model has 96 embeddings", "model.tokenizer"),
    ),
    Case(
        "train",
        "model-without-a-tokenizer",
        train_args(*MODEL_PATH, "model.path={p.small}"),
        ("model.path:", "cannot load a tokenizer", "set model.tokenizer"),
    ),
    Case(
        "train",
        "pickled-model",
        train_args(*MODEL_PATH, "model.path={p.pickled}"),
        ("model.path:", "pickled", "safetensors"),
    ),
    Case(
        "train",
        "pickled-teacher",
        train_args("distill.enabled=true", "distill.teacher={p.pickled}"),
        ("distill.teacher:", "pickled", "uptrain convert"),
    ),
    Case(
        "train",
        "output-is-a-file",
        lambda p: ["train", "--config", TINY, "--output", p.work / "taken"],
        ("--output", "is a file", "choose a directory"),
        write_file("taken", "mine", under=""),
    ),
    Case(
        "train",
        "mix-with-a-missing-source",
        train_args(
            "data.dataset=null", "data.mix=[{{dataset: {p.text}}}, {{dataset: {p.work}/missing.txt}}]"
        ),
        ("data.mix[1].dataset", "does not exist", "fix the path"),
    ),
    Case(
        "train",
        "mix-entry-without-a-dataset",
        train_args("data.dataset=null", "data.mix=[{{weight: 1}}]"),
        ("data.mix[0] has no dataset", "give each entry a dataset"),
    ),
    Case(
        "train",
        "mix-negative-weight",
        train_args("data.dataset=null", "data.mix=[{{dataset: {p.text}, weight: -0.5}}]"),
        ("data.mix[0].weight must be >= 0",),
    ),
    Case(
        "train",
        "mix-weights-all-zero",
        train_args(
            "data.dataset=null",
            "data.mix=[{{dataset: {p.text}, weight: 0}}, {{dataset: {p.text}, weight: 0}}]",
        ),
        ("data.mix weights are all zero", "weight > 0"),
    ),
    Case(
        "train",
        "mix-and-dataset",
        train_args("data.mix=[{{dataset: {p.text}}}]"),
        ("data.mix replaces data.dataset", "--set data.dataset=null"),
    ),
    Case(
        "train",
        "eval-dataset-and-eval-split",
        train_args("eval.dataset={p.text}", "eval.split=validation"),
        ("eval.dataset and eval.split", "drop one of them"),
    ),
    Case(
        "train",
        "eval-dataset-missing",
        train_args("eval.dataset={p.work}/missing.txt"),
        ("eval.dataset:", "does not exist", "fix the path"),
    ),
    Case(
        "train",
        "hub-model-offline",
        train_args(*MODEL_PATH, "model.path=someone/model"),
        ("model.path:", "HF_HUB_OFFLINE"),
    ),
    # -- push ------------------------------------------------------------------------------------------
    Case("push", "directory-is-a-file", lambda p: ["push", p.text, "t/x", "--dry-run"], ("is a file",)),
    Case(
        "push",
        "corrupt-index",
        lambda p: ["push", p.src, "t/x", "--dry-run"],
        ("not a valid weight index", "regenerate"),
        steps(copy_of("gqa"), write_file("model.safetensors.index.json", "{")),
    ),
    Case(
        "push",
        "corrupt-uptrain-json",
        lambda p: ["push", p.src, "t/x", "--dry-run"],
        ("corrupt JSON", "regenerate"),
        steps(copy_of("gqa"), write_file("uptrain.json", '{"source": ')),
    ),
    Case(
        "push",
        "report-missing",
        lambda p: ["push", p.gqa, "t/x", "--dry-run", "--report", p.work / "report.json"],
        ("report", "does not exist", "uptrain run or eval"),
    ),
    Case(
        "push",
        "repo-id-with-dot-dot",
        lambda p: ["push", p.gqa, "../etc"],
        ("not a valid Hub repo id", "OWNER/NAME"),
        hub=(),
    ),
    Case(
        "push",
        "hub-fails-the-token-check",
        lambda p: ["push", p.gqa, "t/x"],
        ("HTTP 503", "retry later"),
        hub=(503,) * 10,
    ),
    Case(
        "run",
        "config-missing",
        lambda p: ["run", "--config", p.work / "nope.yaml", "--output", p.out],
        ("does not exist", "--config"),
    ),
    Case(
        "run", "no-config", lambda p: ["run", "--output", p.out], ("--config", "uptrain run --help"), code=2
    ),
    Case(
        "run",
        "report-key-unknown",
        lambda p: ["run", "--config", TINY, "--output", p.out, *sets("report.bogus=1")],
        ("unknown key report.bogus",),
    ),
    Case(
        "run",
        "plots-not-a-boolean",
        lambda p: ["run", "--config", TINY, "--output", p.out, *sets("report.plots=maybe")],
        ("report.plots must be true or false", "maybe"),
    ),
    Case(
        "run",
        "push-repo-invalid",
        lambda p: ["run", "--config", TINY, "--output", p.out, *sets("push.repo=not a/valid--id")],
        ("not a valid Hub repo id",),
    ),
    Case(
        "demo",
        "method-unknown",
        lambda p: ["demo", "--output", p.out, "--method", "bogus"],
        ("model.convert.method 'bogus' is not valid", "similar+fit+refine"),
    ),
    Case(
        "demo",
        "set-unknown-key",
        lambda p: ["demo", "--output", p.out, *sets("train.bogus=1")],
        ("unknown key train.bogus",),
    ),
    Case(
        "demo",
        "dataset-config-without-dataset",
        lambda p: ["demo", "--output", p.out, "--hub-dataset-config", "wikitext-2-raw-v1"],
        ("--hub-dataset-config needs --hub-dataset",),
    ),
    Case(
        "demo",
        "steps-not-a-number",
        lambda p: ["demo", "--output", p.out, *sets("budget.max_steps=many")],
        ("budget.max_steps", "many"),
    ),
]

# Bad inputs proven by other test files, each giving one `error:` line with the fix and no traceback
# (and, where something could be written, nothing written): module -> tests (a parametrized test
# counts once per case).
EXISTING = {
    "convert": {
        "test_convert_errors": [
            "test_invalid_groups",
            "test_unsupported_model_type_lists_supported",
            "test_missing_config",
            "test_missing_weights",
            "test_index_names_missing_shard",
            "test_truncated_shard",
            "test_corrupt_header",
            "test_index_with_path_traversal_is_refused",
            "test_existing_output_is_refused_without_overwrite",
            "test_output_inside_source_is_refused",
            "test_pickle_weights_refused_unless_allowed",
            "test_nonexistent_source",
            "test_unreachable_hub_id",
            "test_disk_full_mid_write_removes_temporary",
            "test_too_little_space_is_refused_before_writing",
            "test_bad_dtype_and_method",
            "test_missing_groups_is_a_one_line_usage_error",
        ],
        "test_gguf": ["test_directory_with_only_gguf_names_the_flag", "test_missing_gguf_file"],
    },
    "eval": {
        "test_evaluate_errors": [
            "test_bad_config_split_or_column",
            "test_unknown_hub_dataset_offline",
            "test_default_dataset_offline_suggests_a_local_file",
            "test_missing_dataset_file",
            "test_empty_text",
            "test_window_larger_than_positions",
            "test_stride_larger_than_window",
            "test_different_tokenizers",
            "test_tokenizer_larger_than_the_model_vocabulary",
            "test_model_without_tokenizer",
            "test_missing_model_path",
            "test_missing_json_folder",
        ],
    },
    "train": {
        "test_train_errors": [
            "test_unknown_key_in_the_file",
            "test_wrong_type",
            "test_missing_config_file",
            "test_missing_model_path",
            "test_missing_dataset",
            "test_a_budget_of_zero_steps",
            "test_no_output_directory",
            "test_an_existing_run_needs_resume",
            "test_resume_with_a_different_config_is_refused",
            "test_settings_checked_against_other_libraries",
        ],
        "test_config": [
            "test_unknown_keys_and_wrong_types_name_the_key",
            "test_inconsistent_settings_are_one_line_errors",
            "test_bad_overrides",
        ],
        "test_train_loop": [
            "test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint",
            "test_no_room_for_a_checkpoint_keeps_the_previous_one",
        ],
    },
    "push": {
        "test_push": [
            "test_a_hub_that_keeps_failing_gives_one_line",
            "test_unreachable_hub_gives_one_line",
            "test_wrong_token_is_a_one_line_error_naming_hf_token",
            "test_token_without_write_access",
            "test_no_token_at_all",
            "test_offline_mode_is_a_clear_error",
            "test_bad_directories",
            "test_invalid_repo_ids",
            "test_create_pr_against_another_branch_is_refused",
            "test_a_rejected_commit_is_not_retried",
            "test_a_file_holding_the_token_is_not_uploaded",
            "test_private_repo",
        ],
        "test_push_card": ["test_bad_report", "test_record_without_conversion_is_an_error"],
    },
}


def load_test_module(module_name: str):
    """A test module named by its file's basename, wherever it lives under tests/."""
    import sys

    if module_name in sys.modules:
        return sys.modules[module_name]
    (path,) = Path(__file__).resolve().parents[1].rglob(f"{module_name}.py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def existing_case_count(module_name: str, test_name: str) -> int:
    module = load_test_module(module_name)
    test = getattr(module, test_name)
    count = 1
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "parametrize":
            count *= len(mark.args[1])
    return count
