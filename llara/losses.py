"""Losses of LLaRA as pure tensor functions.

Adaptation (EBAE/EBAR, docs/method.md §4): a bag-of-words loss on the LM-head logits at the
embedding slots, plus the ordinary next-token LM loss on the input text, combined by
`combine_adaptation_losses`. The LM term is `chunked_lm_loss` / `linear_cross_entropy`, which take
hidden states and the LM-head weight and never build the (B, T, V) logits (the same values and
gradients as a cross-entropy of the full logits). Fine-tuning (docs/method.md §1, §6):
InfoNCE over in-batch and hard negatives (`info_nce`), optionally with queries and passages shared
across devices as the released code does it (`info_nce_cross_device`).

Every function takes and returns tensors only, so each can be tested alone; the model and trainer
modules hand their outputs to them. Shapes: B batch, S embedding slots, V vocabulary, K targets per
row, T sequence length, H hidden size, N passages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bow_loss",
    "chunked_lm_loss",
    "combine_adaptation_losses",
    "gather_keep_local",
    "info_nce",
    "info_nce_cross_device",
    "linear_cross_entropy",
]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 before a softmax; other dtypes (float32, float64) unchanged."""
    return x.float() if x.dtype in _HALF_DTYPES else x


def bow_loss(slot_logits: Tensor, targets: Tensor, scale: float = 0.1) -> tuple[Tensor, Tensor]:
    """Bag-of-words loss of one half (EBAE or EBAR), as the released code computes it (docs/method.md §4).

    1. max over the S slots -> (B, V) (released style S=8; paper style S=1, where the max is a no-op);
    2. log-softmax over the vocabulary (in float32 when the logits are float16/bfloat16);
    3. per-row loss = -mean of logp over that row's targets;
    4. mean over the rows that have at least one target (rows with none are left out of the mean and
       get zero gradient);
    5. times `scale`: the released code divides by 10, hence the default `scale=0.1`.

    Args:
        slot_logits: (B, S, V) LM-head logits at the embedding slot positions.
        targets: (B, K) integer token ids, padded with -1. Ids must be unique within a row (the caller
            dedupes them and removes special ids / stop words, docs/method.md §4 step 3); duplicates are
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


def _check_ids(targets: Tensor, V: int, ignore_index: int, what: str) -> None:
    """Raise unless every entry of `targets` is a token id in [0, V) or `ignore_index`."""
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"{what} must hold integer token ids, got dtype {targets.dtype}")
    real = targets[targets != ignore_index]
    if real.numel() > 0 and (int(real.min()) < 0 or int(real.max()) >= V):
        raise ValueError(
            f"{what} must be token ids in [0, {V}) or {ignore_index} (ignored), "
            f"got values in [{int(real.min())}, {int(real.max())}]"
        )


def _slice_logits(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """LM-head logits of one slice of rows, as `lm_head(h).float()` computes them: (n, H) -> (n, V)."""
    logits = F.linear(h, weight, bias)  # (n, V) in the model's dtype
    return _upcast(logits)  # (n, V), float32 when the model is float16/bfloat16


def _acc_dtype(x: Tensor) -> torch.dtype:
    """Accumulation dtype of sums over slices: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum over rows of cross_entropy(h @ W.T + b, y), never holding more than one slice of logits.

    Per slice of `chunk_size` rows: logits (n, V) -> -log_softmax at the target. The gradient of a
    slice's loss w.r.t. its logits is g = softmax - onehot; it gives the slice's rows of grad_h
    (= g @ W) and its share of grad_W (+= g.T @ h) and grad_b (+= g.sum(0)), accumulated over the
    slices in float32 (float64 for float64 inputs). The incoming gradient (a scalar) multiplies the
    small (n, H) side, not the (n, V) slice.

    recompute=False (default): when grad is enabled, forward also computes the gradients (as fused
    linear cross-entropy kernels do, e.g. Liger Kernel's) and keeps grad_h (N, H) and grad_W (V, H)
    until backward, which only scales them: one matmul and one softmax pass per slice fewer than
    recomputing. The peak memory is the same: recompute=True allocates those two buffers at the start
    of backward, when every activation is still alive too.
    recompute=True: forward keeps only its inputs and backward recomputes each slice's logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, recompute, want_grad):
        # hidden (N, H), weight (V, H), bias (V,) or None, targets (N,) int64 in [0, V)
        ctx.chunk_size, ctx.recompute = chunk_size, recompute
        ctx.weight_dtype, ctx.bias_dtype = weight.dtype, None if bias is None else bias.dtype
        if want_grad and not recompute:
            need = (hidden.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
            total, grads = _ChunkedLinearCrossEntropy._run(
                hidden, weight, bias, targets, chunk_size, need, None
            )
            ctx.save_for_backward(*grads)
        else:
            total, _ = _ChunkedLinearCrossEntropy._run(hidden, weight, bias, targets, chunk_size, None, None)
            ctx.save_for_backward(hidden, weight, bias, targets)
        return total

    @staticmethod
    def _run(hidden, weight, bias, targets, chunk_size, need, scale, loss_too=True):
        """Loss sum over the slices (when `loss_too`) and, for `need` = (grad_h?, grad_W?, grad_b?) not
        None, those gradients of the sum times `scale` (a 0-d tensor; None = times 1); the others None."""
        acc = _acc_dtype(hidden)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        need_h, need_w, need_b = need if need is not None else (False, False, False)
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, H)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None  # (V, H)
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None  # (V,)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]  # (n, H)
            y = targets[start : start + chunk_size, None]  # (n, 1)
            logits = _slice_logits(h, weight, bias)  # (n, V), float32 for half models
            if need is None:  # the loss only: one fused log-softmax + pick
                total += F.cross_entropy(logits, y[:, 0], reduction="sum").to(acc)
                continue
            # fused kernels (log_softmax / softmax) are 2-6x faster on a CPU than logsumexp + sub + exp
            if loss_too:
                logp = logits.log_softmax(dim=-1)  # (n, V)
                total -= logp.gather(1, y).sum(dtype=acc)
                g = logp.exp_()  # (n, V) softmax, in place
            else:
                g = logits.softmax(dim=-1)  # (n, V)
            del logits
            minus_one = torch.full(y.shape, -1.0, dtype=g.dtype, device=g.device)  # (n, 1)
            g.scatter_add_(1, y, minus_one)  # (n, V): d(loss of the slice) / d(logits) = softmax - onehot
            if grad_b is not None:
                col = g.sum(dim=0, dtype=acc)  # (V,)
                grad_b += col if scale is None else col * scale
            g = g.to(hidden.dtype)  # (n, V): autograd casts the gradient back through `.float()` alike
            if grad_h is not None:
                gh = g @ weight  # (n, H)
                grad_h[start : start + chunk_size] = gh if scale is None else gh * scale.to(gh.dtype)
            if grad_w is not None:
                hs = h if scale is None else h * scale.to(h.dtype)  # (n, H): the scale on the small side
                if hs.dtype == acc:
                    grad_w.addmm_(g.T, hs)  # (V, H)
                else:
                    grad_w += (g.T @ hs).to(acc)  # (V, H), each slice's product in the model's dtype
        return total, (grad_h, grad_w, grad_b)

    @staticmethod
    def backward(ctx, grad_total):
        need = tuple(ctx.needs_input_grad[:3])
        if ctx.recompute:
            hidden, weight, bias, targets = ctx.saved_tensors
            _, (grad_h, grad_w, grad_b) = _ChunkedLinearCrossEntropy._run(
                hidden, weight, bias, targets, ctx.chunk_size, need, grad_total, loss_too=False
            )
        else:
            grad_h, grad_w, grad_b = (
                None if g is None else g * grad_total.to(g.dtype) for g in ctx.saved_tensors
            )
        return (
            grad_h if need[0] else None,
            grad_w.to(ctx.weight_dtype) if need[1] and grad_w is not None else None,
            grad_b.to(ctx.bias_dtype) if need[2] and grad_b is not None else None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    chunk_size: int = 256,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    recompute: bool = False,
) -> Tensor:
    """Cross-entropy of `F.linear(hidden, weight, bias)` against `targets`, in slices of rows.

    Equal (values and gradients w.r.t. hidden, weight, bias) to
    `F.cross_entropy(_upcast(F.linear(hidden, weight, bias)), targets, ignore_index=ignore_index,
    reduction=reduction)`, but the (N, V) logits are never held whole: at most one (chunk_size, V)
    slice exists at a time, in float32 when the model is float16/bfloat16, and no slice is saved for
    backward. Rows whose target is `ignore_index` are dropped first.

    Args:
        hidden: (N, H) final hidden states; each row predicts its own target (already shifted).
        weight: (V, H) LM-head weight.
        targets: (N,) token ids, or `ignore_index`.
        chunk_size: rows per slice (memory: about chunk_size * V * 4 bytes per slice).
        bias: optional (V,) LM-head bias.
        reduction: "mean" (over the kept rows; an exact 0 with zero gradients when none is kept) or "sum".
        recompute: False (default): forward computes the gradients at once when grad is enabled and
            keeps them for backward (grad_W (V, H) in float32, grad_h (N, H)); True: backward recomputes
            each slice's logits. Same values, gradients and peak memory; False measured 20-25% faster
            per adaptation step on a CPU (tiny LLaMA, 256 tokens).

    Returns:
        scalar loss, float32 for float16/bfloat16/float32 inputs, float64 for float64 inputs.
    """
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be (N, H), got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight must be (V, H) with H = {hidden.shape[1]}, got shape {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be (N,) = ({hidden.shape[0]},), got {tuple(targets.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be (V,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    _check_ids(targets, weight.shape[0], ignore_index, "targets")

    keep = targets != ignore_index  # (N,)
    n_targets = keep.sum()  # () int64
    if int(n_targets) < targets.shape[0]:
        hidden, targets = hidden[keep], targets[keep]  # (n_targets, H), (n_targets,)
    want_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (hidden, weight, bias)
    )
    total = _ChunkedLinearCrossEntropy.apply(
        hidden, weight, bias, targets.long(), chunk_size, recompute, want_grad
    )  # ()
    if reduction == "sum":
        return total
    return total / n_targets.clamp(min=1)


def chunked_lm_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    chunk_size: int = 256,
    ignore_index: int = -100,
    bias: Tensor | None = None,
    recompute: bool = False,
) -> Tensor:
    """The LM term computed from hidden states in slices: the next-token cross-entropy of the logits
    `F.linear(hidden, weight, bias)` (float32 for float16/bfloat16 models), mean over the labelled
    targets.

    No (B, T, V) logits tensor ever exists (see `linear_cross_entropy`): only the positions that have a
    label are projected, one slice of `chunk_size` of them at a time, and no slice is kept for backward.

    Two input layouts:
        * hidden (B, T, H) with labels (B, T) aligned with the inputs (as transformers' causal-LM
          loss takes them): the shift happens here (the state at t predicts labels[:, t + 1];
          labels[:, 0] is never a target);
        * hidden (N, H) with labels (N,), already shifted: row i predicts labels[i]. This lets a caller
          pass only the hidden states of the positions that have a target (for example the text
          positions of a joint row, without the prompt's prefix and suffixes).

    Mean over the non-ignored targets; an exact 0 (with zero gradients, never NaN) when there is none.
    `chunk_size`, `bias` and `recompute` as in `linear_cross_entropy`.
    """
    if hidden.dim() == 3:
        if labels.shape != hidden.shape[:2]:
            raise ValueError(
                f"labels must be (B, T) = {tuple(hidden.shape[:2])} to match hidden, got {tuple(labels.shape)}"
            )
        H = hidden.shape[-1]
        shift_labels = labels[:, 1:]  # (B, T-1)
        keep = shift_labels != ignore_index  # (B, T-1)
        rows = hidden[:, :-1][keep]  # (N, H): only the positions that predict a label
        targets = shift_labels[keep]  # (N,)
        rows = rows.reshape(-1, H)  # (N, H), also when N == 0
        return linear_cross_entropy(
            rows, weight, targets, chunk_size, bias, ignore_index, recompute=recompute
        )
    if hidden.dim() == 2:
        if labels.shape != hidden.shape[:1]:
            raise ValueError(
                f"labels must be (N,) = ({hidden.shape[0]},) to match hidden, got {tuple(labels.shape)}"
            )
        return linear_cross_entropy(
            hidden, weight, labels, chunk_size, bias, ignore_index, recompute=recompute
        )
    raise ValueError(f"hidden must be (B, T, H) or (N, H), got shape {tuple(hidden.shape)}")


def info_nce(q: Tensor, p: Tensor, temperature: float, group_size: int, q_offset: int = 0) -> Tensor:
    """InfoNCE over in-batch and hard negatives (fine-tuning, docs/method.md §1, §6).

    Passages come in groups of `group_size` (positive first, then its hard negatives; the released
    code uses 16 = 1 + 15). Every passage in `p` is a candidate for every query. Query i belongs to
    group q_offset + i, so its positive sits at row (q_offset + i) * group_size of `p`; `q_offset` and
    extra groups let `p` hold passages that have no query here.

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


def gather_keep_local(x: Tensor) -> Tensor:
    """All-gather `x` along dim 0 over the default process group, the official way: a plain
    (gradient-free) all_gather, then this rank's own slot replaced by `x` itself, which keeps its graph.

    Gradients therefore reach the local `x` only through the local slot: each rank backpropagates the
    loss it computes on the gathered tensors into its own inputs, and nothing is sent back to the
    other ranks. Every rank must pass the same shape. With a process group of world size 1 this is `x`.

    Args:
        x: (n, ...) local tensor.

    Returns:
        (world_size * n, ...) concatenation of every rank's x in rank order.

    Raises:
        RuntimeError: without an initialised torch.distributed process group.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(
            "cross-device negatives need an initialised torch.distributed process group (launch with "
            "torchrun, the deepspeed launcher or accelerate); without one, turn cross-device negatives off"
        )
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size)]  # world_size x (n, ...)
    torch.distributed.all_gather(parts, x.detach())
    parts[torch.distributed.get_rank()] = x  # the local slot keeps the graph
    return torch.cat(parts, dim=0)  # (world_size * n, ...)


def info_nce_cross_device(q: Tensor, p: Tensor, temperature: float, group_size: int) -> Tensor:
    """InfoNCE with queries and passages shared across devices, as the released fine-tuning code does it
    (``negatives_cross_device``, docs/method.md §6).

    Both q and p are gathered from every rank (`gather_keep_local`), and every rank computes the same
    loss: `info_nce` of all W * B queries against all W * N_local passages, query i's positive at row
    i * group_size. Each rank's gradient flows only into its own q and p.

    Gradient, exactly (checked by the 2-process test): the gradient each rank gets for its own q and p
    equals that of a single process running `info_nce` on the concatenated batch; after DDP averages
    parameter gradients over the W ranks, the update is the single-process gradient divided by W
    (each rank contributes only the part through its own slot, and DDP divides the sum by W).

    Args:
        q: (B, H) local query embeddings; B the same on every rank.
        p: (N_local, H) local passage embeddings in groups of group_size, N_local = B * group_size.

    Returns:
        scalar loss over the gathered batch (the same value on every rank).

    Raises:
        RuntimeError: without an initialised process group (use `info_nce` for a single process).
    """
    if p.dim() != 2 or q.dim() != 2 or p.shape[0] != q.shape[0] * group_size:
        raise ValueError(
            f"q must be (B, H) and p (B * group_size, H) with group_size {group_size}, "
            f"got shapes {tuple(q.shape)} and {tuple(p.shape)}"
        )
    q_all = gather_keep_local(q)  # (W * B, H)
    p_all = gather_keep_local(p)  # (W * B * group_size, H)
    return info_nce(q_all, p_all, temperature, group_size)


def combine_adaptation_losses(
    bow_ebae: Tensor | None,
    bow_ebar: Tensor | None,
    lm: Tensor | None,
    lm_weight: float,
) -> dict[str, Tensor]:
    """Total adaptation loss and its named parts (docs/method.md §4).

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
