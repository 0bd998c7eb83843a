"""llara.tables on hand-built metrics JSONs.

Fixture ``files`` (one seed, written without grid paths: no stage): 5 queries, none/ebae/joint/bm25,
two datasets. nDCG@10 per query (q1..q5) and the means the tables must show:

    scifact   none  .2 .4 .6 .0 .3 -> .30   ebae .3 .5 .6 .1 .5 -> .40   joint .5 .5 .7 .2 .6 -> .50 (best)
              bm25  .4 .4 .4 .4 .4 -> .40
    nfcorpus  none  .1 .1 .1 .1 .1 -> .10   ebae = none       -> .10   joint .0 .2 .1 .3 .4 -> .20
              bm25  .6 .5 .4 .3 .2 -> .40 (best)
    average   none .20  ebae .25  joint .35  bm25 .40 (best)

recall@100 is 2 x nDCG, capped at 1. bm25 has no seed (-> -1), so it has no `none` partner in deltas.
Prompt kinds (query/passage) as the grid assigns them: none and joint ebar/ebae, ebae ebae/ebae; bm25 none.

Fixture ``grid`` (three seeds, the grid's paths: zero-shot and fine-tuned/bm25, MS MARCO) is described
where it is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from llara.io import DataError
from llara.tables import (
    bar_chart,
    cost_markdown,
    cost_table,
    delta_summary,
    deltas,
    holm,
    load_benchmark,
    load_run,
    load_runs,
    long_table,
    main,
    main_markdown,
    mean_ci,
    paired_tests,
    path_labels,
    summary_table,
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
T_975_2 = 4.302652729749462  # scipy.stats.t.ppf(0.975, 2): the 95% interval's factor with 3 seeds

PROMPT_KINDS = {
    "none": ("ebar", "ebae"),
    "ebae": ("ebae", "ebae"),
    "ebar": ("ebar", "ebar"),
    "joint": ("ebar", "ebae"),
}


def metrics_json(ndcg: list[float], qids=QIDS, **prov) -> dict:
    per_query = {q: {"ndcg@10": v, "recall@100": min(1.0, 2 * v)} for q, v in zip(qids, ndcg, strict=True)}
    agg = {m: float(np.mean([pq[m] for pq in per_query.values()])) for m in ("ndcg@10", "recall@100")}
    return {"metrics": agg, "num_queries": len(per_query), "per_query": per_query, "provenance": prov}


def write(path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path):
    out = []
    for (variant, dataset), ndcg in NDCG.items():
        prov = {"model": "tiny", "variant": variant, "dataset": dataset, "split": "test"}
        if variant != "bm25":
            prov["seed"] = 0
            prov["query_prompt"], prov["passage_prompt"] = PROMPT_KINDS[variant]
        out.append(write(tmp_path / f"{variant}_{dataset}.json", metrics_json(ndcg, **prov)))
    return out


def test_long_table(files):
    long = long_table(files)
    assert long.shape == (8 * 2, 13)
    assert list(long.columns) == [
        *"variant prompt_style seed stage negatives dataset split model query_prompt passage_prompt".split(),
        "metric",
        "value",
        "num_queries",
    ]
    prompts = long.drop_duplicates("variant").set_index("variant")[["query_prompt", "passage_prompt"]]
    assert prompts.loc["ebae"].tolist() == ["ebae", "ebae"] and prompts.loc["joint"].tolist() == [
        "ebar",
        "ebae",
    ]
    assert prompts.loc["bm25"].tolist() == ["-", "-"]
    assert set(long["prompt_style"]) == set(long["stage"]) == set(long["negatives"]) == {"-"}  # no grid path
    row = long[(long.variant == "joint") & (long.dataset == "scifact") & (long.metric == "ndcg@10")]
    assert row["value"].item() == pytest.approx(0.5)
    assert row["num_queries"].item() == 5 and row["seed"].item() == 0
    assert long[long.variant == "bm25"]["seed"].eq(-1).all()
    rec = long[(long.variant == "bm25") & (long.dataset == "nfcorpus") & (long.metric == "recall@100")]
    assert rec["value"].item() == pytest.approx(np.mean([1.0, 1.0, 0.8, 0.6, 0.4]))


def test_main_table_one_seed_says_n1_and_no_interval(files):
    table = summary_table(long_table(files), "ndcg@10")
    assert table.attrs["columns"] == ["nfcorpus", "scifact", "average"]
    joint = table[(table.variant == "joint")].set_index("column")
    assert joint.loc["nfcorpus", "mean"] == pytest.approx(0.2) and joint.loc[
        "average", "mean"
    ] == pytest.approx(0.35)
    assert (table["n"] == 1).all() and table["ci"].isna().all()  # one seed: no interval
    md = main_markdown(table).splitlines()
    assert md[0] == "ndcg@10: mean ± 95% CI over seeds (t-interval; n = seeds, n = 1: no interval)"
    assert md[2] == "| system | stage | prompts q/p | n | nfcorpus | scifact | average |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md[4:] if line.startswith("|")}
    assert list(rows) == ["none", "ebae", "joint", "bm25"]
    assert rows["none"] == "| none | – | ebar/ebae | 1 | 0.1000 | 0.3000 | 0.2000 |"
    assert rows["joint"] == "| joint | – | ebar/ebae | 1 | 0.2000 | **0.5000** | 0.3500 |"
    assert rows["bm25"] == "| bm25 | – | - | – | **0.4000** | 0.4000 | **0.4000** |"  # no seed: n –


def test_mean_ci_and_holm_by_hand():
    # seeds .3 .5 .4: mean .4, s = .1, half-width t(.975, 2) * .1 / sqrt(3)
    mean, half, n = mean_ci([0.3, 0.5, 0.4])
    assert (mean, n) == (pytest.approx(0.4), 3) and half == pytest.approx(T_975_2 * 0.1 / np.sqrt(3))
    assert half == pytest.approx(0.2484138, abs=1e-7)
    assert mean_ci([0.7])[:2] == (0.7, pytest.approx(np.nan, nan_ok=True)) and mean_ci([0.7])[2] == 1
    assert mean_ci([0.2, 0.2])[1] == 0.0 and mean_ci([])[2] == 0
    # Holm: sorted .01 .03 .04 -> x3, x2, x1 = .03 .06 .04 -> running max .03 .06 .06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.02, np.nan, 0.5]) == pytest.approx([0.04, np.nan, 0.5], nan_ok=True)  # m = 2
    assert holm([0.6, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).size == 0


# ---- the grid's layout: three seeds, both stages, MS MARCO ------------------------------------------
# scifact, queries q1..q4, nDCG@10 per seed (the seed's mean after the arrow):
#   zero-shot   none  s0 .0 .1 .2 .1 -> .1   s1 .1 .1 .1 .1 -> .1   s2 .2 .1 .0 .1 -> .1
#               ebae  s0 .2 .2 .2 .2 -> .2   s1 .1 .3 .2 .2 -> .2   s2 .3 .3 .3 .3 -> .3
#               joint every seed .1 .1 .2 .1 -> .125
#   fine-tuned  none  s0 .4 .4 .4 .4 -> .4   s1 .2 .4 .6 .4 -> .4   s2 .5 .5 .5 .5 -> .5
#   (bm25 neg.) ebae  s0 .3 x4      -> .3   s1 .5 x4      -> .5   s2 .4 x4      -> .4
#   bm25 (no seed) .6 x4
# msmarco (dev), q1..q4: fine-tuned none MRR@10 per seed .30 .40 .35 (every query), Recall@1000 1;
#   bm25 MRR@10 .2, Recall@1000 .9. Fine-tuned ebae and the zero-shot rows have no msmarco run.
Q4 = ["q1", "q2", "q3", "q4"]
GRID = {
    ("zeroshot", "none"): [[0, 0.1, 0.2, 0.1], [0.1] * 4, [0.2, 0.1, 0, 0.1]],
    ("zeroshot", "ebae"): [[0.2] * 4, [0.1, 0.3, 0.2, 0.2], [0.3] * 4],
    ("zeroshot", "joint"): [[0.1, 0.1, 0.2, 0.1]] * 3,
    ("finetuned/bm25", "none"): [[0.4] * 4, [0.2, 0.4, 0.6, 0.4], [0.5] * 4],
    ("finetuned/bm25", "ebae"): [[0.3] * 4, [0.5] * 4, [0.4] * 4],
}


def marco_json(mrr: float, recall: float, **prov) -> dict:
    values = {"ndcg@10": mrr, "mrr@10": mrr, "recall@100": recall / 2, "recall@1000": recall}
    per_query = {q: dict(values) for q in Q4}
    return {
        "metrics": dict(values),
        "per_query": per_query,
        "provenance": prov,
    }


@pytest.fixture
def grid(tmp_path):
    """Metrics files where the grid writes them (the stage and negatives are only in the path)."""
    root = tmp_path / "results" / "metrics"
    out = []
    for (stage, variant), seeds in GRID.items():
        for seed, values in enumerate(seeds):
            q, p = PROMPT_KINDS[variant]
            prov = {"variant": variant, "dataset": "scifact", "split": "test", "seed": seed,
                    "prompt_style": "released", "query_prompt": q, "passage_prompt": p}  # fmt: skip
            path = root / f"llara/released/{variant}/seed{seed}/{stage}/scifact/test.json"
            out.append(write(path, metrics_json(values, qids=Q4, **prov)))
    for seed, mrr in enumerate([0.3, 0.4, 0.35]):
        prov = {"variant": "none", "dataset": "msmarco", "split": "dev", "seed": seed, "prompt_style": "released",
                "query_prompt": "ebar", "passage_prompt": "ebae"}  # fmt: skip
        path = root / f"llara/released/none/seed{seed}/finetuned/bm25/msmarco/dev.json"
        out.append(write(path, marco_json(mrr, 1.0, **prov)))
    out.append(write(root / "baseline/bm25/scifact/test.json", metrics_json([0.6] * 4, qids=Q4, variant="bm25", dataset="scifact", split="test")))  # fmt: skip
    out.append(write(root / "baseline/bm25/msmarco/dev.json", marco_json(0.2, 0.9, variant="bm25", dataset="msmarco", split="dev")))  # fmt: skip
    return out


def test_path_labels_read_stage_and_negatives():
    assert path_labels("/x/llara/results/benchmarks/adapt/llara/paper/ebar/seed12.tsv") == {
        "variant": "ebar", "prompt_style": "paper", "seed": 12, "stage": "-", "negatives": "-"}  # fmt: skip
    got = path_labels("results/metrics/llara/released/ebae/seed1/zeroshot/scifact/test.json")
    assert got == {
        "variant": "ebae",
        "prompt_style": "released",
        "seed": 1,
        "stage": "zeroshot",
        "negatives": "-",
    }
    got = path_labels("results/benchmarks/finetune/llara/released/joint/seed0/finetuned/dense.tsv")
    assert (got["stage"], got["negatives"]) == ("finetuned", "dense")
    got = path_labels(
        "results/encode/checkpoint/LLARA-beir/finetuned/bm25/nq/corpus.shard0000-of-0008.meta.json"
    )
    assert got == {
        "variant": "LLARA-beir",
        "prompt_style": "-",
        "seed": -1,
        "stage": "finetuned",
        "negatives": "bm25",
    }
    got = path_labels("results/encode/baseline/minilm/scifact/corpus.shard0000-of-0001.meta.json")
    assert got == {"variant": "minilm", "prompt_style": "-", "seed": -1, "stage": "-", "negatives": "-"}
    with pytest.raises(
        DataError,
        match="no llara/<style>/<variant>/seed<N>/<stage>, retriever/<name>/seed<N>/<stage>, checkpoint",
    ):
        path_labels("results/benchmarks/adapt/joint.tsv")
    assert path_labels("results/benchmarks/adapt/joint.tsv", strict=False) == {}


def test_stage_from_the_path_or_the_provenance(grid, tmp_path):
    run = load_run(next(f for f in grid if "/finetuned/bm25/scifact" in f))
    assert (run["stage"], run["negatives"], run["seed"]) == ("finetuned", "bm25", 0)
    obj = metrics_json([0.1] * 5, variant="none", dataset="x", seed=0, stage="zeroshot")
    assert load_run(write(tmp_path / "flat.json", obj))["stage"] == "zeroshot"  # no grid path
    obj["provenance"]["stage"] = "pretrained"
    with pytest.raises(DataError, match="stage 'pretrained' is not one of zeroshot, finetuned"):
        load_run(write(tmp_path / "bad.json", obj))
    # the same (variant, seed, dataset) at two stages is two runs, not a duplicate
    assert len(load_runs(grid)) == len(grid)


def test_main_table_both_stages_intervals_and_msmarco(grid):
    table = summary_table(long_table(grid), "ndcg@10")
    assert table.attrs["columns"] == ["scifact", "average", "msmarco mrr@10", "msmarco recall@1000"]
    # runs of 100 documents per query cannot tell Recall@1000: the table shows Recall@100 instead
    shallow = summary_table(long_table(grid), "ndcg@10", top_k=100)
    assert shallow.attrs["columns"] == ["scifact", "average", "msmarco mrr@10", "msmarco recall@100"]
    bm25 = shallow[(shallow.variant == "bm25") & (shallow.column == "msmarco recall@100")]
    assert bm25["mean"].tolist() == [pytest.approx(0.45)]
    ebae_ft = table[(table.variant == "ebae") & (table.stage == "finetuned")].set_index("column")
    assert ebae_ft.loc["scifact", "mean"] == pytest.approx(0.4)
    assert ebae_ft.loc["scifact", "ci"] == pytest.approx(T_975_2 * 0.1 / np.sqrt(3))  # seeds .3 .5 .4
    md = main_markdown(table).splitlines()
    assert (
        md[2]
        == "| system | stage | prompts q/p | n | scifact | average | msmarco mrr@10 | msmarco recall@1000 |"
    )
    rows = [line for line in md[4:] if line.startswith("|")]
    assert rows == [
        "| none | zero-shot | ebar/ebae | 3 | 0.1000 ± 0.0000 | 0.1000 ± 0.0000 | – | – |",
        # seeds .2 .2 .3: mean .2333, s = .0577: half-width 4.3027 x .0577 / 1.732 = .1434
        "| ebae | zero-shot | ebae/ebae | 3 | 0.2333 ± 0.1434 | 0.2333 ± 0.1434 | – | – |",
        "| joint | zero-shot | ebar/ebae | 3 | 0.1250 ± 0.0000 | 0.1250 ± 0.0000 | – | – |",
        # MRR@10 seeds .30 .40 .35: .35 ± 4.3027 x .05 / 1.732 = .1242; not in the average
        "| none | fine-tuned | ebar/ebae | 3 | 0.4333 ± 0.1434 | 0.4333 ± 0.1434 | **0.3500 ± 0.1242** | **1.0000 ± 0.0000** |",
        "| ebae | fine-tuned | ebae/ebae | 3 | 0.4000 ± 0.2484 | 0.4000 ± 0.2484 | – | – |",
        "| bm25 | – | - | – | **0.6000** | **0.6000** | 0.2000 | 0.9000 |",
    ]
    assert "MS MARCO (dev): MRR@10 and Recall@1000" in "\n".join(md)


def test_main_table_average_needs_every_dataset_per_seed(tmp_path, grid):
    """A seed that lacks a dataset is left out of the average; a system lacking one has none."""
    extra = []
    for seed in (0, 1):  # nfcorpus for ebae zero-shot seeds 0 and 1 only
        prov = {
            "variant": "ebae",
            "dataset": "nfcorpus",
            "split": "test",
            "seed": seed,
            "prompt_style": "released",
        }
        path = tmp_path / f"results/metrics/llara/released/ebae/seed{seed}/zeroshot/nfcorpus/test.json"
        extra.append(write(path, metrics_json([0.5] * 4, qids=Q4, **prov)))
    table = summary_table(long_table([*grid, *extra])).set_index(["variant", "stage", "column"])
    # seeds 0 and 1: (.2 + .5) / 2 = .35 each; seed 2 has no nfcorpus: n = 2
    assert table.loc[("ebae", "zeroshot", "average"), ["mean", "n"]].tolist() == [pytest.approx(0.35), 2]
    assert table.loc[("ebae", "zeroshot", "average"), "ci"] == 0.0
    assert table.loc[("ebae", "zeroshot", "nfcorpus"), "n"] == 2
    assert np.isnan(table.loc[("none", "zeroshot", "average"), "mean"])  # none has no nfcorpus
    md = main_markdown(summary_table(long_table([*grid, *extra])))
    assert (
        "| ebae | zero-shot | ebae/ebae | 3 | **0.5000 ± 0.0000 (n=2)** | 0.2333 ± 0.1434 | **0.3500 ± 0.0000 (n=2)** |"
        in md
    )


def test_delta_summary_intervals_pooled_tests_and_holm(grid):
    table = delta_summary(grid, "ndcg@10").set_index(["stage", "variant", "dataset"])
    assert len(table) == 3  # ebae and joint zero-shot, ebae fine-tuned (joint has no fine-tuned runs)
    zs = table.loc[("zeroshot", "ebae", "scifact")]
    # per-seed deltas .1 .1 .2
    assert zs["delta"] == pytest.approx(0.4 / 3) and zs["delta_ci"] == pytest.approx(0.1434217576583154)
    assert (zs["n_seeds"], zs["n_queries"], zs["wins"], zs["losses"]) == (3, 4, 4, 0)
    # the tests see each query's difference averaged over the seeds
    d_ebae = np.mean([[0.2, 0.1, 0, 0.1], [0, 0.2, 0.1, 0.1], [0.1, 0.2, 0.3, 0.2]], axis=0)
    d_joint = np.mean([[0.1, 0, 0, 0], [0, 0, 0.1, 0], [-0.1, 0, 0.2, 0]], axis=0)  # = 0 0 .1 0
    w = [stats.wilcoxon(d, zero_method="zsplit").pvalue for d in (d_ebae, d_joint)]
    t = [stats.ttest_1samp(d, 0).pvalue for d in (d_ebae, d_joint)]
    assert zs["wilcoxon_p"] == pytest.approx(w[0]) and zs["ttest_p"] == pytest.approx(t[0])
    jt = table.loc[("zeroshot", "joint", "scifact")]
    assert jt["wilcoxon_p"] == pytest.approx(w[1]) and (jt["wins"], jt["losses"]) == (1, 0)
    # Holm over the two variants compared at zero-shot: the smaller p x 2, the larger x 1 (monotone)
    lo, hi = sorted(w)
    holm_w = {lo: min(1, 2 * lo), hi: max(min(1, 2 * lo), hi)}
    assert zs["wilcoxon_p_holm"] == pytest.approx(holm_w[w[0]]) and jt["wilcoxon_p_holm"] == pytest.approx(
        holm_w[w[1]]
    )
    assert zs["ttest_p_holm"] == pytest.approx(holm(t)[0]) and zs["family_size"] == jt["family_size"] == 2
    ft = table.loc[("finetuned", "ebae", "scifact")]
    assert ft["delta"] == pytest.approx(-0.1 / 3) and ft["delta_ci"] == pytest.approx(0.2868435153166308)
    assert (ft["wins"], ft["losses"], ft["family_size"]) == (1, 3, 1)  # alone at its stage: Holm = raw
    assert ft["wilcoxon_p_holm"] == ft["wilcoxon_p"]
    assert table.attrs["unmatched"] == []  # the baselines are not compared (bm25 has no `none` partner)
    assert "bm25" not in set(table.index.get_level_values("variant"))


def test_deltas_markdown_and_per_seed(grid, tmp_path):
    paths = write_tables(grid, tmp_path / "tables")
    md = paths["deltas.md"].read_text()
    assert (
        "| zero-shot | ebae | ebae/ebae | scifact | ndcg@10 | 3 | 4 | 0.1000 | 0.2333 | +0.1333 ± 0.1434 | 4/0 |"
        in md
    )
    assert (
        "| fine-tuned | ebae | ebae/ebae | scifact | ndcg@10 | 3 | 4 | 0.4333 | 0.4000 | -0.0333 ± 0.2868 | 1/3 |"
        in md
    )
    assert "Not compared" not in md  # the baselines are not compared with `none`
    assert "paper's comparison" not in md  # no RepLLaMA in this grid: the ablation only
    per_seed = pd.read_csv(paths["deltas_per_seed.csv"])
    assert len(per_seed) == 3 * 3  # 3 comparisons x 3 seeds
    row = per_seed[(per_seed.variant == "ebae") & (per_seed.stage == "finetuned") & (per_seed.seed == 1)]
    assert row["delta"].item() == pytest.approx(0.1)  # .5 - .4
    summary = pd.read_csv(paths["summary.csv"])
    assert set(summary["column"]) == {"scifact", "average", "msmarco mrr@10", "msmarco recall@1000"}
    assert "**0.3500 ± 0.1242**" in paths["ndcg10.md"].read_text()


def test_msmarco_deltas_use_mrr(tmp_path, grid):
    extra = []
    for seed, mrr in enumerate([0.2, 0.5, 0.35]):
        prov = {
            "variant": "ebae",
            "dataset": "msmarco",
            "split": "dev",
            "seed": seed,
            "prompt_style": "released",
        }
        path = tmp_path / f"results/metrics/llara/released/ebae/seed{seed}/finetuned/bm25/msmarco/dev.json"
        extra.append(write(path, marco_json(mrr, 1.0, **prov)))
    table = delta_summary([*grid, *extra]).set_index(["stage", "variant", "dataset"])
    row = table.loc[("finetuned", "ebae", "msmarco")]
    assert row["metric"] == "mrr@10" and row["delta"] == pytest.approx(0.0)  # -.1 +.1 0
    assert row["family_size"] == 1  # its own family: another dataset
    assert table.loc[("finetuned", "ebae", "scifact"), "family_size"] == 1


def test_wide_means_over_seeds_and_incomplete_average(tmp_path, files):
    extra = metrics_json([0.7] * 5, variant="joint", dataset="scifact", split="test", seed=1)  # no prompts
    extra2 = metrics_json(
        [0.9] * 5, variant="ebar", dataset="scifact", split="test", seed=0, query_prompt="ebae"
    )
    runs = [*files, write(tmp_path / "j1.json", extra), write(tmp_path / "ebar.json", extra2)]
    table = summary_table(long_table(runs))
    md = main_markdown(table)
    # joint: seeds 0 and 1 on scifact (.5, .7): .6 ± t(.975, 1) x .1414 / 1.414 = 12.706 x .1;
    # nfcorpus only seed 0 (n=1); its average: only seed 0 has both datasets
    half = stats.t.ppf(0.975, 1) * np.std([0.5, 0.7], ddof=1) / np.sqrt(2)
    assert f"| joint | – | ebar/ebae | 2 | 0.2000 (n=1) | 0.6000 ± {half:.4f} | 0.3500 (n=1) |" in md
    # ebar lacks nfcorpus: no average; its prompt kinds are half missing and shown as such
    assert "| ebar | – | ebae/- | 1 | – | **0.9000** | – |" in md
    assert bar_chart(table, tmp_path / "gap.png").read_bytes()[:4] == b"\x89PNG"  # a missing bar is fine


def test_deltas_against_hand_computed_and_scipy(files):
    table = deltas(files, "ndcg@10", "none").set_index(["variant", "dataset"])
    assert len(table) == 4  # ebae/joint x 2 datasets; bm25 has no seed-matched `none`
    assert table.attrs["unmatched"] == []  # bm25 is a baseline: not compared, not unmatched
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
    assert table.loc[("ebae", "scifact"), ["query_prompt", "passage_prompt"]].tolist() == ["ebae", "ebae"]
    same = table.loc[("ebae", "nfcorpus")]  # identical runs
    assert same["delta"] == 0.0 and same["wilcoxon_p"] == 1.0 and same["ttest_p"] == 1.0
    # one seed: the summary's delta is the seed's, with no interval, and the same tests
    summary = delta_summary(files).set_index(["variant", "dataset"])
    assert summary.loc[("joint", "nfcorpus"), "delta"] == pytest.approx(0.1)
    assert np.isnan(summary.loc[("joint", "nfcorpus"), "delta_ci"])
    assert summary.loc[("joint", "nfcorpus"), "wilcoxon_p"] == pytest.approx(want)
    # Holm across ebae and joint on nfcorpus: ebae's p is 1 (identical runs)
    assert summary.loc[("joint", "nfcorpus"), "wilcoxon_p_holm"] == pytest.approx(min(1, 2 * want))
    assert summary.loc[("ebae", "nfcorpus"), "wilcoxon_p_holm"] == 1.0


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
    with pytest.raises(DataError, match=r"novar\.json: neither a grid path .* nor a provenance 'variant'"):
        long_table([novariant])
    obj = metrics_json([0.1] * 5, variant="none", dataset="scifact")
    obj["per_query"]["q1"]["ndcg@10"] = "high"
    with pytest.raises(DataError, match=r"text\.json: a metric value is not a number"):
        long_table([write(tmp_path / "text.json", obj)])


def test_write_tables_outputs_and_png(tmp_path, files):
    paths = write_tables(files, tmp_path / "tables")
    assert sorted(p.name for p in paths.values()) == sorted(
        ["long.csv", "long.parquet", "ndcg10.md", "ndcg10.png", "summary.csv", "deltas.csv", "deltas.md"]
        + ["deltas_per_seed.csv"]
    )
    assert paths["ndcg10.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "tables").iterdir() if p.name.startswith(".")]  # no temp left
    pd.testing.assert_frame_equal(
        pd.read_parquet(paths["long.parquet"]), long_table(files), check_dtype=False
    )
    assert len(pd.read_csv(paths["deltas.csv"])) == 4
    assert "bm25" not in paths["deltas.md"].read_text()  # a baseline: in the main table, not compared


def test_cli_end_to_end(tmp_path, files, capsys):
    out = tmp_path / "results" / "tables"
    assert main(["--metrics", *files, "--output-dir", str(out), "--metric", "recall@100"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and f'pd.read_parquet("{out / "long.parquet"}")' in printed
    assert (
        "| joint | – | ebar/ebae | 1 | 0.4000 | **0.8800** | 0.6400 |" in (out / "recall100.md").read_text()
    )
    deltas_csv = pd.read_csv(out / "deltas.csv")
    assert set(deltas_csv["metric"]) == {"recall@100"}
    assert (
        main(["--metrics", str(tmp_path / "missing.json"), "--output-dir", str(out)]) == 2
    )  # bad input: io.BAD_INPUT
    assert "missing.json" in capsys.readouterr().err


# ---- cost: benchmark TSVs (Snakemake's format), the launcher's job records, encode meta ------------
BENCH_HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(path, wall_s, cpu_s, rss_mb="512.0", job=None):
    """A Snakemake benchmark TSV at ``path`` (and the launcher's job record beside it when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        BENCH_HEAD + f"{wall_s}\t0:00:00\t{rss_mb}\t900.0\t400.0\t450.0\t1.0\t2.0\t90.0\t{cpu_s}\n"
    )
    if job is not None:
        path.with_name(path.name.replace(".tsv", ".job.json")).write_text(json.dumps(job))
    return str(path)


def local_job(gpus, wall_s):
    return {"cluster": "local", "gpus": gpus, "gpu_hours": gpus * wall_s / 3600, "elapsed_s": wall_s,
            "cpu_hours": None, "source": "launcher", "note": "local job"}  # fmt: skip


@pytest.fixture
def grid_files(tmp_path):
    """Metrics of none/ebae/joint [released] seed 0 and bm25 on one dataset, laid out as the grid
    writes them, with adaptation/fine-tuning benchmarks and corpus encode metas.

    nDCG@10: none .30, ebae .40, joint .50, bm25 .40. Adaptation GPU-hours (1 GPU): none 0.01,
    ebae 0.5, joint 0.8; fine-tuning 0.25 each. Gains per adaptation GPU-hour: ebae .10/.5 = 0.2,
    joint .20/.8 = 0.25. Passages/s of joint: (100 + 50) rows in (4 + 6) s = 15.0.
    """
    root = tmp_path / "results"
    metrics, benchmarks, metas = [], [], []
    ndcg = {"none": 0.3, "ebae": 0.4, "joint": 0.5, "bm25": 0.4}
    adapt_h = {"none": 0.01, "ebae": 0.5, "joint": 0.8}
    for variant, value in ndcg.items():
        llara = variant != "bm25"
        system = f"llara/released/{variant}/seed0" if llara else f"baseline/{variant}"
        prov = {"variant": variant, "dataset": "scifact", "split": "test"}
        if llara:
            q, p = PROMPT_KINDS[variant]
            prov |= {"prompt_style": "released", "seed": 0, "query_prompt": q, "passage_prompt": p}
        path = root / "metrics" / system / "scifact" / "test.json"
        path.parent.mkdir(parents=True)
        metrics.append(write(path, metrics_json([value] * 5, **prov)))
        if not llara:
            continue
        for stage, hours in (("adapt", adapt_h[variant]), ("finetune", 0.25)):
            wall = hours * 3600
            f = root / "benchmarks" / stage / f"{system}.tsv"
            benchmarks.append(bench(f, wall, 2 * wall, job=local_job(1, wall)))
        for shard, (rows, sec) in enumerate([(100, 4.0), (50, 6.0)]):
            meta = root / "encode" / system / "scifact" / f"corpus.shard{shard:04d}-of-0002.meta.json"
            meta.parent.mkdir(parents=True, exist_ok=True)
            metas.append(write(meta, {"rows": rows, "seconds": sec, "dim": 8}))
    # other stages are measured too but are not cost columns
    benchmarks.append(
        bench(root / "benchmarks" / "search" / "llara/released/joint/seed0/scifact/test.tsv", 1, 1)
    )
    return metrics, benchmarks, metas


def test_cost_table_and_markdown_with_gpus(grid_files):
    metrics, benchmarks, metas = grid_files
    cost = cost_table(load_runs(metrics), benchmarks, metas).set_index("variant")
    assert list(cost.index) == ["none", "ebae", "joint", "bm25"]
    assert cost.loc["joint", "adapt_gpu_hours"] == pytest.approx(0.8)
    assert cost.loc["joint", "finetune_gpu_hours"] == pytest.approx(0.25)
    assert cost.loc["joint", "adapt_cpu_hours"] == pytest.approx(1.6)  # benchmark cpu_time
    assert cost.loc["joint", "adapt_wall_hours"] == pytest.approx(0.8)
    assert cost.loc["joint", "adapt_max_rss_mb"] == pytest.approx(512.0)
    assert cost.loc["joint", "encode_passages_per_s"] == pytest.approx(15.0)
    assert cost.loc["joint", ["query_prompt", "passage_prompt"]].tolist() == ["ebar", "ebae"]
    assert np.isnan(cost.loc["bm25", "adapt_gpu_hours"]) and np.isnan(
        cost.loc["bm25", "encode_passages_per_s"]
    )
    md = cost_markdown(cost.reset_index()).splitlines()
    assert md[0] == "Cost of each system and ndcg@10 gained against `none` per GPU-h of adaptation"
    assert md[2] == (
        "| system | prompts q/p | adaptation GPU-h | fine-tuning GPU-h | corpus passages/s | ndcg@10 (avg) "
        "| Δ vs none | Δ per adaptation GPU-h |"
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md[4:] if line.startswith("|")}
    assert (
        rows["none [released]"] == "| none [released] | ebar/ebae | 0.0100 | 0.2500 | 15.0 | 0.3000 | – | – |"
    )
    assert (
        rows["ebae [released]"]
        == "| ebae [released] | ebae/ebae | 0.5000 | 0.2500 | 15.0 | 0.4000 | +0.1000 | +0.2 |"
    )
    assert (
        rows["joint [released]"]
        == "| joint [released] | ebar/ebae | 0.8000 | 0.2500 | 15.0 | 0.5000 | +0.2000 | +0.25 |"
    )
    # a baseline: a row, no hours, and no delta against `none` (deltas.md does not compare it either)
    assert rows["bm25"] == "| bm25 | - | – | – | – | 0.4000 | – | – |"


def test_cost_without_gpus_uses_cpu_hours_and_says_so(tmp_path, grid_files):
    metrics, benchmarks, metas = grid_files
    for f in benchmarks:  # the same jobs without a GPU
        job = Path(f).with_name(Path(f).name.replace(".tsv", ".job.json"))
        if job.exists():
            job.write_text(json.dumps(local_job(0, 1.0)))
    md = cost_markdown(cost_table(load_runs(metrics), benchmarks, metas))
    assert (
        "| adaptation CPU-h / wall-h (no GPU: CPU-hours) | fine-tuning CPU-h / wall-h (no GPU: CPU-hours) |"
        in md
    )
    assert "per CPU-h of adaptation" in md and "GPU-h" not in md
    # joint: CPU time 2 x 0.8 h = 1.6 CPU-h in 0.8 h; gain .2 / 1.6 = 0.125 per CPU-hour
    assert (
        "| joint [released] | ebar/ebae | 1.6000 / 0.8000 | 0.5000 / 0.2500 | 15.0 | 0.5000 | +0.2000 | +0.125 |"
        in md
    )


def test_cost_on_slurm_takes_sacct_and_says_why_when_it_is_missing(grid_files):
    metrics, benchmarks, metas = grid_files
    adapt = [f for f in benchmarks if "/adapt/" in f]
    sacct = {"cluster": "slurm", "source": "sacct", "gpus": 2, "gpu_hours": 3.0, "elapsed_s": 5400,
             "cpu_hours": 24.0, "note": None}  # fmt: skip
    missing = {"cluster": "slurm", "source": None, "gpus": None, "gpu_hours": None, "elapsed_s": None,
               "cpu_hours": None, "note": "sacct not found on PATH (no SLURM accounting client on this machine)"}  # fmt: skip
    for f in adapt:
        record = missing if "/none/" in f else sacct
        Path(f.replace(".tsv", ".job.json")).write_text(json.dumps(record))
    cost = cost_table(load_runs(metrics), benchmarks, metas).set_index("variant")
    # the benchmark timed only the launcher on the login node: sacct's numbers replace it
    assert cost.loc["ebae", "adapt_gpu_hours"] == 3.0 and cost.loc["ebae", "adapt_cpu_hours"] == 24.0
    assert np.isnan(cost.loc["ebae", "adapt_max_rss_mb"])  # the benchmark's memory is the login node's
    assert cost.loc["ebae", "adapt_wall_hours"] == pytest.approx(1.5)
    assert cost.loc["ebae", "adapt_cost_source"] == "sacct"
    assert np.isnan(cost.loc["none", "adapt_gpu_hours"]) and np.isnan(cost.loc["none", "adapt_wall_hours"])
    md = cost_markdown(cost.reset_index())
    assert "| none [released] | ebar/ebae | – | 0.2500 |" in md
    assert "| joint [released] | ebar/ebae | 3.0000 | 0.2500 | 15.0 | 0.5000 | +0.2000 | +0.0667 |" in md
    assert "Notes from the job records: sacct not found on PATH" in md


def test_cost_prefers_what_the_job_measured_itself(grid_files):
    _, benchmarks, _ = grid_files
    f = next(b for b in benchmarks if "/adapt/llara/released/joint/" in b)
    job = local_job(1, 2880.0) | {"command_cpu_s": 1800.0, "command_max_rss_mb": 2048.0}
    Path(f.replace(".tsv", ".job.json")).write_text(json.dumps(job))
    b = load_benchmark(f)
    assert (
        b["cpu_hours"] == pytest.approx(0.5) and b["max_rss_mb"] == 2048.0
    )  # not the benchmark's 1.6 h, 512 MB
    assert b["wall_hours"] == pytest.approx(0.8)  # the benchmark's wall time locally


def test_write_tables_with_cost_and_cli(tmp_path, grid_files, capsys):
    metrics, benchmarks, metas = grid_files
    out = tmp_path / "tables"
    argv = [
        "--metrics",
        *metrics,
        "--benchmarks",
        *benchmarks,
        "--encode-meta",
        *metas,
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    assert (out / "cost.md").read_text().startswith("Cost of each system")
    cost = pd.read_csv(out / "cost.csv")
    assert cost.set_index("variant").loc["ebae", "adapt_gpu_hours"] == pytest.approx(0.5)
    assert (
        "| – | ebae | ebae/ebae | scifact | ndcg@10 | 1 | 5 | 0.3000 | 0.4000 | +0.1000 | 5/0 |"
        in (out / "deltas.md").read_text()
    )
    bad = tmp_path / "results" / "benchmarks" / "adapt" / "llara" / "released" / "ebar" / "seed0.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("not\ta benchmark\n")
    assert main([*argv, "--benchmarks", str(bad)]) == 2
    assert "seed0.tsv: not a readable Snakemake benchmark" in capsys.readouterr().err


def test_cost_with_stages_and_negatives(tmp_path):
    """Zero-shot rows carry their model's adaptation hours and no fine-tuning; each fine-tuned row the
    fine-tuning job of its negatives. nDCG@10: none zero-shot .1, fine-tuned/bm25 .3, /none .2; ebae
    zero-shot .2, fine-tuned/bm25 .5, /none .3. Adaptation GPU-hours: none .01, ebae .5; fine-tuning:
    bm25 .25, none .125."""
    root = tmp_path / "results"
    metrics, benchmarks = [], []
    ndcg = {("none", "zeroshot"): 0.1, ("none", "finetuned/bm25"): 0.3, ("none", "finetuned/none"): 0.2,
            ("ebae", "zeroshot"): 0.2, ("ebae", "finetuned/bm25"): 0.5, ("ebae", "finetuned/none"): 0.3}  # fmt: skip
    for (variant, stage), value in ndcg.items():
        q, p = PROMPT_KINDS[variant]
        prov = {"variant": variant, "dataset": "scifact", "split": "test", "prompt_style": "released", "seed": 0,
                "query_prompt": q, "passage_prompt": p}  # fmt: skip
        path = root / "metrics" / f"llara/released/{variant}/seed0/{stage}/scifact/test.json"
        metrics.append(write(path, metrics_json([value] * 5, **prov)))
    for variant, hours in (("none", 0.01), ("ebae", 0.5)):
        f = root / "benchmarks" / "adapt" / f"llara/released/{variant}/seed0.tsv"
        benchmarks.append(bench(f, hours * 3600, 1, job=local_job(1, hours * 3600)))
        for negatives, ft in (("bm25", 0.25), ("none", 0.125)):
            f = root / "benchmarks" / "finetune" / f"llara/released/{variant}/seed0/finetuned/{negatives}.tsv"
            benchmarks.append(bench(f, ft * 3600, 1, job=local_job(1, ft * 3600)))
    cost = cost_table(load_runs(metrics), benchmarks).set_index(["variant", "stage", "negatives"])
    assert len(cost) == 6
    assert cost.loc[("ebae", "zeroshot", "-"), "adapt_gpu_hours"] == pytest.approx(0.5)
    assert np.isnan(cost.loc[("ebae", "zeroshot", "-"), "finetune_gpu_hours"])
    assert cost.loc[("ebae", "finetuned", "none"), "finetune_gpu_hours"] == pytest.approx(0.125)
    assert cost.loc[("ebae", "finetuned", "bm25"), "finetune_gpu_hours"] == pytest.approx(0.25)
    md = cost_markdown(cost.reset_index())
    # each against `none` at the same stage and negatives, per adaptation GPU-hour of ebae (.5)
    assert "| ebae [released] zero-shot | ebae/ebae | 0.5000 | – | – | 0.2000 | +0.1000 | +0.2 |" in md
    assert (
        "| ebae [released] fine-tuned, bm25 negatives | ebae/ebae | 0.5000 | 0.2500 | – | 0.5000 | +0.2000 | +0.4 |"
        in md
    )
    assert (
        "| none [released] fine-tuned, none negatives | ebar/ebae | 0.0100 | 0.1250 | – | 0.2000 | – | – |"
        in md
    )


def test_cost_of_a_retriever_shows_its_fine_tuning_and_no_adaptation(tmp_path):
    """RepLLaMA (retriever/repllama/seed0/..., no prompt style, no adaptation): its fine-tuned row has
    the fine-tuning job's hours (it read "–" before), its zero-shot row none, and no adaptation."""
    root = tmp_path / "results"
    metrics, benchmarks = [], []
    for stage, value in (("zeroshot", 0.1), ("finetuned/bm25", 0.4)):
        prov = {"variant": "repllama", "dataset": "scifact", "split": "test", "seed": 0}
        path = root / "metrics" / f"retriever/repllama/seed0/{stage}/scifact/test.json"
        metrics.append(write(path, metrics_json([value] * 5, **prov)))
    f = root / "benchmarks" / "finetune" / "retriever/repllama/seed0/finetuned/bm25.tsv"
    benchmarks.append(bench(f, 0.25 * 3600, 1, job=local_job(1, 0.25 * 3600)))
    md = cost_markdown(cost_table(load_runs(metrics), benchmarks))
    assert "| repllama fine-tuned | - | – | 0.2500 | – | 0.4000 | – | – |" in md
    assert "| repllama zero-shot | - | – | – | – | 0.1000 | – | – |" in md


def test_deltas_against_repllama_the_papers_comparison(grid, tmp_path):
    """A RepLLaMA run per seed and stage (retriever/repllama/seed<N>/<stage>, no prompt style): every
    variant is compared with it at the same seed and stage, beside the comparison with `none`."""
    root = tmp_path / "results" / "metrics"
    rep = {"zeroshot": [0.05, 0.15, 0.1, 0.1], "finetuned/bm25": [0.3, 0.5, 0.4, 0.4]}
    files = list(grid)
    for stage, values in rep.items():
        for seed in range(3):
            prov = {"variant": "repllama", "dataset": "scifact", "split": "test", "seed": seed}
            path = root / f"retriever/repllama/seed{seed}/{stage}/scifact/test.json"
            files.append(write(path, metrics_json(values, qids=Q4, **prov)))
    paths = write_tables(files, tmp_path / "tables")
    md = paths["deltas.md"].read_text()
    ablation, claim = md.split("The paper's comparison: each variant against `repllama`")
    assert "The ablation: each variant against `none`" in ablation
    table = pd.read_csv(paths["deltas.csv"])
    against = table[table["baseline"] == "repllama"].set_index(["stage", "variant", "dataset"])
    # ebae, fine-tuned: seeds (.3, .5, .4) against .4 on every query: deltas -.1, .1, 0 -> mean 0
    ft = against.loc[("finetuned", "ebae", "scifact")]
    assert ft["delta"] == pytest.approx(0.0, abs=1e-12) and ft["n_seeds"] == 3
    # none, zero-shot: per seed mean(none) - mean(repllama) = .1 - .1, .1 - .1, .1 - .1
    zs = against.loc[("zeroshot", "none", "scifact")]
    assert zs["delta"] == pytest.approx(0.0, abs=1e-12)
    # ebae zero-shot: means .2, .2, .3 against .1: +.1, +.1, +.2 -> 0.1333; query q1 averaged over the
    # seeds: (.2 + .1 + .3) / 3 - .05 = .15
    ez = against.loc[("zeroshot", "ebae", "scifact")]
    assert ez["delta"] == pytest.approx(0.4 / 3) and ez["wins"] == 4
    assert ez["family_size"] == 3  # none, ebae and joint against RepLLaMA at zero-shot: one Holm family
    assert "| zero-shot | ebae | ebae/ebae | scifact | ndcg@10 | 3 | 4 | 0.1000 | 0.2333 | +0.1333" in claim
    assert set(table["baseline"]) == {"none", "repllama"}
    # the ablation is unchanged by the RepLLaMA rows
    alone = pd.read_csv(write_tables(grid, tmp_path / "alone")["deltas.csv"])
    pd.testing.assert_frame_equal(table[table["baseline"] == "none"].reset_index(drop=True), alone)
