"""The one pooling function, used by adaptation, fine-tuning and encoding alike.

Rows are left padded (docs/method.md §2), so the embedding slots of every row are the last
``n_slots`` positions, or, in the joint pass, the ``n_slots`` positions that end ``end_offset``
(the EBAR suffix) before the row's end; the columns come from :class:`llara.masks.JointGeometry`.
Released style: mean of the final hidden states (after the final norm) at the 8 slots,
L2-normalised. Paper style: ``n_slots=1``, the last token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llara.masks import JointGeometry


def slot_positions(width: int, n_slots: int, end_offset: int = 0) -> torch.Tensor:
    """Column indices of the slots: ``[width - end_offset - n_slots, width - end_offset)``. (S,)"""
    if end_offset < 0 or end_offset > width:
        raise ValueError(f"no room for {n_slots} slots ending {end_offset} before a row of {width}")
    # the slots before a suffix of ``end_offset`` columns: the EBAE slots of a joint row
    return JointGeometry(width, ebar_len=end_offset).slot_columns("ebae", n_slots)


def slot_states(hidden: torch.Tensor, n_slots: int, end_offset: int = 0) -> torch.Tensor:
    """Hidden states at the slots: (B, T, H) -> (B, S, H)."""
    return hidden[:, slot_positions(hidden.shape[1], n_slots, end_offset).to(hidden.device)]


def pool(hidden: torch.Tensor, n_slots: int, end_offset: int = 0, normalize: bool = True) -> torch.Tensor:
    """Text embedding: mean over the slots, L2-normalised. (B, T, H) -> (B, H)."""
    emb = slot_states(hidden, n_slots, end_offset).float().mean(dim=1)  # (B, H)
    return F.normalize(emb, dim=-1) if normalize else emb
