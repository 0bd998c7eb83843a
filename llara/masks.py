"""The geometry of a prompt row and the inputs of the joint EBAE+EBAR pass (docs/method.md §3).

:class:`JointGeometry` is the one place where the columns of a left-padded row are computed: where the
text ends, where each suffix starts, which columns hold a prompt's slots. The joint row, the dense and
flex-attention masks, the adaptation loss and the pooling all take their columns from it.

One joint row is ``prefix + T + EBAE suffix + EBAR suffix``, left padded. Two things make one pass
equal two separate passes, so that the *stock* transformers model can run it (no copy of its forward):

* the 4-D float attention mask is causal + padding, and the EBAR suffix rows are blocked from the
  EBAE suffix columns, so each half sees only ``prefix + T + itself``;
* the EBAR suffix reuses the position ids that the EBAE suffix has (it starts where the EBAE suffix
  starts), so each half sits at the positions it would have alone.

A float mask is used on purpose: with ``attn_implementation="eager"`` a boolean 4-D mask is added to
the scores as 0/1 and is silently wrong (stack-notes.md, "4-D attention masks").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llara.grid import KINDS, check_choice
from llara.prompts import left_pad


@dataclass(frozen=True)
class JointGeometry:
    """Columns of a left-padded row of ``width`` columns that ends with an EBAE suffix of ``ebae_len``
    tokens followed by an EBAR suffix of ``ebar_len`` tokens. A one-prompt row has the other length 0
    (an EBAE row: ``ebar_len=0``; an EBAR row: ``ebae_len=0``).

    ``[0, text_end)`` pads, prefix and text; ``[ebae_start, ebar_start)`` the EBAE suffix;
    ``[ebar_start, width)`` the EBAR suffix. A prompt's slots are the last ``n_slots`` columns of its
    suffix (:meth:`slot_columns`).
    """

    width: int
    ebae_len: int = 0
    ebar_len: int = 0

    def __post_init__(self) -> None:
        if self.ebae_len < 0 or self.ebar_len < 0 or self.ebae_len + self.ebar_len > self.width:
            raise ValueError(
                f"suffix lengths {self.ebae_len} + {self.ebar_len} do not fit a row of {self.width} columns"
            )

    @property
    def ebar_start(self) -> int:
        return self.width - self.ebar_len

    @property
    def ebae_start(self) -> int:
        return self.ebar_start - self.ebae_len

    @property
    def text_end(self) -> int:
        """The first column after the text (where the first suffix starts)."""
        return self.ebae_start

    def suffix_end(self, kind: str) -> int:
        """The column after the last one of ``kind``'s suffix."""
        return {"ebae": self.ebar_start, "ebar": self.width}[check_choice(kind, KINDS, "prompt kind")]

    def slot_columns(self, kind: str, n_slots: int) -> torch.Tensor:
        """Columns of ``kind``'s slots: the last ``n_slots`` before the end of its suffix. (S,)"""
        end = self.suffix_end(kind)
        if n_slots < 1 or end - n_slots < 0:
            raise ValueError(
                f"no room for {n_slots} slots ending {self.width - end} before a row of {self.width}"
            )
        return torch.arange(end - n_slots, end)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from the first real token of each left-padded row (pads get 0). (B, T)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def joint_layout(
    rows: list[list[int]], ebae_len: int, ebar_len: int, pad_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """``input_ids`` (B, T), 2-D padding ``attention_mask`` (B, T) and joint ``position_ids`` (B, T).

    ``rows`` hold ``prefix + T + ebae_suffix + ebar_suffix`` ids (``Prompter.build_joint``); the two
    suffix lengths are the same for every row, so after left padding the suffixes sit where
    :class:`JointGeometry` says. Positions count from each row's first real token (the official code
    counts from column 0; RoPE attention depends only on differences of positions, so both give the
    same states).
    """
    if min(len(r) for r in rows) < ebae_len + ebar_len:
        raise ValueError("a joint row is shorter than its two suffixes; build rows with Prompter.build_joint")
    padded = left_pad(rows, pad_id, pad_to_multiple_of)
    geo = JointGeometry(padded["input_ids"].shape[1], ebae_len, ebar_len)
    positions = position_ids_from_mask(padded["attention_mask"])  # (B, T)
    offsets = torch.arange(ebar_len)
    first_ebae = positions[:, geo.ebae_start : geo.ebae_start + 1]  # (B, 1)
    positions[:, geo.ebar_start :] = first_ebae + offsets  # the EBAR suffix reuses the EBAE positions
    return {**padded, "position_ids": positions}


def joint_allowed(attention_mask: torch.Tensor, ebae_len: int, ebar_len: int) -> torch.Tensor:
    """Boolean (B, T, T): row i may attend column j (causal, padding, EBAR suffix blind to EBAE suffix)."""
    keep = attention_mask.bool()  # (B, T)
    geo = JointGeometry(keep.shape[1], ebae_len, ebar_len)
    width = geo.width
    idx = torch.arange(width, device=keep.device)
    allowed = idx[None, :] <= idx[:, None]  # (T, T) causal: row i sees columns j <= i
    allowed = allowed[None] & keep[:, None, :]  # (B, T, T) padding columns blocked
    blind = torch.zeros(width, width, dtype=torch.bool, device=keep.device)
    blind[geo.ebar_start :, geo.ebae_start : geo.ebar_start] = True  # EBAR rows never see the EBAE suffix
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
