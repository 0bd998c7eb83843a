"""The joint EBAE+EBAR pass equals two separate passes on the stock transformers models."""

from __future__ import annotations

import pytest
import torch
from conftest import load_tokenizer, tiny_model

from llara.masks import joint_inputs
from llara.modeling import last_hidden, resize_for_tokenizer
from llara.pooling import pool, slot_states
from llara.prompts import Prompter, prepare_tokenizer

TEXTS = [
    "the river city was founded by the king",
    "music",
    "the school of science studied the island population and wrote the history of its church",
]


def test_mask_structure():
    rows = [[5, 6, 7, 8, 9, 10, 11], [7, 8, 9, 10, 11]]  # text + ebae(2) + ebar(2)
    b = joint_inputs(rows, ebae_len=2, ebar_len=2, pad_id=0)
    m = b["attention_mask"][:, 0] == 0  # (B, T, T) True = may attend
    assert b["input_ids"][1].tolist() == [0, 0, 7, 8, 9, 10, 11]
    # EBAR rows (5, 6) do not see EBAE columns (3, 4), see text and themselves causally
    assert not m[0, 5, 3] and not m[0, 6, 4] and m[0, 6, 2] and m[0, 6, 5] and not m[0, 5, 6]
    assert m[0, 4, 3] and m[0, 4, 0]  # EBAE rows see text and earlier EBAE
    assert not m[1, 4, 1] and not m[1, 4, 0]  # padding columns blocked
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4], [0, 0, 0, 1, 2, 1, 2]]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("style", ["released", "paper"])
def test_joint_pass_equals_two_passes(tokenizer_dirs, arch, attn, style):
    tok = load_tokenizer(tokenizer_dirs, arch)
    prepare_tokenizer(tok, style)
    model = tiny_model(arch, vocab_size=len(tok), attn=attn)
    resize_for_tokenizer(model, tok)
    backbone = model.get_decoder()
    p = Prompter(tok, style)
    ebae_len, ebar_len = p.suffix_len("ebae"), p.suffix_len("ebar")

    joint = joint_inputs([p.build_joint(t, 256) for t in TEXTS], ebae_len, ebar_len, tok.pad_token_id)
    with torch.no_grad():
        h = last_hidden(backbone, joint)
        h_ebae = last_hidden(backbone, p.batch(TEXTS, "ebae", 256))
        h_ebar = last_hidden(backbone, p.batch(TEXTS, "ebar", 256))
    n = p.n_slots
    torch.testing.assert_close(
        slot_states(h, n, end_offset=ebar_len), slot_states(h_ebae, n), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(slot_states(h, n), slot_states(h_ebar, n), atol=1e-5, rtol=0)
    # and each row alone (no padding at all) gives the same embedding as in the padded batch
    for i, t in enumerate(TEXTS):
        with torch.no_grad():
            alone = last_hidden(backbone, p.batch([t], "ebar", 256))
        torch.testing.assert_close(pool(alone, n)[0], pool(h_ebar, n)[i], atol=1e-5, rtol=0)


def test_without_blinding_the_halves_differ(tokenizer_dirs):
    """The check above can fail: a plain causal mask lets EBAR see EBAE and changes its states."""
    tok = load_tokenizer(tokenizer_dirs, "llama")
    prepare_tokenizer(tok, "released")
    model = tiny_model("llama", vocab_size=len(tok))
    backbone = model.get_decoder()
    p = Prompter(tok, "released")
    ids = torch.tensor([p.build_joint(TEXTS[0], 256)])
    with torch.no_grad():
        plain = backbone(input_ids=ids).last_hidden_state
        sep = last_hidden(backbone, p.batch(TEXTS[:1], "ebar", 256))
    assert (slot_states(plain, 8) - slot_states(sep, 8)).abs().max() > 1e-3
