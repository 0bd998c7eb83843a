"""Pooling: each of slots, mean, cls and last against a direct computation on a tiny model built in
code (vocab 99, hidden 32, 2 layers, 4 heads); the last real token found from the attention mask
with either padding side; RepLLaMA's appended EOS in :class:`llara.encode.HFEncoder` and its CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import load_tokenizer  # noqa: E402
from test_encode import texts_of, write_beir  # noqa: E402
from transformers import BertConfig, BertModel, BertTokenizer, LlamaConfig, LlamaModel  # noqa: E402

from llara.encode import HFEncoder  # noqa: E402
from llara.io import DataError  # noqa: E402
from llara.pooling import first_token_index, last_token_index, pool, pool_hidden  # noqa: E402
from llara.shards import load_embeddings, shard_paths  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
ROWS = [[5, 17, 3, 42, 8], [61, 9, 23], [7, 7, 30, 11, 2, 98, 4]]  # token ids of three texts, lengths 5, 3, 7


def tiny_llama(vocab_size: int = 99) -> LlamaModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, num_key_value_heads=2, max_position_embeddings=64, **TINY)
    return LlamaModel(cfg).eval()


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=99, max_position_embeddings=64, **TINY)).eval()


@pytest.fixture(scope="module")
def llama() -> LlamaModel:
    return tiny_llama()


@pytest.fixture(scope="module")
def bert() -> BertModel:
    return tiny_bert()


def padded(rows: list[list[int]], side: str, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch; left-padded rows get positions counted from their first real token."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)  # (B, T)
    mask = torch.zeros(len(rows), width, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, cols], mask[i, cols] = torch.tensor(row), 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if side == "left":
        batch["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
    return batch


@torch.no_grad()
def hidden_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).last_hidden_state  # (B, T, H)


@torch.no_grad()
def alone(model, row: list[int]) -> torch.Tensor:
    """The hidden states of one text run on its own, no padding: (L, H)."""
    return model(input_ids=torch.tensor([row])).last_hidden_state[0]


def test_last_token_index_found_from_the_mask_with_either_padding():
    right = padded(ROWS, "right")["attention_mask"]
    left = padded(ROWS, "left")["attention_mask"]
    assert last_token_index(right).tolist() == [4, 2, 6]  # length - 1
    assert last_token_index(left).tolist() == [6, 6, 6]  # the last column
    assert first_token_index(right).tolist() == [0, 0, 0]
    assert first_token_index(left).tolist() == [2, 4, 0]  # width - length


def test_last_pooling_is_the_last_real_token_and_padding_side_free(llama):
    expected = torch.stack([alone(llama, row)[-1] for row in ROWS])  # (B, H), by hand
    pooled = {}
    for side in ("left", "right"):
        batch = padded(ROWS, side, pad_id=13)
        pooled[side] = pool_hidden(hidden_of(llama, batch), batch["attention_mask"], "last", normalize=False)
        torch.testing.assert_close(pooled[side], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled["left"], pooled["right"], atol=1e-5, rtol=1e-4)
    batch = padded(ROWS, "right")
    unit = pool_hidden(hidden_of(llama, batch), batch["attention_mask"], "last")  # normalised by default
    torch.testing.assert_close(unit, F.normalize(expected, dim=-1), atol=1e-5, rtol=1e-4)


def test_mean_pooling_ignores_pads(bert):
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2), the last a pad
    assert pool_hidden(hidden, torch.tensor([[1, 1, 0]]), "mean", normalize=False).tolist() == [[2.0, 3.0]]
    expected = torch.stack([alone(bert, row).mean(dim=0) for row in ROWS])  # (B, H)
    for pad_id in (0, 50):  # what the pads hold does not matter
        batch = padded(ROWS, "right", pad_id)
        got = pool_hidden(hidden_of(bert, batch), batch["attention_mask"], "mean", normalize=False)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_cls_pooling_takes_the_first_real_token(bert):
    batch = padded(ROWS, "right")
    got = pool_hidden(hidden_of(bert, batch), batch["attention_mask"], "cls", normalize=False)
    torch.testing.assert_close(got, torch.stack([alone(bert, row)[0] for row in ROWS]), atol=1e-5, rtol=1e-4)
    hidden = torch.arange(12.0).reshape(2, 3, 2)  # (2, 3, 2)
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pool_hidden(hidden, left, "cls", normalize=False).tolist() == [[2.0, 3.0], [6.0, 7.0]]


def test_slots_pooling_is_the_mean_over_the_last_columns(llama):
    batch = padded(ROWS, "left")
    hidden = hidden_of(llama, batch)  # (B, 7, H)
    expected = torch.stack([alone(llama, row)[-2:].mean(dim=0) for row in ROWS])  # (B, H): 2 slots
    got = pool_hidden(hidden, None, "slots", n_slots=2, normalize=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pool(hidden, 2), F.normalize(got, dim=-1))  # the LLaRA model's call
    with_mask = pool_hidden(hidden, batch["attention_mask"], "slots", n_slots=2)
    torch.testing.assert_close(with_mask, pool(hidden, 2))
    # the joint pass: 2 slots ending 1 column (a suffix) before the row's end
    torch.testing.assert_close(
        pool(hidden, 2, end_offset=1, normalize=False), hidden[:, 4:6].mean(dim=1), atol=0, rtol=0
    )
    # paper style: one slot, the last token, is last pooling of a left-padded row
    torch.testing.assert_close(pool(hidden, 1), pool_hidden(hidden, batch["attention_mask"], "last"))
    right = padded(ROWS, "right")
    with pytest.raises(ValueError, match="slot columns are padding"):
        pool_hidden(hidden_of(llama, right), right["attention_mask"], "slots", n_slots=2)


def test_pooling_errors():
    hidden, mask = torch.zeros(1, 3, 2), torch.ones(1, 3)
    with pytest.raises(ValueError, match="unknown pooling 'max'; use one of slots, mean, cls, last"):
        pool_hidden(hidden, mask, "max")
    with pytest.raises(ValueError, match="mean pooling needs the attention mask"):
        pool_hidden(hidden, None, "mean")
    with pytest.raises(ValueError, match="slots pooling needs n_slots"):
        pool_hidden(hidden, mask, "slots")


# ---------------------------------------------------------------------------------------------
# HFEncoder(pooling="last"): RepLLaMA's EOS


@pytest.fixture(scope="module")
def tiny_llama_dir(tokenizer_dirs, tmp_path_factory) -> Path:
    """A tiny LlamaModel (no LM head) + the Llama-style tokenizer (EOS </s>, left padding), saved."""
    tok = load_tokenizer(tokenizer_dirs, "llama")
    path = tmp_path_factory.mktemp("tiny-llama-encoder")
    tiny_llama(vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_hf_encoder_last_appends_eos_and_pools_it(tiny_llama_dir):
    texts = ["the river city", "a king", " ".join(["music"] * 30)]
    enc = HFEncoder(tiny_llama_dir, pooling="last", max_length=6, batch_size=2, progress=False)
    tok, eos = enc.tokenizer, enc.tokenizer.eos_token_id
    assert enc.append_eos and enc.settings["append_eos"] and enc.settings["pooling"] == "last"
    plain = tok(texts, truncation=True, max_length=5)["input_ids"]  # RepLLaMA: max_length - 1 ...
    rows = [f["input_ids"] for f in enc.tokenize(texts, 6)]
    assert rows == [ids + [eos] for ids in plain]  # ... then the EOS
    assert len(rows[2]) == 6 and all(f["attention_mask"][-1] == 1 for f in enc.tokenize(texts, 6))
    expected = F.normalize(torch.stack([alone(enc.model, ids)[-1] for ids in rows]), dim=-1).numpy()
    assert tok.padding_side == "left"
    np.testing.assert_allclose(enc.encode_corpus(texts), expected, atol=1e-5, rtol=1e-4)
    tok.padding_side = "right"
    np.testing.assert_allclose(enc.encode_corpus(texts), expected, atol=1e-5, rtol=1e-4)


def test_hf_encoder_append_eos_is_an_option(tiny_llama_dir, bert):
    texts = ["the river city", "a king"]
    off = HFEncoder(tiny_llama_dir, pooling="last", append_eos=False, max_length=6, progress=False)
    assert [f["input_ids"] for f in off.tokenize(texts, 6)] == off.tokenizer(texts)["input_ids"]
    assert off.settings["append_eos"] is False
    assert HFEncoder(tiny_llama_dir, pooling="mean", max_length=6, progress=False).append_eos is False
    bert_tok = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the"])})
    with pytest.raises(DataError, match="the tokenizer has no EOS token to append; pass --no-append-eos"):
        HFEncoder(bert, bert_tok, pooling="last", max_length=8, progress=False)
    with pytest.raises(ValueError, match="unknown pooling 'slots'; use one of mean, cls, last"):
        HFEncoder(tiny_llama_dir, pooling="slots", progress=False)


@pytest.mark.extended
def test_encode_cli_pooling_last_records_it(tmp_path, tiny_llama_dir):
    """``python -m llara.encode --encoder hf --pooling last`` in a fresh interpreter, as the workflow
    runs it: the shard's marker records the pooling and the EOS, and the vectors are the encoder's."""
    beir_dir = write_beir(tmp_path / "beir")
    out = tmp_path / "emb"
    done = subprocess.run(
        [sys.executable, "-m", "llara.encode", "--encoder", "hf", "--pooling", "last", "--model",
         str(tiny_llama_dir), "--max-length", "16", "--beir-dir", str(beir_dir), "--what", "corpus", "--store-dtype", "float32",
         "--output", str(out), "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, check=False, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads(shard_paths(out, "corpus", 0, 1)["meta"].read_text())
    assert (meta["config"]["pooling"], meta["config"]["append_eos"]) == ("last", True)
    assert (meta["encoder"]["pooling"], meta["encoder"]["append_eos"]) == ("last", True)
    ids, vecs = load_embeddings(out, "corpus")
    texts = texts_of(11, seed=5)  # write_beir's corpus, ids d0..d10
    assert ids == [f"d{i}" for i in range(11)]
    enc = HFEncoder(tiny_llama_dir, pooling="last", max_length=16, progress=False)
    np.testing.assert_allclose(vecs, enc.encode_corpus(texts), atol=1e-5, rtol=1e-4)
