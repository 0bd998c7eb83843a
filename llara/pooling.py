"""The one pooling function, used by adaptation, fine-tuning and encoding alike.

:func:`pool_hidden` turns final hidden states (after the final norm) into one fp32 vector per row,
L2-normalised unless told otherwise, by one of :data:`POOLINGS`:

- ``slots`` (LLaRA): the mean over the embedding slots. Rows are left padded (docs/method.md §2), so
  the slots of every row are the last ``n_slots`` positions, or, in the joint pass, the ``n_slots``
  positions that end ``end_offset`` (the EBAR suffix) before the row's end; the columns come from
  :class:`llara.masks.JointGeometry`. Released style: 8 slots; paper style: ``n_slots=1``, the last token.
- ``mean`` (sentence-transformers): the mean over the real tokens (``attention_mask`` 1).
- ``cls`` (BERT): the first real token.
- ``last`` (RepLLaMA, Ma et al. 2023; Tevatron's ``eos``/``last``): the last real token, found from
  ``attention_mask``, so left and right padding give the same state.

:func:`pool` is the slots form under the name the LLaRA model calls (``pool(hidden, n_slots)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llara.masks import JointGeometry

POOLINGS = ("slots", "mean", "cls", "last")


def slot_positions(width: int, n_slots: int, end_offset: int = 0) -> torch.Tensor:
    """Column indices of the slots: ``[width - end_offset - n_slots, width - end_offset)``. (S,)"""
    if end_offset < 0 or end_offset > width:
        raise ValueError(f"no room for {n_slots} slots ending {end_offset} before a row of {width}")
    # the slots before a suffix of ``end_offset`` columns: the EBAE slots of a joint row
    return JointGeometry(width, ebar_len=end_offset).slot_columns("ebae", n_slots)


def slot_states(hidden: torch.Tensor, n_slots: int, end_offset: int = 0) -> torch.Tensor:
    """Hidden states at the slots: (B, T, H) -> (B, S, H)."""
    return hidden[:, slot_positions(hidden.shape[1], n_slots, end_offset).to(hidden.device)]


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's first real token (0 for a row with none): (B, T) -> (B,)."""
    return attention_mask.ne(0).int().argmax(dim=1)  # argmax returns the first maximum


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last real token (0 for a row with none), whichever side the padding is:
    (B, T) -> (B,)."""
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    return (attention_mask.ne(0) * columns).amax(dim=1)  # (B,)


def token_states(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The hidden state at column ``index[b]`` of each row ``b``: (B, T, H), (B,) -> (B, H)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index.to(hidden.device)]


def pool_hidden(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None,
    pooling: str,
    *,
    n_slots: int | None = None,
    end_offset: int = 0,
    normalize: bool = True,
) -> torch.Tensor:
    """Text embeddings: (B, T, H) hidden states, (B, T) attention mask -> (B, H) fp32.

    ``slots`` needs ``n_slots`` (``end_offset`` as in :func:`slot_positions`) and no mask (given one,
    the slots must be real tokens); ``mean``, ``cls`` and ``last`` need the mask.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    if pooling == "slots":
        if n_slots is None:
            raise ValueError("slots pooling needs n_slots")
        cols = slot_positions(hidden.shape[1], n_slots, end_offset)  # (S,)
        if attention_mask is not None and not bool(attention_mask[:, cols.to(attention_mask.device)].all()):
            raise ValueError("slots pooling: some slot columns are padding; rows must be left padded")
        emb = slot_states(hidden, n_slots, end_offset).float().mean(dim=1)  # (B, S, H) -> (B, H)
    elif attention_mask is None:
        raise ValueError(f"{pooling} pooling needs the attention mask")
    elif pooling == "mean":
        mask = attention_mask.to(hidden.device).unsqueeze(-1).float()  # (B, T, 1)
        emb = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
    elif pooling == "cls":
        emb = token_states(hidden, first_token_index(attention_mask)).float()  # (B, H)
    else:  # last
        emb = token_states(hidden, last_token_index(attention_mask)).float()  # (B, H)
    return F.normalize(emb, dim=-1) if normalize else emb


def pool(hidden: torch.Tensor, n_slots: int, end_offset: int = 0, normalize: bool = True) -> torch.Tensor:
    """LLaRA's embedding: :func:`pool_hidden` with ``slots``. (B, T, H) -> (B, H)."""
    return pool_hidden(hidden, None, "slots", n_slots=n_slots, end_offset=end_offset, normalize=normalize)
