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


def joint_inputs(
    rows: list[list[int]], ebae_len: int, ebar_len: int, pad_id: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Build ``input_ids`` (B, T), a 4-D float ``attention_mask`` (B, 1, T, T) and ``position_ids`` (B, T).

    ``rows`` hold ``prefix + T + ebae_suffix + ebar_suffix`` ids (``Prompter.build_joint``); the two
    suffix lengths are the same for every row, so after left padding the EBAE suffix occupies
    columns ``[T - ebar_len - ebae_len, T - ebar_len)`` and the EBAR suffix the last ``ebar_len``.
    """
    padded = left_pad(rows, pad_id)
    ids, keep = padded["input_ids"], padded["attention_mask"].bool()  # (B, T)
    width = ids.shape[1]
    ebar_start = width - ebar_len
    ebae_start = ebar_start - ebae_len
    if min(len(r) for r in rows) < ebae_len + ebar_len:
        raise ValueError("a joint row is shorter than its two suffixes; build rows with Prompter.build_joint")

    positions = position_ids_from_mask(padded["attention_mask"])  # (B, T)
    offsets = torch.arange(ebar_len)
    positions[:, ebar_start:] = positions[:, ebae_start : ebae_start + 1] + offsets  # reuse EBAE positions

    idx = torch.arange(width)
    allowed = idx[None, :] <= idx[:, None]  # (T, T) causal: row i sees columns j <= i
    allowed = allowed[None] & keep[:, None, :]  # (B, T, T) padding columns blocked
    blind = torch.zeros(width, width, dtype=torch.bool)
    blind[ebar_start:, ebae_start:ebar_start] = True  # EBAR suffix rows never see the EBAE suffix
    allowed = allowed & ~blind[None]
    allowed = allowed | torch.eye(width, dtype=torch.bool)[None]  # pad rows see themselves: no empty row
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {"input_ids": ids, "attention_mask": mask[:, None], "position_ids": positions}
