"""uptrain.pipeline.manifest on hand-made inputs: the digest is the SHA-256 of the inputs' sorted JSON, a
stage is up to date exactly when its manifest says finished with that digest and its outputs exist, and
file and checkpoint identities are what os.stat and hashlib say."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from uptrain.pipeline.manifest import (
    FINISHED,
    STARTED,
    Manifests,
    Stage,
    changed_inputs,
    checkpoint_identity,
    digest_of,
    file_identity,
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_digest_is_the_sha256_of_the_sorted_json():
    assert digest_of({"b": [2, 3], "a": 1}) == sha256('{"a": 1, "b": [2, 3]}')
    assert digest_of({"a": 1, "b": [2, 3]}) == digest_of({"b": [2, 3], "a": 1})  # key order is irrelevant
    assert digest_of({"p": Path("/x/y")}) == sha256('{"p": "/x/y"}')  # non-JSON values as str
    assert digest_of({"a": 1}) != digest_of({"a": 2})
    assert Stage("s", {"a": 1}).digest == sha256('{"a": 1}')


def test_changed_inputs_are_dotted_keys():
    old = {"convert": {"groups": 2, "method": "mean"}, "source": {"path": "/a"}, "gone": 1}
    new = {"convert": {"groups": 1, "method": "mean"}, "source": {"path": Path("/a")}, "added": [1]}
    assert changed_inputs(old, new) == ["added", "convert.groups", "gone"]  # Path("/a") reads as "/a"
    assert changed_inputs(old, old) == []


@pytest.fixture
def stage(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.json").write_text("{}")
    return Stage("convert", {"groups": 2}, ["out/a.json"])


def test_a_written_manifest_records_the_stage(tmp_path, stage):
    manifests = Manifests(tmp_path)
    record = manifests.write(stage, seconds=1.5)
    on_disk = json.loads((tmp_path / "stages" / "convert.json").read_text())
    assert on_disk == record
    finished = on_disk.pop("finished")
    assert finished.endswith("+00:00") and len(finished) == len("2026-01-01T00:00:00+00:00")  # UTC, seconds
    assert on_disk == {
        "stage": "convert",
        "status": "finished",
        "digest": sha256('{"groups": 2}'),
        "inputs": {"groups": 2},
        "outputs": ["out/a.json"],
        "seconds": 1.5,
    }
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == ["convert.json"]  # no temporary file
    started = manifests.write(stage, status=STARTED)
    assert started["status"] == "started" and "started" in started and "finished" not in started
    assert manifests.read("convert") == started


def test_up_to_date_needs_finished_the_same_digest_and_every_output(tmp_path, stage):
    manifests = Manifests(tmp_path)
    assert not manifests.up_to_date(stage)  # no manifest yet
    manifests.write(stage, status=STARTED)
    assert not manifests.up_to_date(stage)  # started, never finished
    manifests.write(stage, status=FINISHED)
    assert manifests.up_to_date(stage)
    assert not manifests.up_to_date(Stage("convert", {"groups": 1}, ["out/a.json"]))  # other inputs
    assert not manifests.up_to_date(Stage("convert", {"groups": 2}, ["out/a.json", "out/b.json"]))
    (tmp_path / "out" / "a.json").unlink()
    assert not manifests.up_to_date(stage)  # an output is gone


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_an_unreadable_manifest_is_no_manifest(tmp_path, stage, content):
    manifests = Manifests(tmp_path)
    manifests.write(stage)
    (tmp_path / "stages" / "convert.json").write_text(content)
    assert manifests.read("convert") is None and not manifests.up_to_date(stage)


def test_file_identity_is_where_how_big_and_when(tmp_path):
    path = tmp_path / "d" / ".." / "f.bin"
    (tmp_path / "d").mkdir()
    (tmp_path / "f.bin").write_bytes(b"12345")
    os.utime(tmp_path / "f.bin", ns=(1_000_000_000, 1_234_567_891_000))
    assert file_identity(path) == {
        "path": str((tmp_path / "f.bin").resolve()),
        "size": 5,
        "mtime_ns": 1_234_567_891_000,
    }


def test_checkpoint_identity_hashes_the_config_and_lists_the_weight_files(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "llama"}')
    for name, data in (("model-2.safetensors", b"bb"), ("model-1.safetensors", b"a"), ("x.gguf", b"ccc")):
        (ckpt / name).write_bytes(data)
        os.utime(ckpt / name, ns=(0, 7_000_000_000))
    (ckpt / "README.md").write_text("not a weight file")
    (ckpt / "sub.safetensors").mkdir()  # a directory, whatever its name
    assert checkpoint_identity(ckpt) == {
        "path": str(ckpt.resolve()),
        "config_sha256": sha256('{"model_type": "llama"}'),
        "weights": [
            {"path": "model-1.safetensors", "size": 1, "mtime_ns": 7_000_000_000},
            {"path": "model-2.safetensors", "size": 2, "mtime_ns": 7_000_000_000},
            {"path": "x.gguf", "size": 3, "mtime_ns": 7_000_000_000},
        ],
    }
    (ckpt / "config.json").unlink()
    assert checkpoint_identity(ckpt)["config_sha256"] is None
