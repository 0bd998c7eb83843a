"""Hard-negative mining: positives never become negatives, seeded sampling, BM25 / run / pairs inputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llara import mine as mine_mod
from llara.io import DataError, read_jsonl
from llara.mine import TrainingSet, from_pairs, mine, sample_negatives
from llara.runs import write_trec_run


def test_sample_negatives_respects_depth_skip_and_exclusions():
    ranking = [f"d{i}" for i in range(20)]
    rng = random.Random(0)
    assert sample_negatives(ranking, {"d1"}, 10, rng, depth=5) == ["d0", "d2", "d3", "d4"]
    assert sample_negatives(ranking, set(), 10, rng, depth=5, skip_top=2) == ["d2", "d3", "d4"]
    got = sample_negatives(ranking, {"d3"}, 4, random.Random(1), depth=12)
    assert len(got) == 4 and "d3" not in got and got == sorted(got, key=ranking.index)
    assert got == sample_negatives(ranking, {"d3"}, 4, random.Random(1), depth=12)


def toy_set() -> TrainingSet:
    corpus = {f"d{i}": f"passage {i}" for i in range(30)}
    corpus["dup"] = "passage 0"  # the same text as the positive d0
    corpus["qa"] = "a document whose id is a query id"
    return TrainingSet(
        queries={"qa": "query a", "qb": "query b"},
        positives={"qa": ["d0"], "qb": ["d5", "d6"]},
        corpus=corpus,
    )


def toy_run() -> dict[str, dict[str, float]]:
    ranking = ["qa", "d0", "dup", *[f"d{i}" for i in range(1, 30)]]
    return {q: {d: 100.0 - i for i, d in enumerate(ranking)} for q in ("qa", "qb")}


def test_mine_excludes_positives_duplicates_and_query_id():
    rows, stats = mine(toy_set(), toy_run(), num_negs=5, depth=12, seed=0)
    assert stats == {"queries": 2, "rows": 2, "not_in_run": 0, "too_few_negatives": 0, "short_rows": 0}
    a, b = rows
    assert a["query"] == "query a" and a["pos"] == ["passage 0"] and len(a["neg"]) == 5
    assert not {"d0", "dup", "qa"} & set(a["neg_ids"])
    assert not {"d5", "d6"} & set(b["neg_ids"])  # (the document "qa" may be a negative of qb)
    assert a["neg"] == [toy_set().corpus[d] for d in a["neg_ids"]]
    rows_b, _ = mine(toy_set(), toy_run(), num_negs=5, depth=12, seed=1)
    assert rows_b[0]["neg_ids"] != a["neg_ids"]  # another seed, another sample


def test_a_query_row_does_not_depend_on_the_other_queries():
    data = toy_set()
    alone = TrainingSet({"qb": "query b"}, {"qb": data.positives["qb"]}, data.corpus)
    both, _ = mine(data, toy_run(), num_negs=4, depth=20, seed=3)
    only, _ = mine(alone, toy_run(), num_negs=4, depth=20, seed=3)
    assert both[1] == only[0]


def test_short_and_missing_queries_are_counted():
    run = {"qa": {"d0": 1.0, "d1": 0.5}}
    rows, stats = mine(toy_set(), run, num_negs=5, depth=10, min_negs=1)
    assert stats["not_in_run"] == 1 and stats["short_rows"] == 1 and rows[0]["neg_ids"] == ["d1"]
    rows, stats = mine(toy_set(), run, num_negs=5, depth=10, min_negs=2)
    assert rows == [] and stats["too_few_negatives"] == 1


def write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    topics = ["river", "mountain", "city", "music", "king"]
    docs = [(f"d{i}", f"{topics[i % 5]} story number {i} about {topics[i % 5]}s") for i in range(40)]
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs)
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"a {t} question"}) + "\n" for i, t in enumerate(topics))
    )
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(5)) + "q4\td9\t0\n"
    )
    return root


def test_cli_bm25_from_beir(tmp_path):
    root = write_beir(tmp_path / "beir")
    out = tmp_path / "train.jsonl"
    argv = ["--beir-dir", str(root), "--negatives", "bm25", "--stemmer", "none", "--num-negs", "3"]
    assert mine_mod.main([*argv, "--output", str(out)]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 5 and all(len(r["neg"]) == 3 for r in rows)
    for i, row in enumerate(rows):
        assert row["pos_ids"] == [f"d{i}"] and f"d{i}" not in row["neg_ids"]
    assert json.loads(out.with_name("train.jsonl.config.json").read_text())["stats"]["rows"] == 5
    try:  # the fine-tuning loader accepts the rows (when the lead's module is there)
        from llara.rows import FINETUNE_FIELDS, validate_jsonl
    except ImportError:
        return
    assert validate_jsonl(out, FINETUNE_FIELDS) == 5


def test_cli_dense_run_and_errors(tmp_path, capsys):
    root = write_beir(tmp_path / "beir")
    run = {f"q{i}": {f"d{j}": 1.0 - j / 100 for j in range(20)} for i in range(5)}
    run_path = write_trec_run(tmp_path / "dense.trec", run, "dense")
    out = tmp_path / "train.jsonl"
    argv = ["--beir-dir", str(root), "--negatives", "run", "--run", str(run_path), "--output", str(out)]
    assert mine_mod.main([*argv, "--num-negs", "4", "--depth", "10", "--skip-top", "2"]) == 0
    for row in read_jsonl(out):
        assert all(int(d[1:]) >= 2 for d in row["neg_ids"]) and len(row["neg_ids"]) == 4
    bad = write_trec_run(tmp_path / "bad.trec", {"q0": {"zz": 1.0}}, "x")
    argv[argv.index(str(run_path))] = str(bad)
    assert mine_mod.main(argv) == 2
    assert "not in the corpus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mine_mod.main(["--beir-dir", str(root), "--negatives", "run", "--output", str(out)])


def test_pairs_input(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"query": "river question", "pos": "a river story"})
        + "\n"
        + json.dumps({"query": "city question", "pos": ["a city story", "another city story"]})
        + "\n"
        + json.dumps({"query": "music question", "pos": "a music story about a river"})
        + "\n"
    )
    data = from_pairs(pairs)
    assert data.queries == {"q1": "river question", "q2": "city question", "q3": "music question"}
    assert len(data.corpus) == 4 and data.positives["q2"] == ["p1", "p2"]
    out = tmp_path / "train.jsonl"
    assert mine_mod.main(["--pairs", str(pairs), "--stemmer", "none", "--output", str(out)]) == 0
    rows = read_jsonl(out)
    first = next(r for r in rows if r["query"] == "river question")
    assert first["neg"] == ["a music story about a river"]  # shares 'river' and 'story'
    (tmp_path / "bad.jsonl").write_text('{"query": "x", "pos": []}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'pos'"):
        from_pairs(tmp_path / "bad.jsonl")


def test_cli_non_utf8_run_and_output_to_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a regression would write a file named "-" here, not in the checkout
    root = write_beir(tmp_path / "beir")
    run_path = tmp_path / "dense.trec"
    run_path.write_bytes(b"q0 Q0 d1 1 2.0 t\nq0 Q0 d\xff2 2 1.0 t\n")
    argv = ["--beir-dir", str(root), "--negatives", "run", "--run", str(run_path)]
    assert mine_mod.main([*argv, "--output", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"{run_path}:2: not UTF-8: byte 0xff at byte offset 24 of the file" in err  # 17 + 7
    assert "Traceback" not in err and not (tmp_path / "out.jsonl").exists()
    bm25_argv = ["--beir-dir", str(root), "--negatives", "bm25", "--stemmer", "none", "--num-negs", "2"]
    assert mine_mod.main([*bm25_argv, "--output", "-"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 5 and rows[0]["query_id"] == "q0"
    assert " rows (" in captured.err  # the summary goes to stderr


def test_cli_none_writes_every_query_with_no_negatives(tmp_path):
    """--negatives none: the grid's in-batch-only arm (fine-tuned with --group_size 1)."""
    root = write_beir(tmp_path / "beir")
    out = tmp_path / "train.jsonl"
    assert mine_mod.main(["--beir-dir", str(root), "--negatives", "none", "--output", str(out)]) == 0
    rows = read_jsonl(out)
    assert [r["query_id"] for r in rows] == [f"q{i}" for i in range(5)]
    assert all(r["neg"] == [] and r["neg_ids"] == [] for r in rows)
    assert rows[4]["pos_ids"] == ["d4"]  # the score-0 judgement (d9) is not a positive
    from llara.finetune import check_rows
    from llara.rows import RowError

    check_rows(rows, str(out), group_size=1)  # accepted for in-batch negatives only
    with pytest.raises(RowError, match="no negatives but --group_size is 2"):
        check_rows(rows, str(out), group_size=2)


def test_cli_no_rows_is_bad_input(tmp_path, capsys):
    root = write_beir(tmp_path / "beir")
    argv = ["--beir-dir", str(root), "--negatives", "bm25", "--stemmer", "none", "--min-negs", "1000"]
    assert mine_mod.main([*argv, "--output", str(tmp_path / "train.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {root}: no rows mined (") and err.count("\n") == 1
    assert not (tmp_path / "train.jsonl").exists()
