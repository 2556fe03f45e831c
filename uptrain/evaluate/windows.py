"""Which tokens each forward pass sees and which it scores: pure index arithmetic, no torch.

A `Window` feeds `ids[begin:end]` to the model and scores the targets `ids[target_begin:target_end]`,
each predicted from the logits one position earlier. Two recipes build them:

- `sliding_windows`: the Hugging Face guide "Perplexity of fixed-length models". Windows of `window`
  tokens start every `stride` tokens; each scores only the tokens that the previous one did not
  reach, the rest being context (the guide's -100 labels). The first window has no context, so its
  first token is not scored (nothing predicts it); with stride == window every window is like that,
  so the windows are disjoint and the first token of each goes unscored. The last window is shorter
  when the text ends before it fills (and is dropped when, stride == window, it holds a single token:
  the guide's loop would add its NaN loss with weight 0, i.e. a NaN perplexity).
- `rolling_windows`: lm-evaluation-harness's `loglikelihood_rolling` (get_rolling_token_windows with
  context_len=1, then make_disjoint_window) over `[prefix] + tokens`: disjoint chunks of `window`
  targets, each conditioned on the token before it (the prefix token for the first chunk), the last
  chunk on a full window of earlier tokens. Every token of the document is scored exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from uptrain.errors import UptrainError


@dataclass(frozen=True)
class Window:
    begin: int
    end: int
    target_begin: int
    target_end: int

    def __post_init__(self) -> None:
        if not (self.begin < self.target_begin < self.target_end <= self.end + 1 and self.begin < self.end):
            raise ValueError(f"inconsistent window {self}")

    @property
    def length(self) -> int:
        return self.end - self.begin

    @property
    def targets(self) -> int:
        return self.target_end - self.target_begin

    @property
    def logits_needed(self) -> int:
        """How many logits, counted back from the end of the input, the targets need."""
        return self.end - self.target_begin + 1


def check_window_and_stride(window: int, stride: int) -> None:
    if window < 2:
        raise UptrainError(f"--window {window} is too small; use at least 2 tokens")
    if not 1 <= stride <= window:
        raise UptrainError(
            f"--stride {stride} must be between 1 and --window {window}; a larger stride skips tokens"
        )


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """The guide's loop, as windows: `for begin in range(0, n, stride)`, ending at the text's end."""
    check_window_and_stride(window, stride)
    if n_tokens < 2:
        raise UptrainError(f"the text has {n_tokens} token(s); perplexity needs at least 2")
    windows: list[Window] = []
    previous_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        if max(previous_end, begin + 1) < end:  # a last window of one token has nothing to score
            windows.append(Window(begin, end, max(previous_end, begin + 1), end))
        previous_end = end
        if end == n_tokens:
            break
    return windows


def rolling_windows(n_tokens: int, window: int, offset: int = 0) -> list[Window]:
    """The harness's disjoint rolling windows over a sequence `[prefix] + tokens` of n_tokens + 1 ids
    that starts at `offset` in a larger id tensor. Empty documents have no windows."""
    if window < 1:
        raise UptrainError(f"--window {window} is too small; use at least 2 tokens")
    windows: list[Window] = []
    for a in range(0, n_tokens, window):
        b = min(a + window, n_tokens)  # targets are tokens[a:b] = sequence[a + 1 : b + 1]
        windows.append(Window(offset + max(0, b - window), offset + b, offset + a + 1, offset + b + 1))
    return windows
