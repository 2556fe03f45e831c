"""convert and inspect through the CLI, as a user runs them."""

import json

import pytest
from cli_helpers import run_cli

from uptrain import __version__


def test_version():
    r = run_cli("--version")
    assert r.exit_code == 0 and r.output.strip() == f"uptrain {__version__}"


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_help(command):
    r = run_cli(command, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_convert_and_verify(tiny_llama, tmp_path):
    r = run_cli("convert", tiny_llama, tmp_path / "out", "--groups", "8", "--verify")
    assert r.exit_code == 0, r.output
    assert "8 -> 8 KV heads" in r.output
    row = [line for line in r.output.splitlines() if "│" in line and "1,024" in line]
    assert row, r.output
    cells = [c.strip() for c in row[0].strip("│ ").split("│")]
    assert cells[0] == "0" and cells[1] == "100%"  # identical logits at G = KV
    assert "serving: config.json names LlamaForCausalLM, dtype float32" in r.output


def test_verify_reports_kv_shrink(tiny_llama, tmp_path):
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "2", "--verify")
    assert r.exit_code == 0, r.output
    # 2 layers x 2 (K,V) x heads x 8 dims x 4 bytes, measured from the cache: 8 heads -> 2 heads
    assert "1,024" in r.output and "256" in r.output
    assert "4.0x smaller" in r.output


def test_inspect_json(tiny_llama):
    r = run_cli("inspect", tiny_llama, "--json")
    assert r.exit_code == 0, r.output
    facts = json.loads(r.output)
    from safetensors import safe_open

    params = 0
    for f in tiny_llama.glob("*.safetensors"):
        with safe_open(f, "pt") as h:
            params += sum(h.get_tensor(k).numel() for k in h.keys())  # noqa: SIM118
    assert facts["parameters"] == params
    assert (facts["query_heads"], facts["kv_heads"], facts["head_dim"], facts["layers"]) == (8, 8, 8, 2)
    assert facts["kv_bytes_per_token"] == 2 * 2 * 8 * 8 * 4
    assert facts["kv_bytes_at_4k"] == facts["kv_bytes_per_token"] * 4096
    assert facts["kv_bytes_at_32k"] == facts["kv_bytes_per_token"] * 32768
    assert facts["valid_groups"] == [1, 2, 4, 8]
    assert facts["attention"] == "MHA"


def test_inspect_table(tiny_llama):
    r = run_cli("inspect", tiny_llama)
    assert r.exit_code == 0 and "valid groups" in r.output and "1, 2, 4, 8" in r.output
