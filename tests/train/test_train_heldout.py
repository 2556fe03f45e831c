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
        Corpus(blocks=None, heldout=blocks), batch_size=2, accelerator=Accelerator(cpu=True)
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


def test_eval_dataset_scores_another_text_in_sliding_windows(tmp_path):
    """eval.dataset: the first eval.blocks x seq_len tokens of another text, in windows of seq_len with
    stride seq_len / 2 (uptrain eval's rule), against the guide's loop written out here."""
    from uptrain.checkpoint.offline import byte_level_tokenizer
    from uptrain.config import DataSection, EvalSection, TextSourceSection
    from uptrain.train.corpus import load_corpus

    train_text, other = tmp_path / "train.txt", tmp_path / "other.txt"
    train_text.write_text("training text. " * 200)
    other.write_text("".join(f"held-out line {i}, another text.\n" for i in range(40)))
    tokenizer = byte_level_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", 8, vocab_size=len(tokenizer))).eval()
    data = DataSection(dataset=str(train_text), seq_len=12)
    evaluation = EvalSection(dataset=TextSourceSection(dataset=str(other)), blocks=5)
    corpus = load_corpus(data, evaluation, tokenizer, tmp_path / "data")
    assert corpus.heldout.shape == (0, 12)  # nothing held out of the training text
    assert corpus.block_count == len(tokenizer(train_text.read_text())["input_ids"]) // 12  # all of it trains
    result = HeldOutEvaluator(corpus, batch_size=2, accelerator=Accelerator(cpu=True))(model)

    ids = torch.tensor(tokenizer(other.read_text())["input_ids"][:60])  # 5 blocks x 12 tokens
    total, count, previous_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), 6):  # the guide's loop: window 12, stride 6
            end = min(begin + 12, len(ids))
            first_target = max(previous_end, begin + 1)
            logp = torch.log_softmax(model(ids[None, begin:end]).logits[0].double(), dim=-1)
            for t in range(first_target, end):
                total -= logp[t - begin - 1, ids[t]].item()
                count += 1
            previous_end = end
            if end == len(ids):
                break
    assert result["eval_tokens"] == count == 59
    assert math.isclose(result["eval_loss"], total / count, rel_tol=1e-5)
