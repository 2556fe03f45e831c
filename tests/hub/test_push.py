"""uptrain push against a local Hub (tests/helpers/hub_server.py) with the real huggingface_hub client."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from cli_helpers import assert_one_line_error, run_cli, subprocess_env
from hub_server import FakeHub
from push_fixtures import FAKE_TOKEN, add_training, all_logs, build_checkpoint, expected_upload, fresh_copy

import uptrain.checkpoint.retry
from uptrain.checkpoint.retry import RetryPolicy
from uptrain.errors import UptrainError
from uptrain.hub.push import push_checkpoint


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("push"))


@pytest.fixture
def ckpt(template, tmp_path):
    return fresh_copy(template, tmp_path / "tiny-gqa")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local Hub that huggingface_hub talks to, as HF_ENDPOINT would make it, with Xet off."""
    from huggingface_hub import constants

    with FakeHub(token=FAKE_TOKEN) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"))
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        monkeypatch.setattr(
            uptrain.checkpoint.retry, "DEFAULT_RETRY", RetryPolicy(attempts=4, base_delay=0.001)
        )
        yield server


def arrived_exactly_the_checkpoint(server: FakeHub, repo_id: str, ckpt, ref: str = "main") -> None:
    arrived = server.files(repo_id, ref)
    expected = expected_upload(ckpt)
    assert set(arrived) == expected
    for name in expected:
        assert arrived[name] == (ckpt / name).read_bytes(), name


def test_push_uploads_exactly_the_checkpoint(hub, ckpt):
    r = run_cli("push", ckpt, "tiny-gqa")
    assert r.exit_code == 0, r.output
    arrived_exactly_the_checkpoint(hub, "tester/tiny-gqa", ckpt)  # the namespace came from whoami
    weights = [n for n in expected_upload(ckpt) if n.endswith(".safetensors")]
    assert len(weights) >= 3 and all(hub.modes[n] == "lfs" for n in weights)  # through LFS, as on the Hub
    assert hub.modes["config.json"] == "regular"
    assert hub.calls("commit") == 1 and hub.repos["tester/tiny-gqa"].private is False
    assert set(hub.authorization) - {None} == {f"Bearer {FAKE_TOKEN}"}  # the token was used...
    assert FAKE_TOKEN not in r.output  # ...and not shown
    assert f"uploaded {len(expected_upload(ckpt))} files" in r.output
    assert "8 -> 2 KV heads" in hub.repos["tester/tiny-gqa"].commits[0]["summary"]


def test_push_again_updates_the_same_repo(hub, ckpt):
    assert run_cli("push", ckpt, "uptrain-org/tiny-gqa").exit_code == 0
    (ckpt / "config.json").write_text((ckpt / "config.json").read_text().replace("}", ', "extra": 1}', 1))
    r = run_cli("push", ckpt, "uptrain-org/tiny-gqa", "--commit-message", "second")
    assert r.exit_code == 0, r.output
    arrived_exactly_the_checkpoint(hub, "uptrain-org/tiny-gqa", ckpt)
    assert [c["summary"] for c in hub.repos["uptrain-org/tiny-gqa"].commits][1] == "second"


@pytest.mark.parametrize(
    "endpoint, answers",
    [
        ("create", (500, 500)),
        ("commit", (500, 500)),
        ("commit", (502, "reset")),
        ("whoami", ("reset", 503)),
        ("lfs-batch", (500, 500)),
    ],
)
def test_transient_failures_are_retried(hub, ckpt, endpoint, answers):
    hub.fail(endpoint, *answers)
    with all_logs() as logs:
        result = push_checkpoint(ckpt, "tester/tiny-gqa")
    assert hub.calls(endpoint) == len(answers) + 1
    arrived_exactly_the_checkpoint(hub, "tester/tiny-gqa", ckpt)
    assert result.commit_url and hub.calls("commit") == 1 + (endpoint == "commit") * len(answers)
    assert (
        any("retrying" in line for line in logs.lines) or endpoint == "lfs-batch"
    )  # (huggingface_hub's own)


def test_a_hub_that_keeps_failing_gives_one_line(hub, ckpt):
    hub.fail("commit", *[500] * 10)
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert_one_line_error(r, "HTTP 500", "4 attempts", "retry later")
    assert hub.calls("commit") == 4  # RetryPolicy(attempts=4) from the fixture
    assert hub.files("tester/tiny-gqa") == {}


def test_unreachable_hub_gives_one_line(hub, ckpt, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert_one_line_error(r, "cannot reach the Hub", "HF_ENDPOINT")


def test_wrong_token_is_a_one_line_error_naming_hf_token(hub, ckpt, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_someOtherTokenThatTheHubRejects")
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert_one_line_error(r, "HTTP 401", "HF_TOKEN")
    assert "hf_someOther" not in r.output and hub.repos == {}


def test_token_without_write_access(hub, ckpt):
    hub.read_only = True
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert_one_line_error(r, "HTTP 403", "write access", "HF_TOKEN")
    assert hub.repos == {}


def test_no_token_at_all(hub, ckpt, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert_one_line_error(r, "no Hugging Face token", "HF_TOKEN")
    assert hub.requests == []


def test_offline_mode_is_a_clear_error(hub, ckpt, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_one_line_error(run_cli("push", ckpt, "tester/tiny-gqa"), "HF_HUB_OFFLINE", "--dry-run")


def test_token_never_appears_in_output_logs_or_files(hub, ckpt, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_DEBUG", True)  # huggingface_hub logs every request as curl
    hub.fail("commit", 500)
    with all_logs() as logs:
        ok = run_cli("push", ckpt, "tester/tiny-gqa", "--revision", "dev")
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN + "x")
        refused = run_cli("push", ckpt, "tester/tiny-gqa")
    assert ok.exit_code == 0 and refused.exit_code != 0, ok.output + refused.output
    assert any("Send: curl" in line for line in logs.lines)  # the logs were really captured
    assert f"Bearer {FAKE_TOKEN}" in hub.authorization  # and the token was really sent
    for text in [ok.output, refused.output, *logs.lines]:
        assert FAKE_TOKEN not in text
    for path in ckpt.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for blob in hub.files("tester/tiny-gqa", "dev").values():
        assert FAKE_TOKEN.encode() not in blob


@pytest.mark.slow
def test_push_in_a_subprocess_reads_hf_endpoint_and_hf_token(template, tmp_path):
    ckpt = fresh_copy(template, tmp_path / "tiny-gqa")
    with FakeHub(token=FAKE_TOKEN) as server:
        env = subprocess_env(
            HF_ENDPOINT=server.url,
            HF_TOKEN=FAKE_TOKEN,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_OFFLINE="0",
            HF_HOME=str(tmp_path / "hf-home"),
            HF_DEBUG="1",
        )
        server.fail("create", 500)
        p = subprocess.run(
            [sys.executable, "-m", "uptrain", "--debug", "push", str(ckpt), "uptrain-org/tiny-gqa"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        arrived_exactly_the_checkpoint(server, "uptrain-org/tiny-gqa", ckpt)
    assert "retrying" in p.stderr
    assert FAKE_TOKEN not in p.stdout + p.stderr


def test_dry_run_lists_files_and_sizes_without_network(hub, ckpt, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_TOKEN")
    r = run_cli("push", ckpt, "tester/tiny-gqa", "--dry-run")
    assert r.exit_code == 0, r.output
    assert hub.requests == []
    assert (ckpt / "README.md").is_file()
    listed = {
        m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\s+(\S+)\s+([\d,]+) B\b", r.output, re.M)
    }
    assert listed == {name: (ckpt / name).stat().st_size for name in expected_upload(ckpt)}
    assert "would upload" in r.output and "nothing was sent" in r.output


def test_revision_goes_to_a_new_branch(hub, ckpt):
    r = run_cli("push", ckpt, "tester/tiny-gqa", "--revision", "gqa-2")
    assert r.exit_code == 0, r.output
    arrived_exactly_the_checkpoint(hub, "tester/tiny-gqa", ckpt, ref="gqa-2")
    assert hub.files("tester/tiny-gqa", "main") == {}


def test_create_pr(hub, ckpt):
    assert run_cli("push", ckpt, "tester/tiny-gqa").exit_code == 0
    r = run_cli("push", ckpt, "tester/tiny-gqa", "--create-pr", "--commit-message", "GQA-2")
    assert r.exit_code == 0, r.output
    assert "discussions/1" in r.output
    arrived_exactly_the_checkpoint(hub, "tester/tiny-gqa", ckpt, ref="refs/pr/1")
    assert hub.repos["tester/tiny-gqa"].commits[-1] == {
        "ref": "refs/pr/1",
        "summary": "GQA-2",
        "paths": sorted(expected_upload(ckpt)),
    }


def test_private_repo(hub, ckpt):
    assert run_cli("push", ckpt, "tester/secret", "--private").exit_code == 0
    assert hub.repos["tester/secret"].private is True
    assert run_cli("push", ckpt, "tester/public").exit_code == 0
    before = len(hub.repos["tester/public"].commits)
    r = run_cli("push", ckpt, "tester/public", "--private")
    assert_one_line_error(r, "is public", "--private")
    assert len(hub.repos["tester/public"].commits) == before  # nothing was uploaded


def test_hand_written_card_is_kept(hub, ckpt):
    card = "---\nlicense: mit\n---\n# My own card\n"
    (ckpt / "README.md").write_text(card)
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert r.exit_code == 0, r.output
    assert hub.files("tester/tiny-gqa")["README.md"] == card.encode()
    assert "kept the hand-written" in r.output


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda d: d / "missing", ("does not exist",)),
        (lambda d: _only(d, "config.json", "uptrain.json"), ("no safetensors weights",)),
        (lambda d: _only(d, "config.json", "uptrain.json", "pytorch_model.bin"), ("pickled",)),
        (lambda d: _drop(d, "uptrain.json"), ("no uptrain.json",)),
        (lambda d: _drop(d, sorted(p.name for p in d.glob("*.safetensors"))[1]), ("lacks", "incomplete")),
    ],
)
def test_bad_directories(hub, ckpt, make, fragments):
    assert_one_line_error(run_cli("push", make(ckpt), "tester/tiny-gqa", "--dry-run"), *fragments)
    assert hub.requests == []


@pytest.mark.parametrize("repo_id", ["a/b/c", "has space", "bad--name", "trail-", "x" * 97, "owner/"])
def test_invalid_repo_ids(hub, ckpt, repo_id):
    assert_one_line_error(run_cli("push", ckpt, repo_id), "not a valid Hub repo id")
    assert hub.requests == []


def test_create_pr_against_another_branch_is_refused(hub, ckpt):
    assert_one_line_error(run_cli("push", ckpt, "t/x", "--create-pr", "--revision", "dev"), "--create-pr")


def test_library_call_returns_what_was_pushed(hub, ckpt, monkeypatch):
    from huggingface_hub import constants

    result = push_checkpoint(ckpt, "tester/tiny-gqa", commit_message="from run")
    assert {name for name, _ in result.files} == expected_upload(ckpt)
    assert result.total_bytes == sum((ckpt / n).stat().st_size for n in expected_upload(ckpt))
    assert hub.repos["tester/tiny-gqa"].commits[0]["summary"] == "from run"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UptrainError, match="HF_HUB_OFFLINE"):
        push_checkpoint(ckpt, "tester/tiny-gqa")


def _only(directory, *keep):
    for path in directory.iterdir():
        if path.is_file() and path.name not in keep:
            path.unlink()
    return directory


def _drop(directory, name):
    (directory / name).unlink()
    return directory


def test_a_rejected_commit_is_not_retried(hub, ckpt):
    hub.fail("commit", 422)
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert_one_line_error(r, "HTTP 422", "injected 422")
    assert hub.calls("commit") == 1


def test_backoff_doubles_up_to_its_cap():
    from uptrain.checkpoint.retry import call_with_retries

    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 5:
            raise ConnectionResetError("connection reset by peer")
        return "done"

    policy = RetryPolicy(attempts=5, base_delay=1.5, max_delay=5.0)
    out = call_with_retries("x", flaky, repo_id="a/b", endpoint="e", policy=policy, sleep=waits.append)
    assert out == "done" and waits == [1.5, 3.0, 5.0, 5.0]
    with pytest.raises(UptrainError, match="cannot reach the Hub"):
        call_with_retries("x", _always_reset, repo_id="a/b", endpoint="e", policy=policy, sleep=waits.append)


def _always_reset():
    raise ConnectionResetError("connection reset by peer")


def test_a_file_holding_the_token_is_not_uploaded(hub, ckpt):
    add_training(ckpt, tokens_seen=1000, config={"hub_token": FAKE_TOKEN, "lr": 1e-4})
    r = run_cli("push", ckpt, "tester/tiny-gqa")
    assert_one_line_error(r, "uptrain.json contains your Hub token")
    assert FAKE_TOKEN not in r.output
    assert hub.calls("commit") == 0 and hub.calls("preupload") == 0
    assert FAKE_TOKEN not in (ckpt / "README.md").read_text()  # the card redacts it
