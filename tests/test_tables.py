"""llara.tables on hand-built metrics JSONs: 5 queries, variants none/ebae/joint/bm25, two datasets.

nDCG@10 per query (q1..q5) and the means the tables must show:

    scifact   none  .2 .4 .6 .0 .3 -> .30   ebae .3 .5 .6 .1 .5 -> .40   joint .5 .5 .7 .2 .6 -> .50 (best)
              bm25  .4 .4 .4 .4 .4 -> .40
    nfcorpus  none  .1 .1 .1 .1 .1 -> .10   ebae = none       -> .10   joint .0 .2 .1 .3 .4 -> .20
              bm25  .6 .5 .4 .3 .2 -> .40 (best)
    average   none .20  ebae .25  joint .35  bm25 .40 (best)

recall@100 is 2 x nDCG, capped at 1. bm25 has no seed (-> -1), so it has no `none` partner in deltas.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from llara.io import DataError
from llara.tables import (
    bar_chart,
    deltas,
    load_runs,
    long_table,
    main,
    paired_tests,
    wide_markdown,
    wide_table,
    write_tables,
)

QIDS = ["q1", "q2", "q3", "q4", "q5"]
NDCG = {
    ("none", "scifact"): [0.2, 0.4, 0.6, 0.0, 0.3],
    ("ebae", "scifact"): [0.3, 0.5, 0.6, 0.1, 0.5],
    ("joint", "scifact"): [0.5, 0.5, 0.7, 0.2, 0.6],
    ("bm25", "scifact"): [0.4] * 5,
    ("none", "nfcorpus"): [0.1] * 5,
    ("ebae", "nfcorpus"): [0.1] * 5,
    ("joint", "nfcorpus"): [0.0, 0.2, 0.1, 0.3, 0.4],
    ("bm25", "nfcorpus"): [0.6, 0.5, 0.4, 0.3, 0.2],
}


def metrics_json(ndcg: list[float], **prov) -> dict:
    per_query = {q: {"ndcg@10": v, "recall@100": min(1.0, 2 * v)} for q, v in zip(QIDS, ndcg, strict=True)}
    agg = {m: float(np.mean([pq[m] for pq in per_query.values()])) for m in ("ndcg@10", "recall@100")}
    return {"metrics": agg, "num_queries": len(per_query), "per_query": per_query, "provenance": prov}


def write(path, obj) -> str:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path):
    out = []
    for (variant, dataset), ndcg in NDCG.items():
        prov = {"model": "tiny", "variant": variant, "dataset": dataset, "split": "test"}
        if variant != "bm25":
            prov["seed"] = 0
        out.append(write(tmp_path / f"{variant}_{dataset}.json", metrics_json(ndcg, **prov)))
    return out


def test_long_table(files):
    long = long_table(files)
    assert long.shape == (8 * 2, 9)
    assert list(long.columns) == [
        *"variant prompt_style seed dataset split model".split(),
        "metric",
        "value",
        "num_queries",
    ]
    assert set(long["prompt_style"]) == {"-"}
    row = long[(long.variant == "joint") & (long.dataset == "scifact") & (long.metric == "ndcg@10")]
    assert row["value"].item() == pytest.approx(0.5)
    assert row["num_queries"].item() == 5 and row["seed"].item() == 0
    assert long[long.variant == "bm25"]["seed"].eq(-1).all()
    rec = long[(long.variant == "bm25") & (long.dataset == "nfcorpus") & (long.metric == "recall@100")]
    assert rec["value"].item() == pytest.approx(np.mean([1.0, 1.0, 0.8, 0.6, 0.4]))


def test_wide_markdown_numbers_average_and_bold(files):
    means, counts = wide_table(long_table(files), "ndcg@10")
    assert list(means.columns) == ["none", "ebae", "joint", "bm25"]
    assert means.loc["nfcorpus", "joint"] == pytest.approx(0.2)
    md = wide_markdown(means, counts).splitlines()
    assert md[0] == "| ndcg@10 | none | ebae | joint | bm25 |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md[2:] if line.startswith("|")}
    assert rows["scifact"] == "| scifact | 0.3000 | 0.4000 | **0.5000** | 0.4000 |"
    assert rows["nfcorpus"] == "| nfcorpus | 0.1000 | 0.1000 | 0.2000 | **0.4000** |"
    assert rows["average"] == "| average | 0.2000 | 0.2500 | 0.3500 | **0.4000** |"


def test_wide_means_over_seeds_and_incomplete_average(tmp_path, files):
    extra = metrics_json([0.7] * 5, variant="joint", dataset="scifact", split="test", seed=1)
    extra2 = metrics_json([0.9] * 5, variant="ebar", dataset="scifact", split="test", seed=0)
    runs = [*files, write(tmp_path / "j1.json", extra), write(tmp_path / "ebar.json", extra2)]
    means, counts = wide_table(long_table(runs))
    assert list(means.columns) == ["none", "ebae", "ebar", "joint", "bm25"]
    assert means.loc["scifact", "joint"] == pytest.approx(0.6) and counts.loc["scifact", "joint"] == 2
    md = wide_markdown(means, counts)
    assert "| scifact | 0.3000 | 0.4000 | **0.9000** | 0.6000 (2 seeds) | 0.4000 |" in md
    assert "| nfcorpus | 0.1000 | 0.1000 | – | 0.2000 | **0.4000** |" in md
    # ebar lacks nfcorpus: no average; joint averages its seed mean .6 with .2; ties are both bold
    assert "| average | 0.2000 | 0.2500 | – | **0.4000** | **0.4000** |" in md
    assert bar_chart(means, tmp_path / "gap.png").read_bytes()[:4] == b"\x89PNG"  # a missing bar is fine


def test_deltas_against_hand_computed_and_scipy(files):
    table = deltas(files, "ndcg@10", "none").set_index(["variant", "dataset"])
    assert len(table) == 4  # ebae/joint x 2 datasets; bm25 has no seed-matched `none`
    assert sorted(table.attrs["unmatched"]) == sorted(f for f in files if "bm25" in f)
    assert table.loc[("ebae", "scifact"), "delta"] == pytest.approx(0.1)
    assert table.loc[("joint", "scifact"), "delta"] == pytest.approx(0.2)
    assert table.loc[("joint", "nfcorpus"), "delta"] == pytest.approx(0.1)
    assert table.loc[("joint", "scifact"), ["wins", "losses", "n_queries"]].tolist() == [5, 0, 5]
    d = np.array(NDCG[("joint", "nfcorpus")]) - np.array(NDCG[("none", "nfcorpus")])
    want = stats.wilcoxon(d, zero_method="zsplit", alternative="two-sided").pvalue
    assert table.loc[("joint", "nfcorpus"), "wilcoxon_p"] == pytest.approx(want)
    assert table.loc[("joint", "nfcorpus"), "ttest_p"] == pytest.approx(
        stats.ttest_rel(d + 0.1, [0.1] * 5).pvalue
    )
    same = table.loc[("ebae", "nfcorpus")]  # identical runs
    assert same["delta"] == 0.0 and same["wilcoxon_p"] == 1.0 and same["ttest_p"] == 1.0


def test_paired_tests_edge_cases():
    assert paired_tests(np.zeros(7)) == (1.0, 1.0)
    assert all(np.isnan(paired_tests(np.array([]))))
    p_w, p_t = paired_tests(np.full(5, 0.1))  # every query better by the same amount
    assert p_w == pytest.approx(0.0625) and p_t < 1e-6  # exact Wilcoxon 2/2**5; t: no spread
    assert paired_tests(np.array([0.2]))[0] == 1.0


def test_deltas_use_only_shared_queries_and_other_baseline(tmp_path):
    a = metrics_json([0.2, 0.4, 0.6, 0.0, 0.3], variant="none", dataset="x", split="test")
    b = metrics_json([0.3, 0.5, 0.6, 0.1, 0.5], variant="bm25", dataset="x", split="test")
    del a["per_query"]["q5"]
    runs = [write(tmp_path / "a.json", a), write(tmp_path / "b.json", b)]
    row = deltas(runs, "ndcg@10", baseline="bm25").iloc[0]
    assert row["variant"] == "none" and row["n_queries"] == 4
    assert row["delta"] == pytest.approx(-0.075)  # mean of -.1 -.1 0 -.1


def test_duplicate_and_malformed_files_are_named(tmp_path, files):
    dup = write(
        tmp_path / "dup.json",
        metrics_json([0.1] * 5, variant="joint", dataset="scifact", split="test", seed=0),
    )
    with pytest.raises(DataError, match=r"dup\.json: duplicate .*joint.*already in .*joint_scifact\.json"):
        load_runs([*files, dup])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json: not a readable metrics JSON"):
        long_table([bad])
    novariant = write(tmp_path / "novar.json", metrics_json([0.1] * 5, dataset="scifact"))
    with pytest.raises(DataError, match=r"novar\.json: provenance lacks 'variant'"):
        long_table([novariant])
    obj = metrics_json([0.1] * 5, variant="none", dataset="scifact")
    obj["per_query"]["q1"]["ndcg@10"] = "high"
    with pytest.raises(DataError, match=r"text\.json: a metric value is not a number"):
        long_table([write(tmp_path / "text.json", obj)])


def test_write_tables_outputs_and_png(tmp_path, files):
    paths = write_tables(files, tmp_path / "tables")
    assert sorted(p.name for p in paths.values()) == sorted(
        ["long.csv", "long.parquet", "ndcg10.md", "ndcg10.png", "deltas.csv", "deltas.md"]
    )
    assert paths["ndcg10.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "tables").iterdir() if p.name.startswith(".")]  # no temp left
    pd.testing.assert_frame_equal(
        pd.read_parquet(paths["long.parquet"]), long_table(files), check_dtype=False
    )
    assert len(pd.read_csv(paths["deltas.csv"])) == 4
    assert "bm25_scifact.json" in paths["deltas.md"].read_text()  # listed as unmatched


def test_cli_end_to_end(tmp_path, files, capsys):
    out = tmp_path / "results" / "tables"
    assert main(["--metrics", *files, "--output-dir", str(out), "--metric", "recall@100"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and f'pd.read_parquet("{out / "long.parquet"}")' in printed
    assert "| scifact | 0.5600 | 0.7600 | **0.8800** | 0.8000 |" in (out / "recall100.md").read_text()
    deltas_csv = pd.read_csv(out / "deltas.csv")
    assert set(deltas_csv["metric"]) == {"recall@100"}
    assert main(["--metrics", str(tmp_path / "missing.json"), "--output-dir", str(out)]) == 1
    assert "missing.json" in capsys.readouterr().err
