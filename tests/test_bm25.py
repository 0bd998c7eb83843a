"""BM25 baseline (bm25s): ranking on a tiny corpus, TREC run via the CLI, SciFact regression."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llara import bm25
from llara.bm25 import BM25Index
from llara.io import DataError, DataWarning
from llara.runs import ranked
from llara.score import score

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"

DOCS = {
    "d1": "the nile is the longest river in africa",
    "d2": "mountains of the alps are high",
    "d3": "paris is a city on the river seine",
    "d4": "a history of music in vienna",
}


def test_ranking_and_zero_scores_dropped():
    with pytest.warns(DataWarning, match=r"share no term with the corpus \(ids: q2\)"):
        index = BM25Index(list(DOCS), list(DOCS.values()), stemmer=None)
        run = index.search(["q1", "q2"], ["longest river", "zebra"], k=10)
    order = [d for d, _ in ranked(run["q1"])]
    assert order == ["d1", "d3"]  # 'longest' only in d1; 'river' in d1 and d3; d2, d4 share nothing
    assert run["q2"] == {}  # no query term in the corpus: nothing retrieved
    assert all(s > 0 for s in run["q1"].values())


def test_stemming_matches_inflections():
    docs, queries = ["he was running fast", "a quiet library"], ["runs"]
    with pytest.warns(DataWarning, match="share no term"):
        assert BM25Index(["a", "b"], docs, stemmer=None).search(["q"], queries, k=2)["q"] == {}
    pytest.importorskip("Stemmer", reason="pip install PyStemmer")
    assert list(BM25Index(["a", "b"], docs, stemmer="english").search(["q"], queries, k=2)["q"]) == ["a"]


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
    assert bm25.main(["--beir-dir", str(root), "--split", "dev", "--output", str(out)]) == 2
    assert "available splits" in capsys.readouterr().err


def write_folder(root: Path, queries: dict[str, str], corpus: dict[str, str] = DOCS) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in corpus.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\td1\t1\n" for q in queries)
    )
    return root


def test_empty_and_stop_word_queries_warn_and_score_zero(tmp_path, capsys):
    queries = {"q1": "longest river", "q2": "", "q3": "the of a", "q4": "zebra"}
    with pytest.warns(DataWarning) as record:
        index = BM25Index(list(DOCS), list(DOCS.values()), stemmer=None)
        run = index.search(list(queries), list(queries.values()), k=10)
    assert run["q2"] == run["q3"] == run["q4"] == {} and run["q1"]
    messages = [str(w.message) for w in record]
    assert any(
        "2 of 4 queries have no term left after stop words" in m and "ids: q2, q3)" in m for m in messages
    )
    assert any("1 of 4 queries share no term with the corpus (ids: q4)" in m for m in messages)
    # through the CLI and the score stage: no run line for them, and they count 0
    root = write_folder(tmp_path / "beir", queries)
    out = tmp_path / "run.trec"
    assert bm25.main(["--beir-dir", str(root), "--output", str(out), "--stemmer", "none"]) == 0
    captured = capsys.readouterr()
    assert (
        "warning: BM25: 2 of 4 queries have no term left" in captured.err and "ids: q2, q3)" in captured.err
    )
    assert "warning: BM25: 1 of 4 queries share no term with the corpus (ids: q4)" in captured.err
    assert "(ids: q2)" in captured.err  # load_beir: q2's text is empty
    assert {line.split()[0] for line in out.read_text().splitlines()} == {"q1"}
    from llara import score as score_mod

    metrics = tmp_path / "metrics.json"
    assert (
        score_mod.main(
            ["--qrels", str(root / "qrels" / "test.tsv"), "--run", str(out), "--output", str(metrics)]
        )
        == 0
    )
    result = json.loads(metrics.read_text())
    assert result["num_queries"] == 4 and result["num_queries_missing_from_run"] == 3
    assert result["metrics"]["ndcg@10"] == pytest.approx(0.25)  # q1 finds d1 first; the others 0


def test_only_empty_queries(tmp_path):
    with pytest.warns(DataWarning, match="2 of 2 queries have no term left"):
        run = BM25Index(list(DOCS), list(DOCS.values()), stemmer=None).search(["a", "b"], ["", "the"], k=3)
    assert run == {"a": {}, "b": {}}


def test_cli_non_utf8_input_names_file_line_and_offset(tmp_path, capsys):
    root = write_folder(tmp_path / "beir", {"q1": "longest river"})
    corpus = root / "corpus.jsonl"
    data = corpus.read_bytes().replace(b"paris", b"p\xe2ris")
    corpus.write_bytes(data)
    assert (
        bm25.main(["--beir-dir", str(root), "--output", str(tmp_path / "run.trec"), "--stemmer", "none"]) == 2
    )
    err = capsys.readouterr().err
    offset = data.index(b"\xe2")
    assert f"{corpus}:3: not UTF-8: byte 0xe2 at byte offset {offset} of the file" in err
    assert "Traceback" not in err and not (tmp_path / "run.trec").exists()


def test_cli_output_to_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a regression would write a file named "-" here, not in the checkout
    root = write_folder(tmp_path / "beir", {"q1": "longest river"})
    assert bm25.main(["--beir-dir", str(root), "--output", "-", "--stemmer", "none", "--k", "2"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[:4] for line in captured.out.splitlines()] == [
        ["q1", "Q0", "d1", "1"],
        ["q1", "Q0", "d3", "2"],
    ]
    assert "1 of 1 queries retrieved documents" in captured.err  # the summary goes to stderr


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


def test_a_gzipped_corpus_is_read_when_it_is_the_only_one(tmp_path):
    root = write_folder(tmp_path / "beir", {"q1": "longest river", "q2": "city music"})
    plain = tmp_path / "plain.trec"
    assert bm25.main(["--beir-dir", str(root), "--output", str(plain), "--stemmer", "none"]) == 0
    corpus = root / "corpus.jsonl"
    gz = root / "corpus.jsonl.gz"
    gz.write_bytes(gzip.compress(corpus.read_bytes()))
    corpus.unlink()
    out = tmp_path / "gz.trec"
    assert bm25.main(["--beir-dir", str(root), "--output", str(out), "--stemmer", "none"]) == 0
    assert out.read_text() == plain.read_text()
    from llara.beir import load_corpus

    gz.write_bytes(gzip.compress(b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n'))
    with pytest.raises(
        DataError, match=r"corpus\.jsonl\.gz:2: not UTF-8: byte 0xe9 at byte offset 54 of the decomp"
    ):
        load_corpus(corpus)  # the name of the plain file: the gzipped one is read when alone
    # a truncated download: exit 2, one line naming the file
    data = gzip.compress(json.dumps({"_id": "d1", "text": "x" * 5000}).encode() + b"\n")
    gz.write_bytes(data[: len(data) // 2])
    done = subprocess.run(
        [sys.executable, "-m", "llara.bm25", "--beir-dir", str(root), "--output", str(out), "--stemmer", "none"],
        capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {gz}: damaged or truncated gzip file"), (
        done.stderr
    )
