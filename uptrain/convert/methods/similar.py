"""`similar`: choose which KV heads share a group from calibration, instead of taking runs of
consecutive heads.

The cost of putting heads a and b together is the calibrated error (objective.py) of merging just
those two with the merge step that follows (mean, aligned or fit), relative to the layer's total.
Groups of KV/G heads are then chosen to minimize the summed pairwise cost inside groups: greedy
from the cheapest pair, then swaps between groups while any swap lowers the total.

transformers serves KV head j to the consecutive query heads j*H/G ..., so the chosen groups are
made runs of consecutive heads by permuting the KV heads, their query heads and o_proj's columns
together. That permutation alone leaves the model's function unchanged.
"""

from __future__ import annotations

import itertools

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.base import LayerFn, MethodContext
from uptrain.convert.methods.metric import calibrated_setup
from uptrain.convert.methods.objective import layer_error

MAX_SWEEPS = 50


def select_heads(attn: AttentionWeights, heads: list[int]) -> AttentionWeights:
    """The layer restricted to (and reordered as) the KV heads `heads`, with their query heads."""
    per_kv = attn.heads // attn.kv_heads
    kv = torch.tensor(heads)
    q = torch.tensor([h * per_kv + j for h in heads for j in range(per_kv)])
    return attn.replace(
        q=attn.q[q],
        q_bias=None if attn.q_bias is None else attn.q_bias[q],
        k=attn.k[kv],
        v=attn.v[kv],
        k_bias=None if attn.k_bias is None else attn.k_bias[kv],
        v_bias=None if attn.v_bias is None else attn.v_bias[kv],
        o=attn.o[:, q],
        kv_extras={name: t[kv] for name, t in attn.kv_extras.items()},
    )


def group_cost(cost: torch.Tensor, group: list[int]) -> float:
    return float(sum(cost[a, b] for a, b in itertools.combinations(group, 2)))


def balanced_groups(cost: torch.Tensor, groups: int) -> list[list[int]]:
    """Split range(n) into `groups` groups of n/groups, keeping the summed pairwise `cost` (n, n)
    inside groups low. Deterministic; groups sorted, and ordered by their first head."""
    n = cost.shape[0]
    size = n // groups
    if size == 1:
        return [[h] for h in range(n)]
    left = list(range(n))
    result: list[list[int]] = []
    while left:
        if len(left) == size:
            group = list(left)
        else:
            a, b = min(itertools.combinations(left, 2), key=lambda p: (float(cost[p]), p))
            group = [a, b]
            while len(group) < size:
                rest = [h for h in left if h not in group]
                group.append(min(rest, key=lambda h: (sum(float(cost[h, x]) for x in group), h)))
        result.append(sorted(group))
        left = [h for h in left if h not in group]
    for _ in range(MAX_SWEEPS):
        improved = False
        for g1, g2 in itertools.combinations(range(len(result)), 2):
            for a, b in itertools.product(list(result[g1]), list(result[g2])):
                if a not in result[g1] or b not in result[g2]:
                    continue
                one = [h for h in result[g1] if h != a]
                two = [h for h in result[g2] if h != b]
                delta = sum(float(cost[b, x] - cost[a, x]) for x in one) + sum(
                    float(cost[a, y] - cost[b, y]) for y in two
                )
                if delta < -1e-12:
                    result[g1] = sorted(one + [b])
                    result[g2] = sorted(two + [a])
                    improved = True
        if not improved:
            break
    return sorted(result)


def similar_grouping(
    attn: AttentionWeights, groups: int, ctx: MethodContext, merge: LayerFn
) -> AttentionWeights:
    """The layer with its KV heads (and their query heads) permuted so that each run of KV/G heads
    is a group that `merge` can merge cheaply."""
    kv = attn.kv_heads
    if groups in (1, kv):
        return attn  # one group of all heads, or no merging: nothing to choose
    setup = calibrated_setup(attn, ctx, "similar")
    layer_total = layer_error(attn, attn, setup.metric, setup.pairs, setup.mixed)
    cost = torch.zeros(kv, kv, dtype=torch.float64)
    for a, b in itertools.combinations(range(kv), 2):
        pair = select_heads(attn, [a, b])
        error = layer_error(pair, merge(pair, 1, ctx), setup.metric, setup.pairs, setup.mixed)
        cost[a, b] = cost[b, a] = error.key / layer_total.key_total + error.value / layer_total.value_total
    order = [h for group in balanced_groups(cost, groups) for h in group]
    return select_heads(attn, order)
