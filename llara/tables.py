"""Tables stage: metrics JSONs (from :mod:`llara.score`) -> the grid's user-facing tables and chart.

Each metrics file is one run, labelled from its ``provenance``: ``variant``, ``dataset`` (both
required), ``split`` and ``model`` ("-" when absent), ``prompt_style`` ("-"), ``seed`` (-1) and the
prompt kinds ``query_prompt`` / ``passage_prompt`` ("-"; baselines have none); the ``stage``
(``zeroshot`` / ``finetuned``) and the fine-tuning ``negatives`` come from the provenance when it has
them, else from the file's grid path (``.../llara/<style>/<variant>/seed<N>/zeroshot/...``,
``.../finetuned/<negatives>/...``, ``.../checkpoint/<name>/<stage>...``), else "-".
A run is keyed by (variant, prompt_style, seed, stage, negatives, dataset, split); two files with the
same key fail.

Outputs, written atomically into the output folder (``ndcg10`` is the metric's file stem):

- ``long.csv`` / ``long.parquet``: one row per run and metric;
- ``ndcg10.md`` (the main table) / ``summary.csv``: systems (variant x stage; baselines last) x
  datasets, each cell the mean over seeds +/- the half-width of a 95% t-interval (one seed: n=1, no
  interval), a BEIR average (per seed over the datasets, then over seeds) and, for MS MARCO
  (``--msmarco``), MRR@10 and Recall@1000 beside it instead of NDCG@10; ``ndcg10.png``: bars with
  the intervals;
- ``deltas.csv`` / ``deltas.md``: each variant against the baseline (``none``) at the same stage,
  prompt style and negatives, per dataset: the mean over seeds of the per-seed delta +/- its 95%
  t-interval, and paired tests over queries pooled over seeds (each query's difference averaged over
  the seeds first, so a query counts once): Wilcoxon signed-rank (two-sided, ``zsplit``) and the
  paired t-test, each Holm-corrected across the variants compared on that dataset at that stage;
- ``deltas_per_seed.csv``: the same comparison for every seed separately (uncorrected);
- ``cost.csv`` / ``cost.md`` (when ``--benchmarks`` are given): per system the adaptation and
  fine-tuning GPU-hours (CPU-hours and wall-hours where no GPU was used), corpus passages per second,
  and NDCG@10 gained against ``none`` per hour of adaptation. See :func:`cost_table`.

CLI::

    python -m llara.tables --metrics results/metrics/**/*.json --output-dir results/tables \\
        [--metric ndcg@10] [--msmarco msmarco] [--benchmarks results/benchmarks/...tsv] [--encode-meta ...meta.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from llara.grid import CORE_VARIANTS, NEGATIVES, REFERENCE, RETRIEVERS, STAGES, System, model_labels, variants
from llara.io import DataError, atomic_path, atomic_write_text, cli_main

KEY = ["variant", "prompt_style", "seed", "stage", "negatives", "dataset", "split"]
SYSTEM_KEY = ["variant", "prompt_style", "stage", "negatives"]  # a table row: a system over its seeds
PROMPTS = ["query_prompt", "passage_prompt"]  # prompt kinds of a LLaRA run ("-" for baselines)
MSMARCO_METRICS = ("mrr@10", "recall@1000")  # reported for MS MARCO dev beside the BEIR average
RECALL_CUTOFFS = (100, 1000)  # the recall cut-offs llara.score computes


def msmarco_metrics(top_k: int = 1000) -> tuple[str, str]:
    """MRR@10 and the deepest recall the runs can tell: Recall@1000 needs 1,000 documents per query (a
    top-100 run would print Recall@1000 equal to Recall@100), else Recall@100."""
    deepest = max((c for c in RECALL_CUTOFFS if c <= top_k), default=RECALL_CUTOFFS[0])
    return MSMARCO_METRICS[0], f"recall@{deepest}"


CONFIDENCE = 0.95
Result = dict[str, Any]  # labels (KEY + model, prompts, source) plus "metrics", "num_queries", "per_query"

STAGE_PATH = re.compile(r"(?:^|/)benchmarks/(?P<stage>[^/]+)/")
SYSTEM = ["variant", "prompt_style", "seed", "stage", "negatives"]  # a cost row: one trained system
COST_STEPS = ("adapt", "finetune")  # pipeline steps whose jobs the cost table counts


def path_labels(path: str | os.PathLike, strict: bool = True) -> dict[str, Any]:
    """{variant, prompt_style, seed, stage, negatives} of the system a grid path names (its last system
    segment, :meth:`llara.grid.System.from_path`); an adapted model's path without a stage (adaptation
    benchmarks) gives stage "-". Without either: DataError, or {} with ``strict=False``."""
    try:
        return System.from_path(Path(path).as_posix()).labels()
    except ValueError as err:
        labels = model_labels(Path(path).as_posix())
        if labels is not None:
            return labels
        if strict:
            raise DataError(str(err)) from None
        return {}


def load_run(path: str | os.PathLike) -> Result:
    """One metrics JSON -> its labels, aggregate metrics and per-query values; DataError names the file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable metrics JSON ({exc})") from None
    prov = obj.get("provenance") if isinstance(obj, dict) else None
    if not isinstance(prov, dict) or not isinstance(obj.get("metrics"), dict):
        raise DataError(f"{path}: expected an object with 'metrics' and 'provenance' (see llara.score)")
    # what system the row is: the grid path (llara.grid.System); a file outside the grid's folders says
    # it in its provenance (llara.score --variant ...)
    where = path_labels(path, strict=False) or {
        "variant": prov.get("variant"),
        "prompt_style": str(prov.get("prompt_style") or "-"),
        "seed": prov.get("seed"),
        "stage": str(prov.get("stage") or "-"),
        "negatives": str(prov.get("negatives") or "-"),
    }
    for name, value in (("variant", where["variant"]), ("dataset", prov.get("dataset"))):
        if not value:
            raise DataError(
                f"{path}: neither a grid path (results/metrics/<system>/...) nor a provenance '{name}'; rerun "
                f"llara.score with --{name}"
            )
    per_query = obj.get("per_query", {})
    if not isinstance(per_query, dict) or not all(isinstance(v, dict) for v in per_query.values()):
        raise DataError(f"{path}: 'per_query' must map query id -> {{metric: value}}")
    values = [obj["metrics"].values()] + [v.values() for v in per_query.values()]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for vs in values for x in vs):
        raise DataError(f"{path}: a metric value is not a number")
    try:
        seed = int(where["seed"]) if where["seed"] is not None else -1
        num_queries = int(obj.get("num_queries", len(per_query)))
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'provenance.seed' and 'num_queries' must be integers") from None
    if where["stage"] not in (*STAGES, "-"):
        raise DataError(f"{path}: stage {where['stage']!r} is not one of {', '.join(STAGES)}")
    return {
        "variant": str(where["variant"]),
        "prompt_style": where["prompt_style"],
        "seed": seed,
        "stage": where["stage"],
        "negatives": where["negatives"],
        "dataset": str(prov["dataset"]),
        "split": str(prov.get("split") or "-"),
        "model": str(prov.get("model") or "-"),
        **{k: str(prov.get(k) or "-") for k in PROMPTS},
        "source": str(path),
        "metrics": obj["metrics"],
        "num_queries": num_queries,
        "per_query": per_query,
    }


def load_runs(files: Iterable[str | os.PathLike]) -> list[Result]:
    """Load every file; a repeated (variant, prompt_style, seed, stage, negatives, dataset, split) fails
    naming both files."""
    runs, seen = [], {}
    for f in files:
        run = load_run(f)
        key = tuple(run[k] for k in KEY)
        if key in seen:
            raise DataError(f"{f}: duplicate {dict(zip(KEY, key, strict=True))}, already in {seen[key]}")
        seen[key] = run["source"]
        runs.append(run)
    if not runs:
        raise DataError("no metrics files given")
    return runs


def long_table(files_or_runs: Iterable[str | os.PathLike] | list[Result]) -> pd.DataFrame:
    """Tidy table: one row per (variant, prompt_style, seed, stage, negatives, dataset, split, metric)."""
    runs = _runs(files_or_runs)
    labels = [*KEY, "model", *PROMPTS]
    rows = [
        {k: r[k] for k in labels} | {"metric": m, "value": float(v), "num_queries": r["num_queries"]}
        for r in runs
        for m, v in r["metrics"].items()
    ]
    return pd.DataFrame(rows).sort_values([*KEY, "metric"], ignore_index=True)


def variant_order(names: Iterable[str]) -> list[str]:
    """none, ebae, ebar, joint first, then the other names (released checkpoints, baselines) sorted."""
    names = set(names)
    return [v for v in CORE_VARIANTS if v in names] + sorted(names - set(CORE_VARIANTS))


def _stage_rank(stage: str, negatives: str) -> tuple[int, int]:
    """zero-shot rows first, then fine-tuned per negatives kind, then the unstaged (baselines)."""
    s = STAGES.index(stage) if stage in STAGES else len(STAGES)
    n = NEGATIVES.index(negatives) if negatives in NEGATIVES else len(NEGATIVES)
    return s, n


def system_sort_key(order: list[str]):
    return lambda r: (
        r["stage"] == "-",
        _stage_rank(r["stage"], r["negatives"]),
        order.index(r["variant"]),
        r["prompt_style"],
    )


# ---- uncertainty over seeds and multiple comparisons -----------------------------------------------
def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """(mean, half-width of the two-sided t-interval, n) of the finite ``values``: the interval is
    mean +/- t_{(1+c)/2, n-1} * s / sqrt(n), s the sample standard deviation; n < 2: no interval (NaN)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return np.nan, np.nan, 0
    if n == 1:
        return float(x[0]), np.nan, 1
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return float(x.mean()), float(half), n


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error) of the non-NaN p-values; NaN stays NaN.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ---- the main table: systems x datasets, both stages ------------------------------------------------
def headline_metric(dataset: str, metric: str, msmarco: Sequence[str]) -> str:
    return MSMARCO_METRICS[0] if dataset in msmarco else metric


def summary_table(
    long: pd.DataFrame, metric: str = "ndcg@10", msmarco: Sequence[str] = ("msmarco",), top_k: int = 1000
) -> pd.DataFrame:
    """One row per (system, column): ``column`` is a dataset ("dataset/split" when a dataset has several
    splits), ``average`` (per seed the mean over the non-MS MARCO datasets, for systems that have them
    all, then over seeds), or "<msmarco> <metric>" for MRR@10 and Recall@1000 of an MS MARCO dataset.
    Columns: SYSTEM_KEY, ``prompts``, ``column``, ``metric``, ``mean``, ``ci`` (half-width of the 95%
    t-interval over seeds; NaN for n < 2) and ``n`` (seeds)."""
    df = long.copy()
    if df.empty or metric not in set(df["metric"]):
        have = sorted(df["metric"].unique()) if len(df) else []
        raise DataError(f"metric {metric!r} is in none of the files; have {have}")
    several_splits = df.groupby("dataset")["split"].nunique().max() > 1
    df["column"] = df["dataset"] + ("/" + df["split"] if several_splits else "")
    beir = df[~df["dataset"].isin(msmarco) & (df["metric"] == metric)]
    marco = df[df["dataset"].isin(msmarco) & df["metric"].isin(msmarco_metrics(top_k))].copy()
    marco["column"] = marco["column"] + " " + marco["metric"]
    rows = []
    columns = sorted(beir["column"].unique())
    for key, g in pd.concat([beir, marco]).groupby(SYSTEM_KEY, sort=False):
        base = dict(zip(SYSTEM_KEY, key, strict=True)) | {
            "prompts": prompt_label(g),
            "seeded": bool((g["seed"] >= 0).any()),
        }
        for column, c in g.groupby("column"):
            mean, ci, n = mean_ci(c.groupby("seed")["value"].mean())
            rows.append(
                base | {"column": column, "metric": c["metric"].iloc[0], "mean": mean, "ci": ci, "n": n}
            )
        b = g[~g["dataset"].isin(msmarco)]
        if columns and not b.empty:
            per_seed = b.pivot_table(index="seed", columns="column", values="value", aggfunc="mean")
            complete = per_seed.reindex(columns=columns).dropna()  # seeds that have every dataset
            mean, ci, n = mean_ci(complete.mean(axis=1)) if len(complete) else (np.nan, np.nan, 0)
            rows.append(base | {"column": "average", "metric": metric, "mean": mean, "ci": ci, "n": n})
    table = pd.DataFrame(
        rows, columns=[*SYSTEM_KEY, "prompts", "seeded", "column", "metric", "mean", "ci", "n"]
    )
    order = variant_order(table["variant"])
    rank = table.apply(system_sort_key(order), axis=1)
    table = table.assign(_r=rank).sort_values("_r", kind="stable").drop(columns="_r").reset_index(drop=True)
    table.attrs["columns"] = columns + (["average"] if columns else []) + sorted(marco["column"].unique())
    return table


def stage_label(stage: str, negatives: str, several_negatives: bool) -> str:
    if stage == "zeroshot":
        return "zero-shot"
    if stage == "finetuned":
        return (
            f"fine-tuned, {negatives} negatives" if several_negatives and negatives != "-" else "fine-tuned"
        )
    return "–"


def prompt_label(rows: pd.DataFrame) -> str:
    """'query/passage' prompt kinds of some runs ("ebar/ebae"); "-" for baselines (or runs scored without
    them); several different ones: joined by ", " (a column mixing assignments shows it)."""
    if not set(PROMPTS) <= set(rows.columns):
        return "-"
    pairs = {f"{q}/{p}" for q, p in zip(rows[PROMPTS[0]], rows[PROMPTS[1]], strict=True)} - {"-/-"}
    return ", ".join(sorted(pairs)) or "-"


def _cell(mean: float, ci: float, n: int, row_n: int, decimals: int = 4) -> str:
    if pd.isna(mean):
        return "–"
    text = f"{mean:.{decimals}f}" + ("" if pd.isna(ci) else f" ± {ci:.{decimals}f}")
    return text + (f" (n={n})" if n != row_n else "")


def main_markdown(table: pd.DataFrame, metric: str = "ndcg@10") -> str:
    """The main table: one row per system, zero-shot rows first, then fine-tuned, baselines last; each
    cell mean ± 95% CI over seeds; the best mean of each column in **bold** (ties: all bold)."""
    columns = table.attrs.get("columns") or list(dict.fromkeys(table["column"]))
    styled = table["prompt_style"] != "-"
    several_styles = table.loc[styled, "prompt_style"].nunique() > 1
    several_negatives = table.loc[table["stage"] == "finetuned", "negatives"].nunique() > 1
    means = table.pivot_table(index=SYSTEM_KEY, columns="column", values="mean", aggfunc="first", sort=False)
    best = means.max()
    head = ["system", "stage", "prompts q/p", "n", *columns]
    lines = [
        f"{metric}: mean ± 95% CI over seeds (t-interval; n = seeds, n = 1: no interval)",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for key, g in table.groupby(SYSTEM_KEY, sort=False):
        variant, style, stage, negatives = key
        cells = g.set_index("column")
        row_n = int(g["n"].max())
        n_text = str(row_n) if g["seeded"].iloc[0] else "–"  # baselines and checkpoints have no seed
        name = variant + (f" [{style}]" if several_styles and style != "-" else "")
        out = [name, stage_label(stage, negatives, several_negatives), g["prompts"].iloc[0], n_text]
        for column in columns:
            if column not in cells.index:
                out.append("–")
                continue
            c = cells.loc[column]
            text = _cell(c["mean"], c["ci"], int(c["n"]), row_n)
            if pd.notna(c["mean"]) and np.isclose(c["mean"], best[column]):
                text = f"**{text}**"
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    notes = [
        "",
        "Zero-shot: the adapted checkpoint encoded with the variant's prompts, no fine-tuning (`none`: the"
        " base model with the prompts). Fine-tuned: after contrastive fine-tuning.",
        f"average: per seed the mean of {metric} over the datasets (MS MARCO excluded), then over seeds; '–'"
        " where a system lacks a dataset.",
    ]
    if any(" mrr@10" in c for c in columns):
        notes.append("MS MARCO (dev): MRR@10 and Recall@1000, as the paper reports it (not in the average).")
    if any(table["prompts"] != "-"):
        notes.append(
            "Prompts: the prompt kinds of queries/passages in fine-tuning and encoding (ebae, ebar)."
        )
    return "\n".join(lines + notes) + "\n"


# ---- deltas against `none`: per seed, and over seeds with pooled paired tests -----------------------
def paired_tests(diffs: np.ndarray) -> tuple[float, float]:
    """(Wilcoxon signed-rank p, paired t-test p) of per-query differences; 1.0 when all are zero."""
    if len(diffs) == 0:
        return np.nan, np.nan
    if not np.any(diffs):
        return 1.0, 1.0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # n < 10, constant differences: scipy warns, still answers
        w = stats.wilcoxon(diffs, zero_method="zsplit", alternative="two-sided").pvalue
        t = stats.ttest_1samp(diffs, 0.0).pvalue if len(diffs) > 1 else np.nan
    return float(w), float(t)


def _values(run: Result, qids: list[str], metric: str) -> np.ndarray:
    try:
        return np.array([run["per_query"][q][metric] for q in qids], dtype=float)  # (n,)
    except KeyError:
        raise DataError(f"{run['source']}: per-query values lack {metric!r}") from None


def compare(run: Result, base: Result, metric: str) -> dict[str, Any]:
    """``run`` against ``base`` on the queries both scored: means, delta, wins/losses, p-values."""
    qids = sorted(set(run["per_query"]) & set(base["per_query"]))
    x, y = _values(run, qids, metric), _values(base, qids, metric)
    d = x - y
    p_w, p_t = paired_tests(d)
    mean = lambda a: float(a.mean()) if len(a) else np.nan  # noqa: E731
    return {"n_queries": len(qids), "baseline_mean": mean(y), "variant_mean": mean(x), "delta": mean(d)} | {
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "wilcoxon_p": p_w,
        "ttest_p": p_t,
    }


def partner_labels(run: Result, baseline: str) -> dict[str, Any]:
    """The labels of the run ``run`` is compared with: ``baseline`` at the same seed, stage, negatives,
    dataset and split, and (a variant: ``none``) the same prompt style; a retriever (RepLLaMA) has none."""
    labels = {k: run[k] for k in KEY} | {"variant": baseline}
    return labels | ({"prompt_style": "-"} if baseline in RETRIEVERS else {})


def deltas(
    files_or_runs: Iterable[str | os.PathLike] | list[Result],
    metric: str = "ndcg@10",
    baseline: str = "none",
    msmarco: Sequence[str] = (),
) -> pd.DataFrame:
    """Per seed: each variant of the grid against the baseline run with the same seed, stage, negatives,
    dataset and split (:func:`partner_labels`: and prompt style, against a variant); the metric is
    ``metric`` (MRR@10 on ``msmarco`` datasets).

    Variants' runs with no such baseline run are listed in ``table.attrs["unmatched"]``.
    """
    runs = _runs(files_or_runs)
    by_key = {tuple(r[k] for k in KEY): r for r in runs}
    order = variant_order(r["variant"] for r in runs)
    rows, unmatched = [], []
    for r in sorted(
        runs,
        key=lambda r: (
            *_stage_rank(r["stage"], r["negatives"]),
            order.index(r["variant"]),
            *(r[k] for k in KEY[1:]),
        ),
    ):
        if r["variant"] == baseline or r["variant"] not in variants():
            continue  # the LLaRA variants are compared, not the baselines and checkpoints
        b = by_key.get(tuple(partner_labels(r, baseline)[k] for k in KEY))
        if b is None:
            unmatched.append(r["source"])
            continue
        m = headline_metric(r["dataset"], metric, msmarco)
        rows.append(
            {k: r[k] for k in [*KEY, *PROMPTS]} | {"baseline": baseline, "metric": m} | compare(r, b, m)
        )
    cols = [*KEY, *PROMPTS, "baseline", "metric", "n_queries", "baseline_mean", "variant_mean", "delta"]
    table = pd.DataFrame(rows, columns=[*cols, "wins", "losses", "wilcoxon_p", "ttest_p"])
    table.attrs["unmatched"] = unmatched
    return table


FAMILY = ["prompt_style", "stage", "negatives", "dataset", "split", "metric"]  # one block of deltas.md


def delta_summary(
    files_or_runs: Iterable[str | os.PathLike] | list[Result],
    metric: str = "ndcg@10",
    baseline: str = "none",
    msmarco: Sequence[str] = ("msmarco",),
) -> pd.DataFrame:
    """Over seeds: each variant against the baseline at the same (prompt_style, stage, negatives, dataset,
    split), on the seeds both have.

    - ``delta``, ``delta_ci``: the mean over seeds of the per-seed delta (mean over the queries both runs
      of that seed scored) and the half-width of its 95% t-interval over seeds (NaN with one seed);
    - ``wilcoxon_p``, ``ttest_p``: paired tests over the queries every paired run scored, each query's
      difference first averaged over the seeds (the query is the unit; pooling the seed x query pairs
      would count a query once per seed and overstate the evidence); ``wins`` / ``losses`` count those
      averaged differences;
    - ``*_holm``: Holm's adjustment across the variants compared in one family (one dataset at one
      stage, prompt style and negatives kind: the rows of one block of ``deltas.md``), ``family_size``.
    """
    runs = _runs(files_or_runs)
    per_seed = deltas(runs, metric, baseline, msmarco)
    by_key = {tuple(r[k] for k in KEY): r for r in runs}
    rows = []
    group_cols = ["variant", *PROMPTS, *FAMILY]
    for key, g in per_seed.groupby(group_cols, sort=False):
        labels = dict(zip(group_cols, key, strict=True))
        d = _seed_averaged_differences(labels, sorted(g["seed"]), by_key, baseline)
        p_w, p_t = paired_tests(d)
        delta, ci, n = mean_ci(g["delta"])
        rows.append(
            labels
            | {
                "baseline": baseline,
                "n_seeds": n,
                "n_queries": len(d),
                "baseline_mean": float(g["baseline_mean"].mean()),
                "variant_mean": float(g["variant_mean"].mean()),
                "delta": delta,
                "delta_ci": ci,
                "wins": int((d > 0).sum()),
                "losses": int((d < 0).sum()),
                "wilcoxon_p": p_w,
                "ttest_p": p_t,
            }
        )
    cols = [*group_cols, "baseline", "n_seeds", "n_queries", "baseline_mean", "variant_mean", "delta"]
    cols += ["delta_ci", "wins", "losses", "wilcoxon_p", "ttest_p"]
    table = _with_holm(pd.DataFrame(rows, columns=cols))
    unmatched = sorted(
        {
            (r["variant"], r["stage"], r["negatives"])
            for r in runs
            if r["source"] in set(per_seed.attrs["unmatched"])
        }
    )
    table.attrs["unmatched"] = unmatched
    table.attrs["unmatched_files"] = per_seed.attrs["unmatched"]
    return table


def _seed_averaged_differences(
    labels: dict[str, Any], seeds: list[int], by_key: dict[tuple, Result], baseline: str
) -> np.ndarray:
    """Per query (those every paired run scored): the variant's value minus the baseline's, averaged
    over the seeds. (Q,)"""
    pairs = []
    for seed in seeds:
        run_key = {k: labels[k] for k in KEY if k in labels} | {"seed": seed}
        run = by_key[tuple(run_key[k] for k in KEY)]
        base = by_key[tuple(partner_labels(run, baseline)[k] for k in KEY)]
        pairs.append((run, base))
    common = sorted(set.intersection(*(set(r["per_query"]) & set(b["per_query"]) for r, b in pairs)))
    if not common:
        return np.array([])
    metric = labels["metric"]
    return np.mean([_values(r, common, metric) - _values(b, common, metric) for r, b in pairs], axis=0)


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """``wilcoxon_p_holm`` / ``ttest_p_holm`` after their test, Holm-adjusted within each family
    (FAMILY: one block of deltas.md), and the family's size."""
    for test in ("wilcoxon_p", "ttest_p"):
        table[f"{test}_holm"] = np.nan
    table["family_size"] = 0
    for _, g in table.groupby(FAMILY, sort=False):
        table.loc[g.index, "wilcoxon_p_holm"] = holm(g["wilcoxon_p"].to_numpy())
        table.loc[g.index, "ttest_p_holm"] = holm(g["ttest_p"].to_numpy())
        table.loc[g.index, "family_size"] = int(g["wilcoxon_p"].notna().sum())
    order = [c for c in table.columns if not c.endswith(("_holm", "family_size"))]
    at = order.index("ttest_p")
    order = [*order[:at], "wilcoxon_p_holm", "ttest_p", "ttest_p_holm", *order[at + 1 :], "family_size"]
    return table[order]


def _p(p: float) -> str:
    return "–" if pd.isna(p) else f"{p:.3g}"


def deltas_markdown(table: pd.DataFrame, metric: str = "ndcg@10", baseline: str = "none") -> str:
    several_negatives = table.loc[table["stage"] == "finetuned", "negatives"].nunique() > 1
    several_styles = table["prompt_style"].nunique() > 1
    head = (
        "| stage | variant | prompts q/p | dataset | metric | seeds | queries | base mean | mean | Δ ± 95% CI (seeds) "
        "| W/L | Wilcoxon p | Holm | t-test p | Holm |"
    )
    what = (
        f"the paper's comparison: each variant against `{baseline}` (trained the same way, no adaptation)"
        if baseline in RETRIEVERS
        else f"the ablation: each variant against `{baseline}` (no adaptation, the same prompts)"
    )
    lines = [
        f"{what[0].upper()}{what[1:]} at the same stage (and prompt style, negatives), per dataset\n",
        head,
        "|---" * 15 + "|",
    ]
    for r in table.itertuples():
        prompts = "-" if r.query_prompt == "-" else f"{r.query_prompt}/{r.passage_prompt}"
        name = r.variant + (f" [{r.prompt_style}]" if several_styles else "")
        dataset = r.dataset + ("" if r.split in ("-", "test") else f"/{r.split}")
        delta = f"{r.delta:+.4f}" + ("" if pd.isna(r.delta_ci) else f" ± {r.delta_ci:.4f}")
        lines.append(
            f"| {stage_label(r.stage, r.negatives, several_negatives)} | {name} | {prompts} | {dataset} | {r.metric} "
            f"| {r.n_seeds} | {r.n_queries} | {r.baseline_mean:.4f} | {r.variant_mean:.4f} | {delta} "
            f"| {r.wins}/{r.losses} | {_p(r.wilcoxon_p)} | {_p(r.wilcoxon_p_holm)} | {_p(r.ttest_p)} | {_p(r.ttest_p_holm)} |"
        )
    lines += [
        "",
        "Δ: the mean over seeds of each seed's paired delta (variant − baseline over the queries both scored),"
        " ± the half-width of its 95% t-interval over seeds (one seed: no interval).",
        "Tests: over queries, each query's difference averaged over the seeds first (a query counts once);"
        " Wilcoxon signed-rank (two-sided, zsplit: ties kept) and paired t-test. Holm: adjusted across the"
        " variants compared on one dataset at one stage (the rows that share stage and dataset here).",
        "Per seed, uncorrected: deltas_per_seed.csv.",
    ]
    if table.attrs.get("unmatched"):
        names = [f"{v} ({stage_label(s, n, True)})" for v, s, n in table.attrs["unmatched"]]
        same = "stage and seed" if baseline in RETRIEVERS else "stage, prompt style and seed"
        lines.append(f"\nNot compared (no `{baseline}` run at the same {same}): " + ", ".join(names))
    return "\n".join(lines) + "\n"


# ---- cost: Snakemake benchmarks, the launcher's job records, encoding throughput -------------------
def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(x) else x


def load_benchmark(path: str | os.PathLike) -> dict[str, Any]:
    """One Snakemake benchmark TSV (its mean over repeats) and the launcher's job record beside it
    (``<stem>.job.json``, heavy rules only).

    - GPU-hours: the job record's (sacct on SLURM; GPUs given x elapsed locally).
    - CPU-hours: the CPU time the stage command used, as the job measured it (``command_cpu_s``,
      exact); else sacct's allocated CPU-hours; else the benchmark's ``cpu_time``, which Snakemake
      samples (every 0.5 s for 15 s, then every 30 s: a process's last seconds are missed).
    - wall-hours: sacct's elapsed time on SLURM, else the benchmark's ``s``.
    - peak memory: the command's largest process (``command_max_rss_mb``), else the benchmark's
      ``max_rss`` (the rule's whole process tree, launcher included).
    """
    path = Path(path)
    m = STAGE_PATH.search(path.as_posix())
    if not m:
        raise DataError(f"{path}: not under benchmarks/<stage>/")
    try:
        bench = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        row = bench.apply(pd.to_numeric, errors="coerce").mean(numeric_only=True)
        wall_s = float(row["s"])
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable Snakemake benchmark ({exc})") from None
    cpu_s = _number(row.get("cpu_time"))
    labels = path_labels(path)
    rec = {
        **labels,
        "step": m["stage"],  # the job's pipeline step (adapt, finetune, encode_corpus...); "stage" is the
        # system's evaluation stage (zeroshot, finetuned, -) from the path
        "wall_hours": wall_s / 3600,
        "cpu_hours": None if cpu_s is None else cpu_s / 3600,
        "max_rss_mb": _number(row.get("max_rss")),
        "gpus": None,
        "gpu_hours": None,
        "cost_source": "benchmark",
        "note": None,
        "source": str(path),
    }
    job_path = path.with_name(path.name[: -len(".tsv")] + ".job.json") if path.name.endswith(".tsv") else None
    if job_path is None or not job_path.exists():
        return rec
    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{job_path}: not a readable job record ({exc})") from None
    rec.update(gpus=job.get("gpus"), gpu_hours=_number(job.get("gpu_hours")), note=job.get("note"))
    if job.get("source") == "sacct":  # the work ran on a compute node, not under the benchmark
        rec.update(cost_source="sacct", cpu_hours=_number(job.get("cpu_hours")), max_rss_mb=None)
        rec["wall_hours"] = None if job.get("elapsed_s") is None else job["elapsed_s"] / 3600
    elif job.get("cluster") == "slurm":  # sacct did not answer: the benchmark timed the login node
        rec.update(cost_source="none", cpu_hours=None, wall_hours=None, max_rss_mb=None)
    else:
        rec["cost_source"] = "benchmark+launcher"
    if _number(job.get("command_cpu_s")) is not None:
        rec["cpu_hours"] = job["command_cpu_s"] / 3600
    if _number(job.get("command_max_rss_mb")) is not None:
        rec["max_rss_mb"] = float(job["command_max_rss_mb"])
    return rec


def encode_throughput(meta_files: Iterable[str | os.PathLike]) -> dict[tuple, float]:
    """(variant, prompt_style, seed, stage, negatives) -> corpus passages per second: rows / seconds
    summed over the shards and datasets (encoding only; model loading excluded; per job, not per machine)."""
    rows: dict[tuple, list[float]] = {}
    for f in meta_files:
        try:
            meta = json.loads(Path(f).read_text(encoding="utf-8"))
            n, sec = float(meta["rows"]), float(meta["seconds"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{f}: not an encode shard meta JSON with rows and seconds ({exc})") from None
        key = tuple(path_labels(f)[k] for k in SYSTEM)
        acc = rows.setdefault(key, [0.0, 0.0])
        acc[0] += n
        acc[1] += sec
    return {k: (n / sec if sec > 0 else np.nan) for k, (n, sec) in rows.items()}


def cost_table(
    runs: list[Result],
    benchmarks: Iterable[str | os.PathLike] = (),
    encode_meta: Iterable[str | os.PathLike] = (),
    metric: str = "ndcg@10",
) -> pd.DataFrame:
    """One row per system (variant, prompt_style, seed, stage, negatives) that has metrics: its prompt
    kinds, the mean of ``metric`` over datasets, and per stage (adapt, finetune) ``<stage>_gpu_hours``,
    ``<stage>_cpu_hours``, ``<stage>_wall_hours``, ``<stage>_max_rss_mb``, ``<stage>_cost_source``;
    ``encode_passages_per_s``. An adaptation benchmark counts for every stage of its model (zero-shot and
    fine-tuned rows); a fine-tuning benchmark for the fine-tuned row with its negatives (a path without
    a stage segment: every row of the model but zero-shot). Benchmarks of other stages are ignored here
    (they stay in their TSVs)."""
    systems: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        key = tuple(r[k] for k in SYSTEM)
        row = systems.setdefault(key, dict(zip(SYSTEM, key, strict=True)) | {k: r[k] for k in PROMPTS})
        if metric in r["metrics"]:
            row.setdefault("_values", {})[(r["dataset"], r["split"])] = float(r["metrics"][metric])
    for f in benchmarks:
        b = load_benchmark(f)
        if b["step"] not in COST_STEPS:
            continue
        for key, row in systems.items():
            if not _charged(b, dict(zip(SYSTEM, key, strict=True))):
                continue  # another system, or a system not in these metrics (a variant left out of the grid)
            for field in ("gpu_hours", "cpu_hours", "wall_hours", "max_rss_mb", "gpus"):
                name = f"{b['step']}_{field}"
                old = row.get(name)
                if field == "max_rss_mb" or field == "gpus":
                    row[name] = b[field] if old is None else max(old, b[field] or 0)
                else:  # several benchmarks of one stage (shards): hours add up
                    row[name] = b[field] if old is None or b[field] is None else old + b[field]
            row[f"{b['step']}_cost_source"] = b["cost_source"]
            if b["note"] and b["cost_source"] != "benchmark+launcher":
                row[f"{b['step']}_note"] = b["note"]
    speed = encode_throughput(encode_meta)
    datasets = {d for row in systems.values() for d in row.get("_values", {})}
    out = []
    for key, row in systems.items():
        values = row.pop("_values", {})
        row[metric] = float(np.mean(list(values.values()))) if values and set(values) == datasets else np.nan
        row["encode_passages_per_s"] = speed.get(key, np.nan)
        out.append(row)
    cols = [*SYSTEM, *PROMPTS, metric, "encode_passages_per_s"]
    for step in COST_STEPS:
        cols += [f"{step}_{f}" for f in ("gpus", "gpu_hours", "cpu_hours", "wall_hours", "max_rss_mb")]
        cols += [f"{step}_cost_source", f"{step}_note"]
    order = variant_order(r["variant"] for r in out)
    table = pd.DataFrame(out, columns=cols)
    table["_o"] = [
        (r["stage"] == "-", _stage_rank(r["stage"], r["negatives"]), order.index(r["variant"])) for r in out
    ]
    return table.sort_values(["_o", "prompt_style", "seed"], ignore_index=True).drop(columns="_o")


def _charged(bench: dict[str, Any], system: dict[str, Any]) -> bool:
    """Whether a benchmark's job is part of a system's cost (see :func:`cost_table`)."""
    if any(bench[k] != system[k] for k in ("variant", "prompt_style", "seed")):
        return False
    if bench["step"] == "adapt":
        return True
    if system["stage"] == "zeroshot":
        return False
    return bench["negatives"] == "-" or system["negatives"] in ("-", bench["negatives"])


def uses_gpus(cost: pd.DataFrame) -> bool:
    """Whether any adaptation or fine-tuning job had GPUs: the cost unit is then the GPU-hour."""
    cols = [f"{s}_gpu_hours" for s in COST_STEPS if f"{s}_gpu_hours" in cost]
    return bool(cols) and bool((cost[cols].astype(float).fillna(0) > 0).any().any())


def cost_markdown(cost: pd.DataFrame, metric: str = "ndcg@10", baseline: str = "none") -> str:
    """Per system (mean over seeds): prompts, adaptation and fine-tuning hours, corpus passages per
    second, ``metric`` (average over datasets), its gain against ``baseline`` (same prompt style, stage
    and negatives; BM25 and plain encoders are not compared, as in deltas.md) and that gain per hour of
    the system's adaptation. Hours are GPU-hours when any job had a GPU, else CPU-hours, with wall-hours
    beside them; the header says which."""
    gpu = uses_gpus(cost)
    unit = "GPU-h" if gpu else "CPU-h"
    numeric = [c for c in cost.columns if c.endswith(("_hours", "_per_s", "_mb")) or c == metric]
    df = cost.copy()
    df[numeric] = df[numeric].astype(float)
    g = df.groupby(["variant", "prompt_style", "stage", "negatives"], sort=False)
    mean = g[numeric].mean()
    seeds = g.size()
    prompts = g.apply(prompt_label, include_groups=False) if len(df) else pd.Series(dtype=str)
    several_negatives = df.loc[df["stage"] == "finetuned", "negatives"].nunique() > 1
    suffix = "" if gpu else " / wall-h (no GPU: CPU-hours)"
    head = ["system", "prompts q/p", f"adaptation {unit}{suffix}", f"fine-tuning {unit}{suffix}"]
    head += ["corpus passages/s", f"{metric} (avg)", f"Δ vs {baseline}", f"Δ per adaptation {unit}"]
    lines = [
        f"Cost of each system and {metric} gained against `{baseline}` per {unit} of adaptation\n",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for key, row in mean.iterrows():
        variant, style, stage, negatives = key
        name = variant + ("" if style == "-" else f" [{style}]")
        if stage != "-":
            name += f" {stage_label(stage, negatives, several_negatives)}"
        if seeds[key] > 1:
            name += f" ({seeds[key]} seeds)"
        reference = (baseline, style, stage, negatives)
        delta = row[metric] - mean.loc[reference, metric] if reference in mean.index else np.nan
        cells = _cost_cells(row, stage, gpu, metric, np.nan if variant == baseline else delta)
        lines.append("| " + " | ".join([name, prompts.get(key, "-"), *cells]) + " |")
    return "\n".join(lines + _cost_notes(df, gpu, unit, metric, baseline)) + "\n"


def _cost_cells(row: pd.Series, stage: str, gpu: bool, metric: str, delta: float) -> list[str]:
    """adaptation hours, fine-tuning hours, passages/s, metric, delta, delta per adaptation hour ("–"
    where a system has no such job: a baseline, RepLLaMA's adaptation)."""

    def hours(part: str) -> tuple[float, str]:
        h = row.get(f"{part}_gpu_hours" if gpu else f"{part}_cpu_hours", np.nan)
        if pd.isna(h):
            return np.nan, "–"
        return h, f"{h:.4f}" if gpu else f"{h:.4f} / {row[f'{part}_wall_hours']:.4f}"

    adapt_h, adapt_text = hours("adapt")
    ft_text = hours("finetune")[1] if stage != "zeroshot" else "–"
    per = delta / adapt_h if adapt_h and adapt_h > 0 else np.nan
    speed = row["encode_passages_per_s"]
    return [
        adapt_text,
        ft_text,
        "–" if pd.isna(speed) else f"{speed:.1f}",
        "–" if pd.isna(row[metric]) else f"{row[metric]:.4f}",
        "–" if pd.isna(delta) else f"{delta:+.4f}",
        "–" if pd.isna(per) else f"{per:+.3g}",
    ]


COST_SOURCES = {
    "sacct": "SLURM accounting (sacct)",
    "benchmark+launcher": "Snakemake's benchmark (wall time), the job itself (CPU time) and the launcher (GPUs)",
    "benchmark": "Snakemake's benchmark",
    "none": "nothing (sacct did not answer; see the notes)",
}


def _cost_notes(df: pd.DataFrame, gpu: bool, unit: str, metric: str, baseline: str) -> list[str]:
    """The lines under the cost table: what the hours are and who measured them."""
    source = sorted({str(s) for c in df.columns if c.endswith("_cost_source") for s in df[c].dropna()})
    what = (
        "allocated GPUs x elapsed time, summed over a job's attempts"
        if gpu
        else "CPU time the stage command used (no job had a GPU); wall-h: elapsed time"
    )
    lines = [
        "",
        f"{unit}: {what}. Measured by: " + "; ".join(COST_SOURCES.get(s, s) for s in source) + "."
        if source
        else f"{unit}: no measurements were given.",
        "Corpus passages/s: encoding only (model loading excluded), per job.",
        f"Δ per adaptation {unit}: ({metric} - {metric} of `{baseline}`) / the system's adaptation {unit};"
        f" fine-tuning is the same recipe for every variant. `{baseline}` adapts nothing (its adaptation"
        " copies the base model). BM25 and plain encoders are not compared (as in deltas.md). Means over"
        " seeds; no significance here (see deltas.md).",
    ]
    notes = sorted({str(n) for c in df.columns if c.endswith("_note") for n in df[c].dropna()})
    if notes:
        lines.append("Notes from the job records: " + "; ".join(notes))
    return lines


def bar_chart(table: pd.DataFrame, path: str | os.PathLike, metric: str = "ndcg@10") -> Path:
    """The main table as grouped bars (one group per column, one bar per system) with the 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = table.attrs.get("columns") or list(dict.fromkeys(table["column"]))
    several_negatives = table.loc[table["stage"] == "finetuned", "negatives"].nunique() > 1
    systems = list(table.groupby(SYSTEM_KEY, sort=False))
    several_styles = table.loc[table["prompt_style"] != "-", "prompt_style"].nunique() > 1
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(columns) * len(systems) + 1), 3.8))
    width = 0.8 / max(1, len(systems))
    xs = np.arange(len(columns))
    for i, ((variant, style, stage, negatives), g) in enumerate(systems):
        cells = g.set_index("column").reindex(columns)
        label = variant + (f" [{style}]" if several_styles and style != "-" else "")
        label += "" if stage == "-" else f" ({stage_label(stage, negatives, several_negatives)})"
        ax.bar(
            xs + (i - (len(systems) - 1) / 2) * width,
            cells["mean"].to_numpy(dtype=float),
            width,
            yerr=cells["ci"].to_numpy(dtype=float),
            capsize=2,
            label=label,
        )
    ax.set_xticks(xs, columns, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (MS MARCO: its own metric)" if any(" " in c for c in columns) else metric)
    ax.legend(fontsize="x-small", ncols=min(4, len(systems)), loc="lower center", bbox_to_anchor=(0.5, 1))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def write_tables(
    files: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    metric: str = "ndcg@10",
    baseline: str = "none",
    benchmarks: Sequence[str | os.PathLike] = (),
    encode_meta: Sequence[str | os.PathLike] = (),
    msmarco: Sequence[str] = ("msmarco",),
    cost: bool = False,
    top_k: int = 1000,
) -> dict[str, Path]:
    """Write every table and the chart into ``output_dir``; returns {name: path}. ``cost.csv`` and
    ``cost.md`` are written when ``benchmarks`` or ``encode_meta`` are given, or with ``cost`` (a grid
    of baselines only has no job to count). ``top_k``: the runs' depth (see :func:`msmarco_metrics`)."""
    out, stem = Path(output_dir), metric.replace("@", "")
    runs = load_runs(files)
    long = long_table(runs)
    summary = summary_table(long, metric, msmarco, top_k)
    # against `none` (the ablation), and against RepLLaMA where the grid has it (the paper's comparison)
    baselines = [baseline] + [REFERENCE] * any(r["variant"] == REFERENCE for r in runs)
    per_seed = pd.concat([deltas(runs, metric, b, msmarco) for b in baselines], ignore_index=True)
    summaries = [delta_summary(runs, metric, b, msmarco) for b in baselines]
    delta = pd.concat(summaries, ignore_index=True)
    names = [
        "long.csv",
        "long.parquet",
        f"{stem}.md",
        f"{stem}.png",
        "summary.csv",
        "deltas.csv",
        "deltas.md",
    ]
    paths = {n: out / n for n in [*names, "deltas_per_seed.csv"]}
    atomic_write_text(paths["long.csv"], long.to_csv(index=False))
    with atomic_path(paths["long.parquet"], suffix=".parquet") as tmp:
        long.to_parquet(tmp, index=False)
    atomic_write_text(paths[f"{stem}.md"], main_markdown(summary, metric))
    atomic_write_text(paths["summary.csv"], summary.to_csv(index=False))
    bar_chart(summary, paths[f"{stem}.png"], metric)
    atomic_write_text(paths["deltas.csv"], delta.to_csv(index=False))
    text = "\n".join(deltas_markdown(t, metric, b) for t, b in zip(summaries, baselines, strict=True))
    atomic_write_text(paths["deltas.md"], text)
    atomic_write_text(paths["deltas_per_seed.csv"], per_seed.to_csv(index=False))
    if cost or benchmarks or encode_meta:
        table = cost_table(runs, benchmarks, encode_meta, metric)
        paths |= {n: out / n for n in ("cost.csv", "cost.md")}
        atomic_write_text(paths["cost.csv"], table.to_csv(index=False))
        atomic_write_text(paths["cost.md"], cost_markdown(table, metric, baseline))
    return paths


def _runs(files_or_runs: Iterable[Any]) -> list[Result]:
    items = list(files_or_runs)
    return items if items and all(isinstance(i, dict) for i in items) else load_runs(items)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.tables", description="Metrics JSONs -> result tables.")
    p.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics JSONs from llara.score")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--metric", default="ndcg@10", help="metric of the main table, chart and deltas")
    p.add_argument("--baseline", default="none", help="variant the deltas are taken against")
    p.add_argument(
        "--msmarco",
        nargs="*",
        default=["msmarco"],
        help="datasets reported as MS MARCO: MRR@10 and Recall@1000 beside the average, not in it",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=1000,
        help="documents per query in the runs: MS MARCO's recall column is the deepest cut-off <= this",
    )
    p.add_argument(
        "--benchmarks",
        nargs="*",
        default=None,
        type=Path,
        help="Snakemake benchmark TSVs under benchmarks/<stage>/<system>... (job records beside them are "
        "read); given, even with no file: cost.csv and cost.md are written",
    )
    p.add_argument(
        "--encode-meta",
        nargs="*",
        default=None,
        type=Path,
        help="corpus shard .meta.json files of llara.encode",
    )
    args = p.parse_args(argv)
    if args.top_k < 1:
        raise DataError(f"--top-k must be >= 1, got {args.top_k}")
    paths = write_tables(
        args.metrics,
        args.output_dir,
        args.metric,
        args.baseline,
        args.benchmarks or [],
        args.encode_meta or [],
        args.msmarco,
        cost=args.benchmarks is not None or args.encode_meta is not None,
        top_k=args.top_k,
    )
    print(f"tables in {args.output_dir}: " + " ".join(p.name for p in paths.values()))
    print(f'read them with: pd.read_parquet("{paths["long.parquet"]}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
