"""Prompts: both styles, ids looked up from the tokenizer, Llama-style and Qwen2-style tokenizers."""

from __future__ import annotations

import pytest
from conftest import load_tokenizer

from llara.prompts import SLOT_TOKENS, Prompter, left_pad, prepare_tokenizer


@pytest.fixture
def tok(tokenizer_dirs, arch):
    return load_tokenizer(tokenizer_dirs, arch)


def test_released_prompt_is_concatenation_of_pieces(tok, arch):
    added = prepare_tokenizer(tok, "released")
    assert added == 16 and tok.padding_side == "left" and tok.pad_token is not None
    p = Prompter(tok, "released")
    text = "the river city was founded"
    ids = p.build(text, "ebae", max_length=128)
    bos = [tok.bos_token_id] if arch == "llama" else []
    quote = tok('"', add_special_tokens=False)["input_ids"]
    body = tok(text, add_special_tokens=False)["input_ids"]
    suffix = tok(
        '", summarize the above passage within eight words: <s1><s2><s3><s4><s5><s6><s7><s8>',
        add_special_tokens=False,
    )["input_ids"]
    assert ids == bos + quote + body + suffix
    assert ids[-8:] == tok.convert_tokens_to_ids(list(SLOT_TOKENS[:8]))
    assert p.build(text, "ebar", 128)[-8:] == tok.convert_tokens_to_ids(list(SLOT_TOKENS[8:]))
    assert p.n_slots == 8


def test_prepare_is_idempotent(tok):
    assert prepare_tokenizer(tok, "released") == 16
    n = len(tok)
    assert prepare_tokenizer(tok, "released") == 0 and len(tok) == n


def test_paper_prompt_ends_with_eos(tok, arch):
    prepare_tokenizer(tok, "paper")
    p = Prompter(tok, "paper")
    ids = p.build("the king wrote music", "ebar", 64)
    assert ids[-1] == tok.eos_token_id and p.n_slots == 1
    assert tok.decode(ids[:-1], skip_special_tokens=True).strip().endswith("The next sentence:")
    assert (
        tok.decode(p.build("x", "ebae", 64)[:-1], skip_special_tokens=True)
        .strip()
        .endswith("original sentence:")
    )


@pytest.mark.parametrize("style", ["released", "paper"])
def test_truncation_keeps_suffix(tok, style):
    prepare_tokenizer(tok, style)
    p = Prompter(tok, style)
    long_text = " ".join(["mountain river"] * 200)
    for kind in ("ebae", "ebar"):
        ids = p.build(long_text, kind, max_length=40)
        assert len(ids) == 40
        assert ids[-p.suffix_len(kind) :] == p.suffix_ids[kind]
    joint = p.build_joint(long_text, max_length=60)
    assert len(joint) == 60 and joint[-p.suffix_len("ebar") :] == p.suffix_ids["ebar"]
    with pytest.raises(ValueError, match="raise max_length"):
        p.build(long_text, "ebae", max_length=p.suffix_len("ebae"))


def test_batch_is_left_padded(tok):
    prepare_tokenizer(tok, "released")
    p = Prompter(tok, "released")
    rows = [p.build(t, "ebae", 64) for t in ["a b", "the river city was founded by the king of the island"]]
    b = left_pad(rows, tok.pad_token_id)
    assert b["input_ids"].shape == b["attention_mask"].shape
    assert b["attention_mask"][0, 0] == 0 and b["attention_mask"][:, -1].all()
    assert (b["input_ids"][:, -8:] == b["input_ids"][1, -8:]).all()


def test_bad_style_and_kind_list_valid_ones(tok):
    with pytest.raises(ValueError, match="valid styles: paper, released"):
        Prompter(tok, "fancy")
    prepare_tokenizer(tok, "released")
    with pytest.raises(ValueError, match="valid kinds: ebae, ebar"):
        Prompter(tok, "released").build("x", "query", 32)


def test_released_without_slot_tokens_is_refused(tok):
    with pytest.raises(ValueError, match="prepare_tokenizer"):
        Prompter(tok, "released")
