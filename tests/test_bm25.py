"""BM25 baseline (bm25s): ranking on a tiny corpus, TREC run via the CLI, SciFact regression."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llara import bm25
from llara.bm25 import BM25Index, bm25_search
from llara.score import score
from llara.search import ranked

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"

DOCS = {
    "d1": "the nile is the longest river in africa",
    "d2": "mountains of the alps are high",
    "d3": "paris is a city on the river seine",
    "d4": "a history of music in vienna",
}


def test_ranking_and_zero_scores_dropped():
    run = bm25_search(
        list(DOCS), list(DOCS.values()), ["q1", "q2"], ["longest river", "zebra"], k=10, stemmer=None
    )
    order = [d for d, _ in ranked(run["q1"])]
    assert order == ["d1", "d3"]  # 'longest' only in d1; 'river' in d1 and d3; d2, d4 share nothing
    assert run["q2"] == {}  # no query term in the corpus: nothing retrieved
    assert all(s > 0 for s in run["q1"].values())


def test_stemming_matches_inflections():
    docs, queries = ["he was running fast", "a quiet library"], ["runs"]
    assert bm25_search(["a", "b"], docs, ["q"], queries, k=2, stemmer=None)["q"] == {}
    pytest.importorskip("Stemmer", reason="pip install PyStemmer")
    assert list(bm25_search(["a", "b"], docs, ["q"], queries, k=2, stemmer="english")["q"]) == ["a"]


def test_k_is_capped_and_inputs_checked():
    index = BM25Index(list(DOCS), list(DOCS.values()), stemmer=None)
    assert len(index.search(["q"], ["the river city music alps"], k=100)["q"]) == 4
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Index([], [], stemmer=None)
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        BM25Index(["a", "b"], ["x"], stemmer=None)


def test_cli_writes_a_trec_run(tmp_path, capsys):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in DOCS.items())
    )
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "longest river"}\n')
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    out = tmp_path / "run.trec"
    assert bm25.main(["--beir-dir", str(root), "--output", str(out), "--stemmer", "none", "--k", "5"]) == 0
    assert out.read_text().splitlines()[0].startswith("q1 Q0 d1 1 ")
    assert out.read_text().split()[-1] == "bm25"
    assert json.loads(out.with_name("run.trec.config.json").read_text())["k1"] == 0.9
    assert bm25.main(["--beir-dir", str(root), "--split", "dev", "--output", str(out)]) == 1
    assert "available splits" in capsys.readouterr().err


def test_scifact_bm25_regression():
    """bm25s, Lucene BM25 k1=0.9 b=0.4, English stop words + Snowball stemming (BEIR's BM25: 0.665)."""
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is missing: put the project's shared/ folder beside the repository")
    pytest.importorskip("Stemmer", reason="pip install PyStemmer")
    from llara.beir import load_beir

    ds = load_beir(SCIFACT, "test")
    doc_ids, texts = ds.corpus_items()
    qids, queries = ds.query_items()
    run = BM25Index(doc_ids, texts).search(qids, queries, 1000)
    metrics = score(ds.qrels, run)["metrics"]
    assert metrics["ndcg@10"] == pytest.approx(0.6762, abs=1e-4)
    assert metrics["recall@100"] == pytest.approx(0.9127, abs=1e-4)
