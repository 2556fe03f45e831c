"""Saving the training state of a model with tied input/output embeddings: accelerate drops the tied
name and logs "Removed shared tensor ... while saving"; uptrain's checkpoints keep that line out of
the output, and loading the checkpoint gives back both (still tied) weights."""

from __future__ import annotations

import logging

import torch
from accelerate import Accelerator
from train_runs import reset_accelerate
from transformers import LlamaConfig, LlamaForCausalLM

from uptrain.train.checkpoints import TrainerState, latest_checkpoint, save_checkpoint

MESSAGE = "Removed shared tensor"


def _tied_model() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def test_saving_a_tied_model_logs_no_removed_shared_tensor_line(tmp_path, caplog):
    reset_accelerate()
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(_tied_model())
    with caplog.at_level(logging.WARNING):
        accelerator.save_state(str(tmp_path / "plain"))  # accelerate alone: the line is there
    assert any(MESSAGE in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        save_checkpoint(accelerator, tmp_path / "ckpt", TrainerState(step=1, tokens=8), keep_last=1)
    assert not any(MESSAGE in r.getMessage() for r in caplog.records)

    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    accelerator.load_state(str(latest_checkpoint(tmp_path / "ckpt")))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
