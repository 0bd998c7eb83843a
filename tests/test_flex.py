"""Tests of llara.flex: the flex-attention BlockMask of the joint pass follows the rule of
llara.masks.joint_allowed, and a tiny Llama run with attn_implementation="flex_attention" and that
BlockMask gives the slot states and bag-of-words losses of the dense-mask sdpa run.

CPU limits (torch 2.13 CPU build): flex attention has no backward on the CPU, so the model test runs
forward only; transformers compiles flex_attention on first use (tens of seconds on 2 cores)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from torch.testing import assert_close

from llara.flex import joint_block_mask, joint_mask_for, joint_mask_mod
from llara.losses import bow_loss
from llara.masks import joint_allowed, joint_attention_mask, joint_layout

flex_attention = pytest.importorskip("torch.nn.attention.flex_attention")

EBAE, EBAR, S = 6, 5, 3  # suffix lengths and slots per suffix (the last S columns of each suffix)


def _rows(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("lengths", [[20, 20], [13, 40, 25, 12], [12, 140, 300]])
def test_mask_mod_equals_joint_allowed(lengths):
    batch = joint_layout(_rows(lengths, 50), EBAE, EBAR, pad_id=0)
    pad = batch["attention_mask"]  # (B, T)
    B, T = pad.shape
    dense = flex_attention.create_mask(
        joint_mask_mod(pad, EBAE, EBAR), B, 1, T, T, device="cpu"
    )  # (B, 1, T, T)
    expected = joint_allowed(pad, EBAE, EBAR)  # (B, T, T)
    assert torch.equal(dense[:, 0], expected)
    # the rule has each of its parts: causal, padding, EBAR blind to EBAE, pad rows see themselves
    assert not expected[:, 0, 1].any()  # causal
    padded = ~pad[:, 0].bool()  # rows with left padding
    assert padded.any() == (min(lengths) < max(lengths))
    assert not expected[padded, -1, 0].any()  # padding column blocked
    assert expected[padded, 0, 0].all()  # a pad row sees itself
    assert expected[:, -1, T - EBAR - EBAE - 1].all()  # EBAR sees the text
    assert not expected[:, -1, T - EBAR - EBAE : T - EBAR].any()  # ... not the EBAE suffix
    assert expected[:, T - EBAR - 1, T - EBAR - EBAE : T - EBAR].all()  # EBAE sees itself


def test_block_mask_skips_blocks():
    # rows of 300 and 250 ids (suffixes included), block 128: 3 x 3 blocks per row, of which the 3
    # above the diagonal are empty and skipped; the 50 pad columns of row 2 only make blocks partial.
    batch = joint_layout(_rows([300, 250], 50), EBAE, EBAR, pad_id=0)
    block = joint_block_mask(batch["attention_mask"], EBAE, EBAR, block_size=128)
    assert block.shape == (2, 1, 300, 300)
    computed = block.to_dense()  # (B, 1, 3, 3): 1 where a block is computed
    assert computed.shape == (2, 1, 3, 3)
    assert torch.equal(computed[:, 0].bool(), torch.ones(3, 3, dtype=torch.bool).tril().expand(2, 3, 3))


def test_joint_mask_for_dispatches_on_attention_implementation():
    pad = joint_layout(_rows([15, 12], 50), EBAE, EBAR, pad_id=0)["attention_mask"]
    dense = joint_mask_for("sdpa", pad, EBAE, EBAR, torch.bfloat16)
    assert torch.equal(dense, joint_attention_mask(pad, EBAE, EBAR, torch.bfloat16))
    assert dense.dtype == torch.bfloat16
    assert isinstance(joint_mask_for("flex_attention", pad, EBAE, EBAR), flex_attention.BlockMask)
    with pytest.raises(ValueError, match="cannot take the joint mask"):
        joint_mask_for("flash_attention_2", pad, EBAE, EBAR)
    with pytest.raises(ValueError, match="do not fit a row"):
        joint_mask_mod(pad, 30, 30)


@pytest.mark.slow  # transformers compiles flex_attention: about 40 s cold, 9 s with inductor's cache
def test_flex_attention_model_equals_dense_sdpa():
    vocab = 120
    batch = joint_layout(_rows([40, 17, 29], vocab, seed=1), EBAE, EBAR, pad_id=0)
    ids, pad, positions = batch["input_ids"], batch["attention_mask"], batch["position_ids"]  # (B, T)
    T = ids.shape[1]

    dense_model = tiny_model("llama", vocab, attn="sdpa")
    flex_model = tiny_model("llama", vocab, attn="flex_attention")
    flex_model.load_state_dict(dense_model.state_dict())
    assert flex_model.config._attn_implementation == "flex_attention"

    def run(model, mask):
        with torch.no_grad():  # the CPU build of flex attention has no backward
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
        return out.hidden_states[-1], out.logits  # (B, T, H), (B, T, V)

    h_dense, logits_dense = run(dense_model, joint_mask_for("sdpa", pad, EBAE, EBAR))
    h_flex, logits_flex = run(flex_model, joint_mask_for("flex_attention", pad, EBAE, EBAR))

    real = pad.bool()  # (B, T): pad rows differ in how an isolated row is handled, and are never used
    assert_close(h_flex[real], h_dense[real], rtol=1e-5, atol=1e-5)
    slots = {"ebae": slice(T - EBAR - S, T - EBAR), "ebar": slice(T - S, T)}
    targets = torch.tensor([[4, 9, 17, -1], [5, -1, -1, -1], [33, 60, 7, 100]])  # (B, K)
    for cols in slots.values():
        assert_close(h_flex[:, cols], h_dense[:, cols], rtol=1e-5, atol=1e-5)
        loss_flex, _ = bow_loss(logits_flex[:, cols], targets)
        loss_dense, _ = bow_loss(logits_dense[:, cols], targets)
        assert_close(loss_flex, loss_dense, rtol=1e-5, atol=1e-5)

    # the plain causal mask gives other EBAR states, so the comparison above can fail (run on the sdpa
    # model: transformers' own flex mask from a 2-D padding mask does not compile on this CPU build)
    with torch.no_grad():
        causal = dense_model(
            input_ids=ids, attention_mask=pad, position_ids=positions, output_hidden_states=True
        )
    assert not torch.allclose(
        causal.hidden_states[-1][:, slots["ebar"]], h_dense[:, slots["ebar"]], atol=1e-3
    )
