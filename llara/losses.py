"""Losses of LLaRA as pure tensor functions.

Adaptation (EBAE/EBAR, method notes section 4): a bag-of-words loss on the LM-head logits at the
embedding slots, plus the ordinary next-token LM loss on the input text, combined by
`combine_adaptation_losses`. Fine-tuning (method notes sections 1 and 6): InfoNCE over in-batch and
hard negatives, with passages optionally shared across devices (`info_nce_cross_device`).

Every function takes and returns tensors only, so each can be tested alone; the model and trainer
modules hand their outputs to them. Shapes: B batch, S embedding slots, V vocabulary, K targets per
row, T sequence length, H hidden size, N passages.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bow_loss",
    "combine_adaptation_losses",
    "gather_with_grad",
    "info_nce",
    "info_nce_cross_device",
    "lm_loss",
]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 before a softmax; other dtypes (float32, float64) unchanged."""
    return x.float() if x.dtype in _HALF_DTYPES else x


def bow_loss(slot_logits: Tensor, targets: Tensor, scale: float = 0.1) -> tuple[Tensor, Tensor]:
    """Bag-of-words loss of one half (EBAE or EBAR), as the released code computes it (notes section 4).

    1. max over the S slots -> (B, V) (released style S=8; paper style S=1, where the max is a no-op);
    2. log-softmax over the vocabulary (in float32 when the logits are float16/bfloat16);
    3. per-row loss = -mean of logp over that row's targets;
    4. mean over the rows that have at least one target (rows with none are left out of the mean and
       get zero gradient);
    5. times `scale`: the released code divides by 10, hence the default `scale=0.1`.

    Args:
        slot_logits: (B, S, V) LM-head logits at the embedding slot positions.
        targets: (B, K) integer token ids, padded with -1. Ids must be unique within a row (the caller
            dedupes them and removes special ids / stop words, notes section 4 step 3); duplicates are
            not detected and would be counted more than once. Only -1 is treated as padding.
        scale: multiplier of the final loss.

    Returns:
        (loss, n_rows): loss is a scalar; n_rows is an int64 scalar, the number of rows with at least one
        target. When no row has a target the loss is an exact 0 that still carries the graph (backward
        works and gives zero gradients), never NaN.
    """
    if slot_logits.dim() != 3:
        raise ValueError(f"slot_logits must be (B, S, V), got shape {tuple(slot_logits.shape)}")
    if targets.dim() != 2:
        raise ValueError(f"targets must be (B, K), got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer token ids, got dtype {targets.dtype}")
    B, S, V = slot_logits.shape
    if targets.shape[0] != B:
        raise ValueError(f"targets has {targets.shape[0]} rows but slot_logits has batch size {B}")
    if S == 0:
        raise ValueError("slot_logits has no slots (S == 0)")
    targets = targets.long()
    if targets.numel() > 0 and (int(targets.min()) < -1 or int(targets.max()) >= V):
        raise ValueError(
            f"targets must be token ids in [0, {V}) or -1 for padding, "
            f"got values in [{int(targets.min())}, {int(targets.max())}]"
        )

    pooled = _upcast(slot_logits.max(dim=1).values)  # (B, V)
    logp = pooled.log_softmax(dim=-1)  # (B, V)
    valid = targets >= 0  # (B, K)
    picked = logp.gather(1, targets.clamp(min=0))  # (B, K)
    picked = torch.where(valid, picked, torch.zeros_like(picked))  # (B, K), padding -> 0
    n_valid = valid.sum(dim=1)  # (B,)
    row_loss = -picked.sum(dim=1) / n_valid.clamp(min=1)  # (B,), exactly 0 for rows without targets
    n_rows = (n_valid > 0).sum()  # () int64
    loss = row_loss.sum() / n_rows.clamp(min=1) * scale  # ()
    return loss, n_rows


def lm_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Ordinary next-token cross-entropy (the LM term of the adaptation loss, notes section 4).

    `labels` are aligned with the inputs: the logits at position t predict labels[:, t + 1], so the
    shift happens here and labels[:, 0] is never a target. Mean over the non-ignored targets of the
    whole batch (token-level mean, like transformers' causal-LM loss), computed in float32 when the
    logits are float16/bfloat16. When nothing is labelled the result is an exact 0 that carries the
    graph, never NaN.

    Args:
        logits: (B, T, V) LM logits.
        labels: (B, T) integer token ids, `ignore_index` where no loss is wanted.
        ignore_index: label value that is skipped.

    Returns:
        scalar loss.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must be (B, T) = {tuple(logits.shape[:2])} to match logits, got {tuple(labels.shape)}"
        )
    V = logits.shape[-1]
    shift_logits = _upcast(logits[:, :-1, :]).reshape(-1, V)  # (B*(T-1), V)
    shift_labels = labels[:, 1:].reshape(-1).long()  # (B*(T-1),)
    n_targets = (shift_labels != ignore_index).sum()  # () int64
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index, reduction="sum")  # ()
    return total / n_targets.clamp(min=1)


def info_nce(q: Tensor, p: Tensor, temperature: float, group_size: int, q_offset: int = 0) -> Tensor:
    """InfoNCE over in-batch and hard negatives (fine-tuning, notes sections 1 and 6).

    Passages come in groups of `group_size` (positive first, then its hard negatives; the released
    code uses 16 = 1 + 15). Every passage in `p` is a candidate for every query. Query i belongs to
    group q_offset + i, so its positive sits at row (q_offset + i) * group_size of `p`; `q_offset` and
    extra groups let `p` hold passages of other devices (see `info_nce_cross_device`).

    scores = q @ p.T / temperature (released code: temperature 0.01 on L2-normalised embeddings),
    then cross-entropy averaged over the B queries. Scores are computed in float32 when the inputs are
    float16/bfloat16.

    Args:
        q: (B, H) query embeddings.
        p: (N, H) passage embeddings, N a multiple of group_size and N >= (q_offset + B) * group_size.
        temperature: softmax temperature, > 0.
        group_size: passages per query (1 means in-batch negatives only).
        q_offset: group index of the first local query.

    Returns:
        scalar loss.
    """
    if q.dim() != 2:
        raise ValueError(f"q must be (B, H), got shape {tuple(q.shape)}")
    if p.dim() != 2:
        raise ValueError(f"p must be (N, H), got shape {tuple(p.shape)}")
    if q.shape[1] != p.shape[1]:
        raise ValueError(f"q and p must have the same hidden size, got {q.shape[1]} and {p.shape[1]}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q_offset < 0:
        raise ValueError(f"q_offset must be >= 0, got {q_offset}")
    B, N = q.shape[0], p.shape[0]
    if N % group_size != 0:
        raise ValueError(f"number of passages {N} is not a multiple of group_size {group_size}")
    if N < (q_offset + B) * group_size:
        raise ValueError(
            f"p has {N} passages but {B} queries at q_offset {q_offset} with group_size {group_size} "
            f"need at least {(q_offset + B) * group_size}"
        )

    scores = _upcast(q) @ _upcast(p).T / temperature  # (B, N)
    target = (q_offset + torch.arange(B, device=q.device)) * group_size  # (B,)
    return F.cross_entropy(scores, target)


def _distributed_world_size() -> int:
    """World size of the default process group, or 1 when torch.distributed is not in use."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """All-gather `x` along dim 0 over the default process group, keeping gradients.

    With world size > 1 returns (concatenation of every rank's x in rank order, this rank); x must
    have the same shape on every rank. The backward of `torch.distributed.nn.functional.all_gather`
    sums the gradients of all ranks, so the local x receives the gradient of every rank's loss w.r.t.
    it; with DDP averaging parameter gradients, the update is the gradient of the mean of the
    per-rank losses. Without an initialised process group (or world size 1) returns (x, 0).

    Args:
        x: (n, ...) local tensor.

    Returns:
        (gathered, rank): gathered is (world_size * n, ...).
    """
    if _distributed_world_size() <= 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch >= 2.9 flags this autograd all_gather as deprecated; its suggested replacement does not
        # exist in every torch this project allows (>= 2.4) and is not supported by gloo everywhere.
        warnings.filterwarnings("ignore", message=r".*all_gather is deprecated", category=FutureWarning)
        parts = all_gather(x)  # world_size x (n, ...)
    return torch.cat(parts, dim=0), torch.distributed.get_rank()  # (world_size * n, ...)


def info_nce_cross_device(q: Tensor, p: Tensor, temperature: float, group_size: int) -> Tensor:
    """InfoNCE with passages shared across devices (released code: negatives shared across GPUs,
    notes section 6).

    Local queries are scored against the passages of all ranks (only p is gathered). Every rank must
    hold the same number of passages N_local (a multiple of group_size), normally B * group_size;
    rank r's passages start at row r * N_local of the gathered tensor, so the local queries start at
    group q_offset = r * N_local / group_size (= r * B in the normal case). Without a process group
    this is `info_nce(q, p, temperature, group_size)`.

    Args:
        q: (B, H) local query embeddings.
        p: (N_local, H) local passage embeddings in groups of group_size.

    Returns:
        scalar loss of the local queries.
    """
    if p.dim() != 2 or p.shape[0] % group_size != 0:
        raise ValueError(
            f"p must be (N_local, H) with N_local a multiple of group_size {group_size}, "
            f"got shape {tuple(p.shape)}"
        )
    p_all, rank = gather_with_grad(p)  # (world_size * N_local, H)
    q_offset = rank * (p.shape[0] // group_size)
    return info_nce(q, p_all, temperature, group_size, q_offset=q_offset)


def combine_adaptation_losses(
    bow_ebae: Tensor | None,
    bow_ebar: Tensor | None,
    lm: Tensor | None,
    lm_weight: float,
) -> dict[str, Tensor]:
    """Total adaptation loss and its named parts (notes section 4).

    bow = mean of the bag-of-words parts present ((ebae + ebar) / 2 when both are, as the released
    code); total = bow + lm_weight * lm. The released code always adds the LM loss with weight 1; the
    paper formulas show the bag-of-words term only (lm_weight = 0, where lm may be None and is not
    added even when given). EBAE-only or EBAR-only runs pass None for the other part.

    Returns:
        {"loss": total, "bow_ebae": ..., "bow_ebar": ..., "lm": ...}, each part only when given.
    """
    if lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    if lm_weight > 0 and lm is None:
        raise ValueError(f"lm_weight is {lm_weight} but no lm loss was given")
    bow_parts = [x for x in (bow_ebae, bow_ebar) if x is not None]
    if not bow_parts and lm_weight == 0:
        raise ValueError("nothing to train: no bag-of-words loss and lm_weight is 0")

    out: dict[str, Tensor] = {}
    if bow_ebae is not None:
        out["bow_ebae"] = bow_ebae
    if bow_ebar is not None:
        out["bow_ebar"] = bow_ebar
    if lm is not None:
        out["lm"] = lm

    if len(bow_parts) == 2:
        bow: Tensor | None = (bow_parts[0] + bow_parts[1]) / 2
    elif len(bow_parts) == 1:
        bow = bow_parts[0]
    else:
        bow = None
    if lm_weight > 0:
        assert lm is not None
        out["loss"] = lm_weight * lm if bow is None else bow + lm_weight * lm
    else:
        assert bow is not None
        out["loss"] = bow
    return out
