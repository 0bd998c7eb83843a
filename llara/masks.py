"""Inputs for the joint EBAE+EBAR forward pass (llara-method.md section 3).

One row is ``prefix + T + EBAE suffix + EBAR suffix``, left padded. Two things make one pass equal
two separate passes, so that the *stock* transformers model can run it (no copy of its forward):

* the 4-D float attention mask is causal + padding, and the EBAR suffix rows are blocked from the
  EBAE suffix columns, so each half sees only ``prefix + T + itself``;
* the EBAR suffix reuses the position ids that the EBAE suffix has (it starts where the EBAE suffix
  starts), so each half sits at the positions it would have alone.

A float mask is used on purpose: with ``attn_implementation="eager"`` a boolean 4-D mask is added to
the scores as 0/1 and is silently wrong (stack-notes.md, "4-D attention masks").
"""

from __future__ import annotations

import torch

from llara.prompts import left_pad


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from the first real token of each left-padded row (pads get 0). (B, T)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def joint_layout(
    rows: list[list[int]], ebae_len: int, ebar_len: int, pad_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """``input_ids`` (B, T), 2-D padding ``attention_mask`` (B, T) and joint ``position_ids`` (B, T).

    ``rows`` hold ``prefix + T + ebae_suffix + ebar_suffix`` ids (``Prompter.build_joint``); the two
    suffix lengths are the same for every row, so after left padding the EBAE suffix occupies
    columns ``[T - ebar_len - ebae_len, T - ebar_len)`` and the EBAR suffix the last ``ebar_len``.
    Positions count from each row's first real token (the official code counts from column 0; RoPE
    attention depends only on differences of positions, so both give the same states).
    """
    if min(len(r) for r in rows) < ebae_len + ebar_len:
        raise ValueError("a joint row is shorter than its two suffixes; build rows with Prompter.build_joint")
    padded = left_pad(rows, pad_id, pad_to_multiple_of)
    width = padded["input_ids"].shape[1]
    ebar_start = width - ebar_len
    ebae_start = ebar_start - ebae_len
    positions = position_ids_from_mask(padded["attention_mask"])  # (B, T)
    offsets = torch.arange(ebar_len)
    positions[:, ebar_start:] = positions[:, ebae_start : ebae_start + 1] + offsets  # reuse EBAE positions
    return {**padded, "position_ids": positions}


def joint_allowed(attention_mask: torch.Tensor, ebae_len: int, ebar_len: int) -> torch.Tensor:
    """Boolean (B, T, T): row i may attend column j (causal, padding, EBAR suffix blind to EBAE suffix)."""
    keep = attention_mask.bool()  # (B, T)
    width = keep.shape[1]
    ebar_start = width - ebar_len
    ebae_start = ebar_start - ebae_len
    idx = torch.arange(width, device=keep.device)
    allowed = idx[None, :] <= idx[:, None]  # (T, T) causal: row i sees columns j <= i
    allowed = allowed[None] & keep[:, None, :]  # (B, T, T) padding columns blocked
    blind = torch.zeros(width, width, dtype=torch.bool, device=keep.device)
    blind[ebar_start:, ebae_start:ebar_start] = True  # EBAR suffix rows never see the EBAE suffix
    allowed = allowed & ~blind[None]
    return allowed | torch.eye(width, dtype=torch.bool, device=keep.device)[None]  # pad rows see themselves


def joint_attention_mask(
    attention_mask: torch.Tensor, ebae_len: int, ebar_len: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The 4-D additive float mask (B, 1, T, T) in ``dtype``: 0 = attend, ``finfo(dtype).min`` = blocked.

    Build it in the model's compute dtype: CUDA's memory-efficient sdpa kernel rejects a float32 bias
    with bf16 activations (stack-notes.md)."""
    allowed = joint_allowed(attention_mask, ebae_len, ebar_len)  # (B, T, T)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]  # (B, 1, T, T)


def joint_inputs(
    rows: list[list[int]],
    ebae_len: int,
    ebar_len: int,
    pad_id: int,
    dtype: torch.dtype = torch.float32,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`joint_layout` with its 2-D mask replaced by :func:`joint_attention_mask` (B, 1, T, T)."""
    batch = joint_layout(rows, ebae_len, ebar_len, pad_id, pad_to_multiple_of)
    batch["attention_mask"] = joint_attention_mask(batch["attention_mask"], ebae_len, ebar_len, dtype)
    return batch
