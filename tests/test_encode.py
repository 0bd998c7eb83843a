"""Encoders: length-sorted batches give the same vectors as plain ones, in input order; shards on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import BertConfig, BertModel, BertTokenizer  # noqa: E402

from llara import encode  # noqa: E402
from llara.encode import (  # noqa: E402
    HFEncoder,
    LlaraEncoder,
    encode_in_batches,
    encode_shard,
    length_sorted_order,
    list_shards,
    load_embeddings,
    pool,
    resolve_dtype,
    shard_bounds,
    shard_paths,
)
from llara.io import DataError  # noqa: E402

WORDS = "the a river city music long high mountain nile paris is was of and king war school island".split()


def texts_of(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers, 4 heads) with a word-level WordPiece vocabulary."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tok = BertTokenizer(vocab=vocab)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_length_sorted_order_is_longest_first_and_stable():
    assert length_sorted_order([3, 5, 1, 5, 3]).tolist() == [1, 3, 0, 4, 2]


def test_encode_in_batches_restores_input_order():
    lengths = [4, 9, 1, 7, 7, 2, 5]
    seen = []

    def embed_rows(idx):
        seen.append([lengths[i] for i in idx])
        return np.stack([np.array([i, lengths[i]], dtype=np.float32) for i in idx])

    out = encode_in_batches(len(lengths), embed_rows, batch_size=3, lengths=lengths, progress=False)
    assert out[:, 0].tolist() == list(range(7)) and out[:, 1].tolist() == lengths
    assert seen == [[9, 7, 7], [5, 4, 2], [1]]  # each batch holds similar lengths
    plain = encode_in_batches(len(lengths), embed_rows, batch_size=3, lengths=None, progress=False)
    np.testing.assert_array_equal(plain, out)


def test_pool_mean_ignores_padding_and_cls_takes_first():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(hidden, mask, "max")


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_hf_encoder_sorted_equals_one_by_one(tiny_bert_dir, pooling):
    texts = texts_of(23)
    enc = HFEncoder(tiny_bert_dir, pooling=pooling, max_length=32, batch_size=5, progress=False)
    assert enc.dtype == torch.float32 and enc.device == "cpu"
    sorted_vecs = enc.encode_corpus(texts)
    assert sorted_vecs.dtype == np.float32 and sorted_vecs.shape == (23, 32)
    np.testing.assert_allclose(np.linalg.norm(sorted_vecs, axis=1), 1.0, atol=1e-5)
    one = HFEncoder(
        tiny_bert_dir, pooling=pooling, max_length=32, batch_size=1, sort_by_length=False, progress=False
    )
    np.testing.assert_allclose(one.encode_corpus(texts), sorted_vecs, atol=1e-5)


def test_hf_encoder_unnormalised_prefix_and_query_length(tiny_bert_dir):
    texts = texts_of(6, seed=1)
    enc = HFEncoder(
        tiny_bert_dir, normalize=False, max_length=32, query_max_length=4, query_prefix="the ", progress=False
    )
    q = enc.encode_queries(texts)
    assert not np.allclose(np.linalg.norm(q, axis=1), 1.0)
    same = HFEncoder(tiny_bert_dir, normalize=False, max_length=4, progress=False).encode_corpus(
        ["the " + t for t in texts]
    )
    np.testing.assert_allclose(q, same, atol=1e-5)
    assert enc.encode_corpus([]).shape == (0, 32)


class FakeEmbedder:
    """Same interface as llara.modeling.LlaraEmbedder: embed(texts, kind, max_length), tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[list[int], str, int]] = []

    def embed(self, texts, kind, max_length):
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        self.calls.append(([min(len(x), max_length) for x in ids], kind, max_length))
        vecs = torch.tensor([[float(len(x[:max_length])), 1.0 if kind == "ebar" else -1.0, 1.0] for x in ids])
        return torch.nn.functional.normalize(vecs, dim=-1)


def test_llara_encoder_prompts_order_and_lengths(tiny_bert_dir):
    tok = BertTokenizer.from_pretrained(tiny_bert_dir)
    fake = FakeEmbedder(tok)
    enc = LlaraEncoder(fake, query_max_length=8, passage_max_length=20, batch_size=4, progress=False)
    texts = texts_of(10, seed=2)
    q = enc.encode_queries(texts)
    p = enc.encode_corpus(texts)
    expected_len = [min(len(x), 8) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    np.testing.assert_allclose(q, fake.embed(texts, "ebar", 8).numpy(), atol=1e-6)  # input order
    np.testing.assert_allclose(p, fake.embed(texts, "ebae", 20).numpy(), atol=1e-6)
    assert [c[1:] for c in fake.calls[:3]] == [("ebar", 8)] * 3 and fake.calls[3][1:] == ("ebae", 20)
    assert fake.calls[0][0] == sorted(expected_len, reverse=True)[:4]  # longest first
    swapped = LlaraEncoder(fake, query_prompt="ebae", passage_prompt="ebar", progress=False)
    assert (swapped.encode_queries(texts[:2])[:, 1] < 0).all()
    with pytest.raises(ValueError, match="query_prompt must be 'ebae' or 'ebar'"):
        LlaraEncoder(fake, query_prompt="query")


def test_llara_encoder_with_real_embedder_matches_one_by_one(tokenizer_dirs):
    """The lead's LlaraEmbedder on a tiny Llama: sorted batches (left padding) == one text at a time."""
    modeling = pytest.importorskip("llara.modeling")
    from conftest import load_tokenizer, tiny_model

    from llara.prompts import prepare_tokenizer

    tok = load_tokenizer(tokenizer_dirs, "llama")
    prepare_tokenizer(tok, "released")
    backbone = tiny_model("llama", len(tok)).model
    emb = modeling.LlaraEmbedder(backbone, tok, "released")
    texts = texts_of(9, seed=3)
    batched = LlaraEncoder(emb, batch_size=4, passage_max_length=24, progress=False).encode_corpus(texts)
    single = LlaraEncoder(emb, batch_size=1, passage_max_length=24, sort_by_length=False, progress=False)
    np.testing.assert_allclose(batched, single.encode_corpus(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# shards


def test_shard_bounds_cover_all_rows():
    bounds = [shard_bounds(10, i, 3) for i in range(3)]
    assert bounds == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(2, 2, 4) == (1, 1)  # an empty shard is allowed
    with pytest.raises(ValueError, match="0 <= shard < num_shards"):
        shard_bounds(10, 3, 3)


class CountingEncoder:
    def __init__(self):
        self.calls = 0

    def encode_corpus(self, texts):
        self.calls += 1
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32).reshape(len(texts), 2)

    encode_queries = encode_corpus


def test_encode_shard_writes_atomically_and_skips_complete_shards(tmp_path):
    ids = [f"d{i}" for i in range(7)]
    texts = ["x" * i for i in range(7)]
    enc = CountingEncoder()
    cfg = {"model": "m", "batch_size": 2}
    for shard in range(3):
        meta = encode_shard(enc, ids, texts, "corpus", tmp_path, shard, 3, cfg)
        assert meta["config"]["model"] == "m"
    assert enc.calls == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left
    again = encode_shard(enc, ids, texts, "corpus", tmp_path, 1, 3, {"model": "m", "batch_size": 64})
    assert again["skipped"] and enc.calls == 3  # batch size does not change the vectors
    with pytest.raises(DataError, match="another configuration"):
        encode_shard(enc, ids, texts, "corpus", tmp_path, 1, 3, {"model": "other"})
    encode_shard(enc, ids, texts, "corpus", tmp_path, 1, 3, {"model": "other"}, overwrite=True)
    assert enc.calls == 4
    got_ids, vecs = load_embeddings(tmp_path, "corpus")
    assert got_ids == ids and vecs[:, 0].tolist() == list(range(7))


def test_incomplete_shard_is_recomputed_and_missing_shards_reported(tmp_path):
    ids, texts = ["a", "b", "c", "d"], ["1", "22", "333", "4444"]
    enc = CountingEncoder()
    encode_shard(enc, ids, texts, "corpus", tmp_path, 0, 2)
    with pytest.raises(DataError, match=r"corpus shards \[1\] of 2 are missing or incomplete"):
        list_shards(tmp_path, "corpus")
    paths = shard_paths(tmp_path, "corpus", 0, 2)
    paths["meta"].unlink()  # a crash before the marker: the shard counts as not done
    encode_shard(enc, ids, texts, "corpus", tmp_path, 0, 2)
    assert enc.calls == 2
    with pytest.raises(DataError, match="no queries shards"):
        list_shards(tmp_path, "queries")


def write_beir(root: Path) -> Path:
    root.mkdir()
    docs = texts_of(11, seed=5)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(texts_of(4, seed=6)))
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\nq2\td3\t1\n")
    return root


def test_encode_cli_shards_equal_single_run(tmp_path, tiny_bert_dir, capsys):
    beir_dir = write_beir(tmp_path / "beir")
    common = [
        "--encoder",
        "hf",
        "--model",
        str(tiny_bert_dir),
        "--beir-dir",
        str(beir_dir),
        "--max-length",
        "32",
    ]
    for shard in range(2):
        args = [
            *common,
            "--what",
            "corpus",
            "--shard",
            str(shard),
            "--num-shards",
            "2",
            "--output",
            str(tmp_path / "two"),
        ]
        assert encode.main([*args, "--no-progress"]) == 0
    assert encode.main([*common, "--what", "corpus", "--output", str(tmp_path / "one"), "--no-progress"]) == 0
    assert (
        encode.main([*common, "--what", "queries", "--output", str(tmp_path / "one"), "--no-progress"]) == 0
    )
    ids2, v2 = load_embeddings(tmp_path / "two", "corpus")
    ids1, v1 = load_embeddings(tmp_path / "one", "corpus")
    assert ids1 == ids2 == [f"d{i}" for i in range(11)]
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    qids, _ = load_embeddings(tmp_path / "one", "queries")
    assert qids == ["q0", "q2"]  # only judged queries, as BEIR
    meta = json.loads(shard_paths(tmp_path / "two", "corpus", 1, 2)["meta"].read_text())
    assert meta["rows"] == 6 and meta["config"]["pooling"] == "mean" and "split" not in meta["config"]
    capsys.readouterr()
    assert encode.main([*common, "--what", "corpus", "--output", str(tmp_path / "one"), "--no-progress"]) == 0
    assert "complete, not recomputed" in capsys.readouterr().out
    assert encode.main([*common, "--what", "queries", "--split", "dev", "--output", str(tmp_path / "x")]) == 1
    assert "available splits" in capsys.readouterr().err


def test_llara_cli_end_to_end_encode_search_score(tmp_path, tokenizer_dirs):
    """--encoder llara on a saved tiny Llama, then search and score through their CLIs."""
    pytest.importorskip("llara.modeling")
    from conftest import load_tokenizer, tiny_model

    from llara import score, search

    tok = load_tokenizer(tokenizer_dirs, "llama")
    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama", len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    beir_dir = write_beir(tmp_path / "beir")
    emb = tmp_path / "emb"
    common = [
        "--encoder",
        "llara",
        "--model",
        str(model_dir),
        "--beir-dir",
        str(beir_dir),
        "--output",
        str(emb),
    ]
    for what in ("corpus", "queries"):
        assert encode.main([*common, "--what", what, "--batch-size", "4", "--no-progress"]) == 0
    meta = json.loads(shard_paths(emb, "queries", 0, 1)["meta"].read_text())
    assert meta["config"]["query_prompt"] == "ebar" and meta["config"]["query_max_length"] == 64
    assert meta["config"]["passage_prompt"] == "ebae" and meta["config"]["prompt_style"] == "released"
    run = tmp_path / "run.trec"
    assert (
        search.main(["--query-dir", str(emb), "--corpus-dir", str(emb), "--output", str(run), "--tag", "t"])
        == 0
    )
    out = tmp_path / "metrics.json"
    qrels = str(beir_dir / "qrels" / "test.tsv")
    assert score.main(["--qrels", qrels, "--run", str(run), "--output", str(out), "--model", "tiny"]) == 0
    result = json.loads(out.read_text())
    assert (
        result["num_queries"] == 2 and result["metrics"]["recall@100"] == 1.0
    )  # 11 documents, all retrieved
