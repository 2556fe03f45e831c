import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))  # shared helpers: from tiny_models import ...
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run as fast on one thread, and a busy machine cannot stall OpenMP's spinning
    threads. (Subprocesses the tests start choose their own thread count.)"""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_llama(tmp_path):
    """A 2-layer Llama with 8 query heads and 8 KV heads (MHA), float32, in 3+ safetensors shards."""
    from tiny_models import build_tiny

    return build_tiny("llama", tmp_path / "src", kv_heads=8, max_shard_size="40KB")
