"""The row geometry, and the joint EBAE+EBAR pass equals two separate passes on the stock transformers
models."""

from __future__ import annotations

import pytest
import torch
from conftest import load_tokenizer, tiny_model

from llara.flex import joint_mask_for
from llara.masks import JointGeometry, joint_layout
from llara.model import last_hidden, resize_for_tokenizer
from llara.pooling import pool, slot_positions, slot_states
from llara.prompts import Prompter, left_pad, prepare_tokenizer

TEXTS = [
    "the river city was founded by the king",
    "music",
    "the school of science studied the island population and wrote the history of its church",
]


def joint_inputs(rows, ebae_len, ebar_len, pad_id, attn="sdpa"):
    """A joint batch as the model runs it: joint_layout, then the 4-D mask of joint_mask_for."""
    batch = joint_layout(rows, ebae_len, ebar_len, pad_id)
    batch["attention_mask"] = joint_mask_for(attn, batch["attention_mask"], ebae_len, ebar_len)
    return batch


def prompt_batch(p, texts, kind, max_length=256):
    """Left-padded ids and padding mask of one prompt (last_hidden counts the positions)."""
    return left_pad([p.build(t, kind, max_length) for t in texts], p.tokenizer.pad_token_id)


@pytest.mark.parametrize(
    ("width", "ebae", "ebar"), [(7, 2, 2), (40, 19, 18), (20, 6, 0), (20, 0, 5), (3, 0, 0)]
)
def test_geometry_is_the_formulas_it_replaced(width, ebae, ebar):
    """The columns every user took from its own copy of the formulas: masks (ebar_start = width -
    ebar_len, ebae_start = ebar_start - ebae_len), the model (slot columns, text end) and pooling."""
    geo = JointGeometry(width, ebae, ebar)
    assert (geo.ebar_start, geo.ebae_start) == (width - ebar, width - ebar - ebae)
    assert geo.text_end == width - ebae - ebar  # model.adaptation_loss: width - sum of the suffixes
    for n in (1, 2):
        # model.slot_columns: the last n before the end, or, for EBAE in a joint row, before the EBAR suffix
        assert geo.slot_columns("ebar", n).tolist() == list(range(width - n, width))
        assert geo.slot_columns("ebae", n).tolist() == list(range(width - ebar - n, width - ebar))
        assert slot_positions(width, n, ebar).tolist() == list(range(width - ebar - n, width - ebar))


def test_geometry_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="suffix lengths 5 \\+ 4 do not fit a row of 8 columns"):
        JointGeometry(8, 5, 4)
    with pytest.raises(ValueError, match="no room for 3 slots ending 0 before a row of 2"):
        JointGeometry(2).slot_columns("ebar", 3)
    with pytest.raises(ValueError, match="no room for 1 slots ending 9 before a row of 8"):
        slot_positions(8, 1, 9)
    with pytest.raises(ValueError, match="unknown prompt kind 'query'"):
        JointGeometry(8).slot_columns("query", 1)


def test_model_row_geometry(slotted_model_dir):
    """LlaraModel.row_geometry: a joint row's EBAE slots end before the EBAR suffix; a one-prompt row's
    slots are its last columns, its text ends where its suffix starts."""
    from llara.model import LlaraModel

    model = LlaraModel.from_pretrained(slotted_model_dir)
    ebae, ebar, n = model.suffix_len("ebae"), model.suffix_len("ebar"), model.n_slots
    joint = model.row_geometry(100, ("ebae", "ebar"))
    assert joint.slot_columns("ebae", n).tolist() == list(range(100 - ebar - n, 100 - ebar))
    assert joint.slot_columns("ebar", n).tolist() == list(range(100 - n, 100))
    assert joint.text_end == 100 - ebae - ebar
    for kind in ("ebae", "ebar"):
        one = model.row_geometry(100, (kind,))
        assert one.slot_columns(kind, n).tolist() == list(range(100 - n, 100))
        assert one.text_end == 100 - model.suffix_len(kind)


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

    rows = [p.build_joint(t, 256) for t in TEXTS]
    joint = joint_inputs(rows, ebae_len, ebar_len, tok.pad_token_id, attn)
    with torch.no_grad():
        h = last_hidden(backbone, joint)
        h_ebae = last_hidden(backbone, prompt_batch(p, TEXTS, "ebae"))
        h_ebar = last_hidden(backbone, prompt_batch(p, TEXTS, "ebar"))
    n = p.n_slots
    torch.testing.assert_close(
        slot_states(h, n, end_offset=ebar_len), slot_states(h_ebae, n), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(slot_states(h, n), slot_states(h_ebar, n), atol=1e-5, rtol=0)
    # and each row alone (no padding at all) gives the same embedding as in the padded batch
    for i, t in enumerate(TEXTS):
        with torch.no_grad():
            alone = last_hidden(backbone, prompt_batch(p, [t], "ebar"))
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
        sep = last_hidden(backbone, prompt_batch(p, TEXTS[:1], "ebar"))
    assert (slot_states(plain, 8) - slot_states(sep, 8)).abs().max() > 1e-3
