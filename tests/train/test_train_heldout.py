"""Held-out evaluation during training goes through the evaluator; its number is a plain mean NLL."""

import math

import torch
from accelerate import Accelerator
from tiny_models import tiny_config
from transformers import AutoModelForCausalLM

from uptrain.train.corpus import Corpus
from uptrain.train.heldout import HeldOutEvaluator


def test_heldout_loss_is_mean_next_token_nll():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", 8)).eval()
    blocks = torch.randint(0, 96, (5, 12))
    evaluator = HeldOutEvaluator(
        Corpus(blocks=None, heldout=blocks, seq_len=12), batch_size=2, accelerator=Accelerator(cpu=True)
    )
    result = evaluator(model)

    total, count = 0.0, 0
    with torch.no_grad():
        for row in blocks:  # the test's own computation, one block at a time
            logp = torch.log_softmax(model(row[None]).logits[0, :-1].double(), dim=-1)
            total -= logp.gather(1, row[1:, None]).sum().item()
            count += len(row) - 1
    assert result["eval_tokens"] == count == 5 * 11
    assert math.isclose(result["eval_loss"], total / count, rel_tol=1e-5)
    assert math.isclose(result["eval_ppl"], math.exp(total / count), rel_tol=1e-5)
