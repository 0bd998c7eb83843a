"""Search: exact top-k, shard merge == concatenation, ANN recall, TREC run files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_bad_input, run_cli

from llara import search
from llara.encode import encode_shard
from llara.io import DataError
from llara.runs import ranked, read_trec_run, write_trec_run
from llara.search import (
    build_ann_index,
    merge_topk,
    recall_against_exact,
    search_exact,
    search_sharded,
    to_run,
)
from llara.shards import list_shards, load_embeddings, load_shard, shard_paths, write_shard


def unit(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_matches_numpy():
    rng = np.random.default_rng(0)
    q, c = unit(rng, 7), unit(rng, 50)
    scores, idx = search_exact(q, c, k=5)
    full = q @ c.T  # (7, 50)
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :5], atol=1e-5)
    s, i = search_exact(q, c[:3], k=10)  # k larger than the corpus
    assert i.shape == (7, 3) and (i >= 0).all()


@pytest.mark.parametrize("sizes", [[50], [10, 40], [3, 3, 44], [20, 1, 0, 29]])
def test_sharded_search_equals_search_of_concatenation(sizes):
    rng = np.random.default_rng(1)
    q, c = unit(rng, 25), unit(rng, sum(sizes))
    shards = np.split(c, np.cumsum(sizes)[:-1])
    want_scores, want_idx = search_exact(q, c, k=8)
    got_scores, got_idx = search_sharded(q, [s for s in shards if len(s)], k=8)
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)


def test_merge_breaks_ties_by_smaller_index_and_skips_invalid():
    a = (np.array([[0.9, 0.5]], np.float32), np.array([[7, 2]]))
    b = (np.array([[0.9, 0.1, -1.0]], np.float32), np.array([[3, 9, -1]]))
    scores, idx = merge_topk([a, b], k=4)
    assert idx.tolist() == [[3, 7, 2, 9]] and scores[0, 0] == pytest.approx(0.9)
    scores, idx = merge_topk([(np.array([[0.3, 0.0]], np.float32), np.array([[1, -1]]))], k=2)
    assert idx.tolist() == [[1, -1]]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_against_exact(kind):
    rng = np.random.default_rng(2)
    q, c = unit(rng, 40, 32), unit(rng, 2000, 32)
    _, exact = search_exact(q, c, k=10)
    index = build_ann_index(c, kind, nprobe=64) if kind == "ivf" else build_ann_index(c, kind, ef_search=256)
    _, approx = index.search(q, 10)
    assert recall_against_exact(approx, exact, 10) >= 0.9
    assert recall_against_exact(exact, exact, 10) == 1.0
    assert recall_against_exact(np.array([[5, -1]]), np.array([[5, 6]]), 2) == 0.5


def test_unknown_index_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        build_ann_index(np.zeros((4, 2), np.float32), "lsh")
    with pytest.raises(ValueError, match="query dim 3 != corpus dim 2"):
        search_exact(np.zeros((1, 3)), np.zeros((4, 2)), 1)


def test_trec_run_round_trip_and_trec_eval_order(tmp_path):
    run = {"q1": {"a": 0.5, "b": 0.9, "c": 0.5}, "q2": {"x": 1.0}}
    path = write_trec_run(tmp_path / "run.trec", run, "tag1")
    lines = path.read_text().splitlines()
    assert lines[:3] == ["q1 Q0 b 1 0.9 tag1", "q1 Q0 c 2 0.5 tag1", "q1 Q0 a 3 0.5 tag1"]
    assert [ln.split()[2] for ln in lines] == ["b", "c", "a", "x"]  # ties: docid descending
    back = read_trec_run(path)
    assert back == {"q1": {"a": 0.5, "b": 0.9, "c": 0.5}, "q2": {"x": 1.0}}
    assert ranked(back["q1"])[0] == ("b", 0.9)
    with pytest.raises(ValueError, match="run tag"):
        write_trec_run(tmp_path / "r2", run, "two words")


def test_scores_survive_the_file_exactly(tmp_path):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((1, 50)).astype(np.float32)
    run = to_run(["q"], [f"d{i}" for i in range(50)], scores, np.arange(50)[None])
    back = read_trec_run(write_trec_run(tmp_path / "run.trec", run, "t"))
    assert back == run  # scores are written with repr(): exact


@pytest.mark.parametrize(
    ("text", "match"),
    [("q1 Q0 d1 1 0.5\n", r"run\.trec:1: expected 6 columns"), ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n", r"run\.trec:2: score 'high'"),
     ("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", r"run\.trec:2: document 'd1' listed twice"),
     ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 nan t\n", r"run\.trec:2: score 'nan' is not finite"),
     ("q1 Q0 d1 1 inf t\n", r"run\.trec:1: score 'inf' is not finite")],
)  # fmt: skip
def test_bad_run_files_name_the_line(tmp_path, text, match):
    (tmp_path / "run.trec").write_text(text)
    with pytest.raises(DataError, match=match):
        read_trec_run(tmp_path / "run.trec")


class ArrayEncoder:
    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def encode_corpus(self, texts):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    encode_queries = encode_corpus


def test_search_cli_over_shards_with_exact_and_hnsw(tmp_path, capsys):
    rng = np.random.default_rng(4)
    c, q = unit(rng, 60), unit(rng, 5)
    doc_ids = [f"d{i}" for i in range(60)]
    enc = ArrayEncoder(
        {**{d: v for d, v in zip(doc_ids, c, strict=True)}, **{f"q{i}": v for i, v in enumerate(q)}}
    )
    for shard in range(3):
        encode_shard(enc, doc_ids, doc_ids, "corpus", tmp_path / "emb", shard, 3)
    encode_shard(enc, [f"q{i}" for i in range(5)], [f"q{i}" for i in range(5)], "queries", tmp_path / "emb")
    out = tmp_path / "run.trec"
    emb = str(tmp_path / "emb")
    assert (
        search.main(["--query-dir", emb, "--corpus-dir", emb, "--output", str(out), "--tag", "t", "--k", "7"])
        == 0
    )
    run = read_trec_run(out)
    _, want = search_exact(q, c, 7)
    for i in range(5):
        assert [d for d, _ in ranked(run[f"q{i}"])] == [doc_ids[j] for j in want[i]]
    assert json.loads(out.with_name("run.trec.config.json").read_text())["k"] == 7
    stats = json.loads(out.with_name("run.trec.stats.json").read_text())
    assert stats["documents"] == 60 and stats["corpus_shards"] == 3
    out2 = tmp_path / "hnsw.trec"
    argv = [
        "--query-dir",
        emb,
        "--corpus-dir",
        emb,
        "--output",
        str(out2),
        "--tag",
        "t",
        "--k",
        "7",
        "--index",
        "hnsw",
    ]
    assert search.main(argv) == 0
    stats = json.loads(out2.with_name("hnsw.trec.stats.json").read_text())
    assert (
        stats["recall@7_vs_exact"] == pytest.approx(1.0)
        and "recall@7 vs exact = 1.0000" in capsys.readouterr().out
    )
    assert (
        search.main(["--query-dir", str(tmp_path), "--corpus-dir", emb, "--output", str(out), "--tag", "t"])
        == 2
    )
    assert "no queries shards" in capsys.readouterr().err


def test_stats_record_the_queries_written(tmp_path):
    emb = write_encodings(tmp_path / "emb")
    out = tmp_path / "run.trec"
    assert (
        search.main(["--query-dir", emb, "--corpus-dir", emb, "--output", str(out), "--tag", "t", "--k", "3"])
        == 0
    )
    stats = json.loads(out.with_name("run.trec.stats.json").read_text())
    assert stats["queries_written"] == stats["queries"] == 5 == len(read_trec_run(out))


def test_a_non_finite_score_is_not_written(tmp_path):
    with pytest.raises(
        DataError, match=r"run\.trec: score nan of document 'd2' for query 'q1' is not finite"
    ):
        write_trec_run(tmp_path / "run.trec", {"q1": {"d1": 1.0, "d2": float("nan")}}, "t")
    assert not (tmp_path / "run.trec").exists()


# ---------------------------------------------------------------------------------------------
# shards are verified as they are read; the CLI says which file, and exits 2 (issue 18)

REPO = Path(__file__).resolve().parents[1]


def write_encodings(folder: Path, num_shards: int = 2) -> str:
    rng = np.random.default_rng(5)
    c, q = unit(rng, 20), unit(rng, 5)
    doc_ids, qids = [f"d{i}" for i in range(20)], [f"q{i}" for i in range(5)]
    enc = ArrayEncoder({**dict(zip(doc_ids, c, strict=True)), **dict(zip(qids, q, strict=True))})
    for shard in range(num_shards):
        encode_shard(enc, doc_ids, doc_ids, "corpus", folder, shard, num_shards)
    encode_shard(enc, qids, qids, "queries", folder)
    return str(folder)


def test_search_cli_refuses_non_finite_vectors(tmp_path):
    emb = write_encodings(tmp_path / "emb")
    paths = shard_paths(emb, "corpus", 1, 2)
    ids, vecs = load_shard(paths)
    vecs[3, 0] = np.nan
    write_shard(paths, ids, vecs, json.loads(paths["meta"].read_text()))
    out = tmp_path / "run.trec"
    done = run_cli("search", "--query-dir", emb, "--corpus-dir", emb, "--output", out, "--tag", "t", "--cpu")
    error = assert_bad_input(
        done, paths["embeddings"], "row 3 (id 'd13') of corpus shard 1 of 2", "non-finite"
    )
    assert "--forcerun encode_corpus" in error
    assert not out.exists()  # never an empty run from NaN vectors


@pytest.mark.parametrize("damage", ["truncated", "not npy", "ids short", "meta not json", "meta rows"])
def test_damaged_shards_are_errors_naming_the_file_and_the_fix(tmp_path, damage):
    emb = write_encodings(tmp_path / "emb")
    paths = shard_paths(emb, "corpus", 0, 2)
    if damage == "truncated":
        data = paths["embeddings"].read_bytes()
        paths["embeddings"].write_bytes(data[: len(data) - 20])
        bad, match = paths["embeddings"], "damaged or truncated vectors"
    elif damage == "not npy":
        paths["embeddings"].write_bytes(b"nothing like a numpy file")
        bad, match = paths["embeddings"], "damaged or truncated vectors"
    elif damage == "ids short":
        paths["ids"].write_text(json.dumps(json.loads(paths["ids"].read_text())[:-1]))
        bad, match = paths["ids"], "9 ids but the marker"
    elif damage == "meta not json":
        paths["meta"].write_text('{"rows": 10,')
        bad, match = paths["meta"], "damaged shard marker, not JSON"
    else:
        paths["meta"].write_text(json.dumps(json.loads(paths["meta"].read_text()) | {"rows": 11}))
        bad, match = paths["ids"], "10 ids but the marker"
    for read in (
        lambda: list_shards(emb, "corpus"),
        lambda: load_shard(paths),
        lambda: load_embeddings(emb, "corpus"),
    ):
        with pytest.raises(DataError) as err:
            read()
        message = str(err.value)
        assert message.startswith(f"{bad}: ") and match in message, message
        assert "delete it or run snakemake --forcerun encode_corpus" in message and "--overwrite" in message
        assert "\n" not in message


def test_search_cli_on_a_truncated_shard_exits_2_naming_it(tmp_path):
    emb = write_encodings(tmp_path / "emb")
    npy = shard_paths(emb, "queries", 0, 1)["embeddings"]
    npy.write_bytes(npy.read_bytes()[:-8])
    out = tmp_path / "run.trec"
    done = run_cli("search", "--query-dir", emb, "--corpus-dir", emb, "--output", out, "--tag", "t", "--cpu")
    error = assert_bad_input(done, npy, "mmap length is greater than file size")
    assert "snakemake --forcerun encode_queries" in error and not out.exists()


# ---------------------------------------------------------------------------------------------
# issue 16: queries in batches, float16 shards, the ANN index built shard by shard


def test_query_batches_give_the_same_results(monkeypatch):
    """search_sharded in batches of 3 queries: the same indices and scores as one batch, and faiss
    sees at most 3 queries a search."""
    rng = np.random.default_rng(6)
    q, c = unit(rng, 25), unit(rng, 90)
    shards = [c[:40], c[40:41], c[41:]]
    want_scores, want_idx = search_sharded(q, shards, k=8)
    seen = []
    real = search.search_in_batches

    def spy(index, queries, k, batch_size=search.QUERY_BATCH_SIZE):
        scores, idx = real(index, queries, k, batch_size)
        seen.append(batch_size)
        return scores, idx

    monkeypatch.setattr(search, "search_in_batches", spy)
    got_scores, got_idx = search_sharded(q, shards, k=8, query_batch_size=3)
    assert seen == [3, 3, 3]  # one per shard
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
    calls = []

    class Recording:
        def search(self, queries, k):
            calls.append(queries.shape[0])
            return np.zeros((queries.shape[0], k), np.float32), np.zeros((queries.shape[0], k), np.int64)

    scores, idx = real(Recording(), q, 4, batch_size=10)
    assert calls == [10, 10, 5] and scores.shape == idx.shape == (25, 4)
    with pytest.raises(ValueError, match="query batch size must be >= 1"):
        real(Recording(), q, 4, batch_size=0)


def test_search_cli_query_batch_size_gives_the_same_run(tmp_path):
    emb = write_encodings(tmp_path / "emb", num_shards=3)
    runs = []
    for size in ("4096", "2"):
        out = tmp_path / f"b{size}.trec"
        argv = ["--query-dir", emb, "--corpus-dir", emb, "--output", str(out), "--tag", "t", "--k", "6"]
        assert search.main([*argv, "--query-batch-size", size, "--cpu"]) == 0
        runs.append(out.read_text())
        assert json.loads(out.with_name(f"b{size}.trec.stats.json").read_text())["query_batch_size"] == int(
            size
        )
    assert runs[0] == runs[1] and len(runs[0].splitlines()) == 5 * 6
    done = run_cli("search", "--query-dir", emb, "--corpus-dir", emb, "--output", tmp_path / "x", "--tag", "t",
                   "--query-batch-size", "0")  # fmt: skip
    assert done.returncode == 2 and "--query-batch-size must be >= 1, got 0" in done.stderr


def write_float16_encodings(folder: Path, n: int = 600, num_shards: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """float16 corpus and query shards of random unit vectors; returns the float32 values they hold."""
    rng = np.random.default_rng(7)
    c, q = unit(rng, n, 32), unit(rng, 30, 32)
    doc_ids, qids = [f"d{i}" for i in range(n)], [f"q{i}" for i in range(30)]
    enc = ArrayEncoder({**dict(zip(doc_ids, c, strict=True)), **dict(zip(qids, q, strict=True))})
    for shard in range(num_shards):
        encode_shard(enc, doc_ids, doc_ids, "corpus", folder, shard, num_shards, store_dtype="float16")
    encode_shard(enc, qids, qids, "queries", folder, store_dtype="float16")
    as_stored = lambda x: x.astype(np.float16).astype(np.float32)  # noqa: E731
    return as_stored(q), as_stored(c)


def test_search_of_float16_shards_reads_one_shard_at_a_time(tmp_path, monkeypatch):
    """Exact search of float16 shards == exact search of their float32 values concatenated; exact, HNSW
    and IVF never hold the whole corpus (load_embeddings is not called for it) and give the ids."""
    from llara import shards

    q, c = write_float16_encodings(tmp_path)
    real = shards.load_embeddings

    def queries_only(folder, what, *args, **kwargs):
        assert what == "queries", "the corpus was loaded whole"
        return real(folder, what, *args, **kwargs)

    monkeypatch.setattr(shards, "load_embeddings", queries_only)
    want_scores, want_idx = search_exact(q, c, 10)
    run, stats = search.search_dirs(tmp_path, tmp_path, k=10, use_gpu=False)
    for i in range(30):
        assert [d for d, _ in ranked(run[f"q{i}"])] == [f"d{j}" for j in want_idx[i]]
        np.testing.assert_allclose([run[f"q{i}"][f"d{j}"] for j in want_idx[i]], want_scores[i], atol=1e-6)
    assert stats["corpus_store_dtypes"] == ["float16"] and stats["documents"] == 600
    for kind, params in (("hnsw", {"ef_search": 256}), ("ivf", {"nlist": 2, "nprobe": 2})):
        run, stats = search.search_dirs(tmp_path, tmp_path, k=10, index=kind, recall_k=10, use_gpu=False,
                                        ann_params=params)  # fmt: skip
        assert stats["recall@10_vs_exact"] >= (1.0 if kind == "ivf" else 0.95), (kind, stats)
        assert set(run) == {f"q{i}" for i in range(30)} and all(len(d) == 10 for d in run.values())


def test_ivf_trains_on_a_seeded_sample_drawn_across_shards(monkeypatch):
    """The training sample: min(N, size) rows drawn without replacement across all shards, in corpus
    order, the same for the same seed; IVF trains on 256 rows per list and then holds every row."""
    rng = np.random.default_rng(8)
    c = unit(rng, 3000, 16)
    parts = [c[:1000], c[1000:1001], c[1001:]]
    passes = []

    def shards():
        passes.append(1)
        return iter(parts)

    sizes = [len(p) for p in parts]
    sample = search.sample_rows(shards, sizes, 700, seed=3)
    rows = [int(np.flatnonzero((c == r).all(axis=1))[0]) for r in sample]
    assert sample.shape == (700, 16) and rows == sorted(set(rows))  # distinct, in corpus order
    assert rows[0] < 1000 < rows[-1]  # drawn from the first shard and the last
    np.testing.assert_array_equal(search.sample_rows(shards, sizes, 700, seed=3), sample)
    assert not np.array_equal(search.sample_rows(shards, sizes, 700, seed=4), sample)
    np.testing.assert_array_equal(search.sample_rows(shards, sizes, 5000, seed=3), c)  # all rows
    with pytest.raises(ValueError, match="corpus shard 1 has 1 rows, expected 2"):
        search.sample_rows(shards, [1000, 2, 1999], 10)
    passes.clear()
    drawn = []
    real = search.sample_rows

    def spy(*args, **kwargs):
        sample = real(*args, **kwargs)
        drawn.append(sample.shape)
        return sample

    monkeypatch.setattr(search, "sample_rows", spy)
    index = search.build_ann_index_sharded(shards, sizes, 16, "ivf", nlist=4, nprobe=4, seed=1)
    assert drawn == [(4 * 256, 16)]  # 256 rows per list, not the corpus
    assert len(passes) == 2 and index.ntotal == 3000 and index.nlist == 4  # one pass to sample, one to add
    _, exact = search_exact(c[:20], c, 5)
    _, approx = index.search(c[:20], 5)
    assert recall_against_exact(approx, exact, 5) == 1.0  # nprobe == nlist: every list is searched
    assert search.default_nlist(3000) == 76 and search.default_nlist(10) == 1
