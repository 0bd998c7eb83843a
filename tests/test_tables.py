"""llara.tables on hand-built metrics JSONs: 5 queries, variants none/ebae/joint/bm25, two datasets.

nDCG@10 per query (q1..q5) and the means the tables must show:

    scifact   none  .2 .4 .6 .0 .3 -> .30   ebae .3 .5 .6 .1 .5 -> .40   joint .5 .5 .7 .2 .6 -> .50 (best)
              bm25  .4 .4 .4 .4 .4 -> .40
    nfcorpus  none  .1 .1 .1 .1 .1 -> .10   ebae = none       -> .10   joint .0 .2 .1 .3 .4 -> .20
              bm25  .6 .5 .4 .3 .2 -> .40 (best)
    average   none .20  ebae .25  joint .35  bm25 .40 (best)

recall@100 is 2 x nDCG, capped at 1. bm25 has no seed (-> -1), so it has no `none` partner in deltas.
Prompt kinds (query/passage) as the grid assigns them: none and joint ebar/ebae, ebae ebae/ebae; bm25 none.
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


PROMPT_KINDS = {
    "none": ("ebar", "ebae"),
    "ebae": ("ebae", "ebae"),
    "ebar": ("ebar", "ebar"),
    "joint": ("ebar", "ebae"),
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
            prov["query_prompt"], prov["passage_prompt"] = PROMPT_KINDS[variant]
        out.append(write(tmp_path / f"{variant}_{dataset}.json", metrics_json(ndcg, **prov)))
    return out


def test_long_table(files):
    long = long_table(files)
    assert long.shape == (8 * 2, 11)
    assert list(long.columns) == [
        *"variant prompt_style seed dataset split model query_prompt passage_prompt".split(),
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
    assert md[2] == "| prompts (query/passage) | ebar/ebae | ebae/ebae | ebar/ebae | - |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md[3:] if line.startswith("|")}
    assert rows["scifact"] == "| scifact | 0.3000 | 0.4000 | **0.5000** | 0.4000 |"
    assert rows["nfcorpus"] == "| nfcorpus | 0.1000 | 0.1000 | 0.2000 | **0.4000** |"
    assert rows["average"] == "| average | 0.2000 | 0.2500 | 0.3500 | **0.4000** |"


def test_wide_means_over_seeds_and_incomplete_average(tmp_path, files):
    extra = metrics_json([0.7] * 5, variant="joint", dataset="scifact", split="test", seed=1)  # no prompts
    extra2 = metrics_json(
        [0.9] * 5, variant="ebar", dataset="scifact", split="test", seed=0, query_prompt="ebae"
    )
    runs = [*files, write(tmp_path / "j1.json", extra), write(tmp_path / "ebar.json", extra2)]
    means, counts = wide_table(long_table(runs))
    assert list(means.columns) == ["none", "ebae", "ebar", "joint", "bm25"]
    assert means.loc["scifact", "joint"] == pytest.approx(0.6) and counts.loc["scifact", "joint"] == 2
    md = wide_markdown(means, counts)
    assert "| scifact | 0.3000 | 0.4000 | **0.9000** | 0.6000 (2 seeds) | 0.4000 |" in md
    assert "| nfcorpus | 0.1000 | 0.1000 | – | 0.2000 | **0.4000** |" in md
    # ebar lacks nfcorpus: no average; joint averages its seed mean .6 with .2; ties are both bold
    assert "| average | 0.2000 | 0.2500 | – | **0.4000** | **0.4000** |" in md
    # joint's seed 1 was scored without prompt kinds: the column shows the ones it has; ebar's are
    # half missing and shown as such
    assert "| prompts (query/passage) | ebar/ebae | ebae/ebae | ebae/- | ebar/ebae | - |" in md
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
    assert table.loc[("ebae", "scifact"), ["query_prompt", "passage_prompt"]].tolist() == ["ebae", "ebae"]
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


def test_path_labels():
    from llara.tables import path_labels

    assert path_labels("/x/llara/results/benchmarks/adapt/llara/paper/ebar/seed12.tsv") == {
        "variant": "ebar", "prompt_style": "paper", "seed": 12}  # fmt: skip
    got = path_labels("results/encode/baseline/minilm/scifact/corpus.shard0000-of-0001.meta.json")
    assert got == {"variant": "minilm", "prompt_style": "-", "seed": -1}
    with pytest.raises(DataError, match="no llara/<style>/<variant>/seed<N> or baseline/<name>"):
        path_labels("results/benchmarks/adapt/joint.tsv")


def test_cost_table_and_markdown_with_gpus(grid_files):
    from llara.tables import cost_markdown, cost_table

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
    assert rows["bm25"] == "| bm25 | - | – | – | – | 0.4000 | +0.1000 | – |"  # a baseline: a row, no hours


def test_cost_without_gpus_uses_cpu_hours_and_says_so(tmp_path, grid_files):
    from llara.tables import cost_markdown, cost_table

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
    from llara.tables import cost_markdown, cost_table

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
    from llara.tables import load_benchmark

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
    assert "| ebae | ebae/ebae | released | 0 | scifact | test | 5 |" in (out / "deltas.md").read_text()
    bad = tmp_path / "results" / "benchmarks" / "adapt" / "llara" / "released" / "ebar" / "seed0.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("not\ta benchmark\n")
    assert main([*argv, "--benchmarks", str(bad)]) == 1
    assert "seed0.tsv: not a readable Snakemake benchmark" in capsys.readouterr().err
