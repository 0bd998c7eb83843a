"""The joint EBAE+EBAR attention mask as a flex-attention ``BlockMask`` (docs/method.md §3).

The rule is the one of :func:`llara.masks.joint_allowed` (columns from
:class:`llara.masks.JointGeometry`), written as a ``mask_mod`` over one
(query row, key column) pair: causal, padding columns blocked (left padding), the EBAR suffix rows
blind to the EBAE suffix columns, and every row may attend to itself (so a pad row is never empty).

Why: the dense (B, 1, T, T) float mask keeps sdpa off its fastest kernels and costs O(T^2) memory per
row; a ``BlockMask`` stores which (128 x 128) blocks are empty, full or partial, and flex attention
skips the empty ones (on the GPU, the blocks above the diagonal and the EBAR x EBAE block).

With transformers 5.x, ``attn_implementation="flex_attention"`` passes a 4-D ``BlockMask`` given as
``attention_mask`` through unchanged to every layer (``masking_utils._preprocess_mask_arguments``).

Limits seen on the CPU build of torch 2.13 (torch.nn.attention.flex_attention._validate_device):
flex attention runs forward only on the CPU -- any input that requires grad raises
``NotImplementedError: FlexAttention does not support backward on CPU`` -- so training with it
needs a GPU; and transformers compiles ``flex_attention`` with ``torch.compile`` on first use
(inductor C++ code, about 20-60 s on 2 loaded cores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from llara.masks import JointGeometry, joint_attention_mask

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

__all__ = ["joint_block_mask", "joint_mask_for", "joint_mask_mod"]


def joint_mask_mod(attention_mask: torch.Tensor, ebae_len: int, ebar_len: int):
    """``mask_mod(b, h, q, kv) -> bool``: True where query row q of batch row b may attend column kv.

    Args:
        attention_mask: (B, T) 2-D padding mask of the joint batch (1 = token, 0 = left pad).
        ebae_len, ebar_len: lengths of the two suffixes, the last ``ebae_len + ebar_len`` columns.
    """
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must be the 2-D (B, T) padding mask, got {tuple(attention_mask.shape)}"
        )
    geo = JointGeometry(attention_mask.shape[1], ebae_len, ebar_len)  # raises when they do not fit
    keep = attention_mask.bool()  # (B, T)
    ebar_start, ebae_start = geo.ebar_start, geo.ebae_start

    def mask_mod(b, h, q, kv):
        causal = kv <= q
        blind = (q >= ebar_start) & (kv >= ebae_start) & (kv < ebar_start)  # EBAR rows x EBAE columns
        return (causal & keep[b, kv] & ~blind) | (q == kv)

    return mask_mod


def joint_block_mask(
    attention_mask: torch.Tensor, ebae_len: int, ebar_len: int, block_size: int = 128, compile: bool = False
) -> BlockMask:
    """The joint mask as a ``BlockMask`` of shape (B, 1, T, T) on the device of ``attention_mask``.

    ``block_size`` is flex attention's sparse block (128 by default, as transformers uses);
    ``compile=True`` builds it with ``torch.compile`` (worth it for long rows on a GPU: without it the
    mask_mod is evaluated densely, B x T x T booleans, once per batch).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    B, T = attention_mask.shape
    return create_block_mask(
        joint_mask_mod(attention_mask, ebae_len, ebar_len),
        B,
        None,  # the same mask for every head
        T,
        T,
        device=attention_mask.device,
        BLOCK_SIZE=block_size,
        _compile=compile,
    )


def joint_mask_for(
    attn_implementation: str,
    attention_mask: torch.Tensor,
    ebae_len: int,
    ebar_len: int,
    dtype: torch.dtype = torch.float32,
    **block_kwargs: Any,
):
    """What to pass as ``attention_mask`` for the joint pass under ``attn_implementation``.

    ``flex_attention``: :func:`joint_block_mask`; any other (sdpa, eager): the dense 4-D float mask of
    :func:`llara.masks.joint_attention_mask` in ``dtype`` (the model's compute dtype). ``input_ids`` and
    ``position_ids`` of the joint batch are passed to the model unchanged either way.

    Args:
        attn_implementation: ``model.config._attn_implementation``.
        attention_mask: (B, T) 2-D padding mask of the joint batch.
        ebae_len, ebar_len: suffix lengths.
    """
    if attn_implementation == "flex_attention":
        return joint_block_mask(attention_mask, ebae_len, ebar_len, **block_kwargs)
    if attn_implementation.startswith("flash_attention"):
        raise ValueError(
            f"{attn_implementation} cannot take the joint mask (the EBAR suffix must not see the EBAE "
            "suffix); use sdpa, eager or flex_attention"
        )
    return joint_attention_mask(attention_mask, ebae_len, ebar_len, dtype)
