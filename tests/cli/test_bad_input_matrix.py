"""The bad-input matrix: every command, every kind of mistake -> one `error:` line that names the fix, a
non-zero exit, no traceback (unless --debug), and nothing left behind.

Each row of CASES runs the CLI in-process against an empty work directory and checks, beyond the one-line
contract, that the directory holds exactly what it held before (no OUT, no temporary directory, no
config.yaml) and that the local Hub received nothing. Mistakes other test files already prove are not
repeated: EXISTING names those tests, test_existing_cases_still_exist keeps the references from rotting,
and test_the_matrix_covers_every_command counts both. Random configs come from hypothesis.
"""

from __future__ import annotations

import os

import pytest
import yaml
from bad_input import Inputs, build_inputs, copy_of, left_behind, snapshot
from bad_input_cases import CASES, COMMANDS, EXISTING, existing_case_count, load_test_module
from cli_helpers import assert_one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_runs import TINY, reset_accelerate

import uptrain.checkpoint.retry
from uptrain.checkpoint.retry import RetryPolicy


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture
def inputs(shared, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    return Inputs(**shared, work=work)


@pytest.fixture(autouse=True)
def clean_accelerate():
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture
def local_hub(monkeypatch, tmp_path):
    """Start the local Hub (tests/helpers/hub_server.py) for a case that talks to one; yields a function."""
    from contextlib import ExitStack

    from hub_server import FakeHub
    from huggingface_hub import constants
    from push_fixtures import FAKE_TOKEN

    stack = ExitStack()

    def start(answers: tuple):
        if answers == ("down",):
            url, server = "http://127.0.0.1:9", None  # the discard port: connection refused
        else:
            server = stack.enter_context(FakeHub(token=FAKE_TOKEN))
            url = server.url
            for endpoint in ("info", "whoami"):
                server.fail(endpoint, *answers)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        monkeypatch.setattr(
            uptrain.checkpoint.retry, "DEFAULT_RETRY", RetryPolicy(attempts=3, base_delay=0.001)
        )
        return server

    yield start
    stack.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, inputs, local_hub):
    if case.prepare is not None:
        case.prepare(inputs)
    server = local_hub(case.hub) if case.hub else None
    before = snapshot(inputs.work)
    result = run_cli(*case.args(inputs))
    assert_one_line_error(result, *case.fragments, code=case.code)
    assert left_behind(before, snapshot(inputs.work)) == []
    if server is not None:
        assert server.repos == {} and server.calls("commit") == 0


@pytest.mark.parametrize(
    "args",
    [
        lambda p: ["--debug", "convert", p.src, p.out, "-g", "3"],
        lambda p: ["--debug", "train", "--config", p.work / "c.yaml"],
    ],
    ids=["convert", "train"],
)
def test_debug_shows_the_traceback_and_still_ends_with_the_error_line(args, inputs, monkeypatch):
    copy_of("mha")(inputs)
    (inputs.work / "c.yaml").write_text("model: [\n")
    plain = run_cli(*[a for a in args(inputs) if a != "--debug"])
    debug = run_cli(*args(inputs))
    line = assert_one_line_error(plain)
    assert debug.exit_code == plain.exit_code != 0
    assert "Traceback (most recent call last)" in debug.output
    assert debug.output.rstrip().splitlines()[-1] == line
    monkeypatch.setenv("UPTRAIN_DEBUG", "1")
    assert "Traceback (most recent call last)" in run_cli(*args(inputs)[1:]).output


def test_an_unexpected_failure_is_one_line_that_says_to_report_it(inputs, monkeypatch):
    import uptrain.convert.summary

    def broken(source):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(uptrain.convert.summary, "summarize", broken)
    result = run_cli("inspect", inputs.mha)
    assert_one_line_error(result, "RuntimeError: something nobody foresaw", "--debug", "report it")
    assert "second line" not in result.output


# -- hypothesis: random configs ----------------------------------------------------------------------------

KEYS = [
    "output",
    "model",
    "data",
    "budget",
    "optim",
    "train",
    "distill",
    "eval",
    "checkpoint",
    "logging",
    "path",
    "convert",
    "tiny",
    "groups",
    "lr",
    "betas",
    "seq_len",
    "max_steps",
    "max_tokens",
    "fraction",
    "dataset",
    "mixed_precision",
    "per_device_batch",
    "enabled",
    "weight",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["2T", "1e-4", ".nan", "-.inf", "builtin:python-docs", "yes", "~", "0x1F", "1_000"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=20,
)
HYPOTHESIS = settings(  # UPTRAIN_FUZZ_EXAMPLES=5000 for a longer hunt
    max_examples=int(os.environ.get("UPTRAIN_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_train_config(path, text_or_bytes) -> None:
    if isinstance(text_or_bytes, bytes):
        path.write_bytes(text_or_bytes)
    else:
        path.write_text(text_or_bytes)
    result = run_cli("train", "--config", path, "--print-config")
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0:  # valid: the resolved config came back, and it loads again
        assert yaml.safe_load(result.output)["model"] is not None
    else:
        assert_one_line_error(result)
        assert "an internal error" not in result.output, result.output


@HYPOTHESIS
@given(document=documents)
def test_random_yaml_documents_validate_to_one_line(document, tmp_path):
    _check_train_config(tmp_path / "random.yaml", yaml.safe_dump(document, allow_unicode=True))


@HYPOTHESIS
@given(data=st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_random_bytes_and_text_validate_to_one_line(data, tmp_path):
    _check_train_config(tmp_path / "random.yaml", data)


def _leaf_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _every_key() -> list[str]:
    from uptrain.config import dump_config, load_config

    return sorted(_leaf_keys(yaml.safe_load(dump_config(load_config(TINY)))))


EVERY_KEY = _every_key()


@HYPOTHESIS
@given(changes=st.dictionaries(st.sampled_from(EVERY_KEY), documents, min_size=1, max_size=3))
def test_random_values_for_real_keys_are_checked_before_any_work(changes, tmp_path, monkeypatch):
    """Valid-looking configs with random values at real keys: `uptrain train` either refuses them in one
    line before writing anything, or gets as far as preparing the model (stopped there by the test)."""
    import uptrain.pipeline.training as training
    from uptrain.errors import UptrainError

    class Reached(UptrainError):
        pass

    def stop(*args, **kwargs):
        raise Reached("validation passed; the test stops here")

    monkeypatch.setattr(training, "prepare_student", stop)
    config = yaml.safe_load(TINY.read_text())
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    path, out = tmp_path / "c.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    reset_accelerate()
    result = run_cli("train", "--config", path, "--output", out)
    line = assert_one_line_error(result)
    assert "an internal error" not in line, line
    assert not out.exists(), (line, sorted(p.name for p in out.rglob("*")))


# -- the count ----------------------------------------------------------------------------------------


def test_existing_cases_still_exist():
    for modules in EXISTING.values():
        for module_name, tests in modules.items():
            module = load_test_module(module_name)
            for name in tests:
                assert callable(getattr(module, name, None)), f"{module_name}.{name} was renamed or removed"


def matrix_counts() -> dict[str, dict[str, int]]:
    """command -> {"new": rows of CASES, "existing": cases of the tests EXISTING names}."""
    counts = {c: {"new": 0, "existing": 0} for c in COMMANDS}
    for case in CASES:
        counts[case.command]["new"] += 1
    for command, modules in EXISTING.items():
        for module_name, tests in modules.items():
            counts[command]["existing"] += sum(existing_case_count(module_name, t) for t in tests)
    return counts


def test_the_matrix_covers_every_command():
    counts = matrix_counts()
    print("bad-input matrix (new rows + cases proven elsewhere):", counts)
    assert all(c["new"] + c["existing"] >= 4 for c in counts.values()), counts
    assert sum(c["new"] for c in counts.values()) >= 30, counts
