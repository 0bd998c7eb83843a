"""Tables stage: metrics JSONs (from :mod:`llara.score`) -> the grid's user-facing tables and chart.

Each metrics file is one run, labelled from its ``provenance``: ``variant``, ``dataset`` (both
required), ``split`` and ``model`` ("-" when absent), ``prompt_style`` ("-"), ``seed`` (-1) and the
prompt kinds ``query_prompt`` / ``passage_prompt`` ("-"; baselines have none).
A run is keyed by (variant, prompt_style, seed, dataset, split); two files with the same key fail.

Outputs, written atomically into the output folder (``ndcg10`` is the metric's file stem):

- ``long.csv`` / ``long.parquet``: one row per (variant, prompt_style, seed, dataset, split, metric);
- ``ndcg10.md``: datasets x variants, mean over seeds (seed count noted), an average row, row best
  in bold, and a row with each column's query/passage prompt kinds; ``ndcg10.png``: the same
  numbers as grouped bars;
- ``deltas.csv`` / ``deltas.md``: each variant against the baseline on the same (prompt_style, seed,
  dataset, split), over the queries both scored: mean paired difference, Wilcoxon signed-rank p
  (two-sided, ``zero_method="zsplit"``: queries where both runs score the same, often both 0 in
  retrieval, are kept and their ranks split between the signs, which is conservative) and the paired
  t-test p. All-zero differences give delta 0 and p = 1. No multiple-comparison correction.
- ``cost.csv`` / ``cost.md`` (when ``--benchmarks`` are given): per system the adaptation and
  fine-tuning GPU-hours (CPU-hours and wall-hours where no GPU was used), corpus passages per second,
  and NDCG@10 gained against ``none`` per hour of adaptation. See :func:`cost_table`.

CLI::

    python -m llara.tables --metrics results/metrics/llara/*/*/*/*/*.json results/metrics/baseline/*/*/*.json \
        --output-dir results/tables [--benchmarks results/benchmarks/...tsv] [--encode-meta ...meta.json]
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

from llara.io import DataError, atomic_path, atomic_write_text

KEY = ["variant", "prompt_style", "seed", "dataset", "split"]
CORE_VARIANTS = ("none", "ebae", "ebar", "joint")
PROMPTS = ["query_prompt", "passage_prompt"]  # prompt kinds of a LLaRA run ("-" for baselines)
Run = dict[str, Any]  # labels (KEY + model, prompts, source) plus "metrics", "num_queries", "per_query"


def load_run(path: str | os.PathLike) -> Run:
    """One metrics JSON -> its labels, aggregate metrics and per-query values; DataError names the file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable metrics JSON ({exc})") from None
    prov = obj.get("provenance") if isinstance(obj, dict) else None
    if not isinstance(prov, dict) or not isinstance(obj.get("metrics"), dict):
        raise DataError(f"{path}: expected an object with 'metrics' and 'provenance' (see llara.score)")
    for name in ("variant", "dataset"):
        if not prov.get(name):
            raise DataError(f"{path}: provenance lacks '{name}'; rerun llara.score with --{name}")
    per_query = obj.get("per_query", {})
    if not isinstance(per_query, dict) or not all(isinstance(v, dict) for v in per_query.values()):
        raise DataError(f"{path}: 'per_query' must map query id -> {{metric: value}}")
    values = [obj["metrics"].values()] + [v.values() for v in per_query.values()]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for vs in values for x in vs):
        raise DataError(f"{path}: a metric value is not a number")
    try:
        seed = int(prov["seed"]) if prov.get("seed") is not None else -1
        num_queries = int(obj.get("num_queries", len(per_query)))
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'provenance.seed' and 'num_queries' must be integers") from None
    return {
        "variant": str(prov["variant"]),
        "prompt_style": str(prov.get("prompt_style") or "-"),
        "seed": seed,
        "dataset": str(prov["dataset"]),
        "split": str(prov.get("split") or "-"),
        "model": str(prov.get("model") or "-"),
        **{k: str(prov.get(k) or "-") for k in PROMPTS},
        "source": str(path),
        "metrics": obj["metrics"],
        "num_queries": num_queries,
        "per_query": per_query,
    }


def load_runs(files: Iterable[str | os.PathLike]) -> list[Run]:
    """Load every file; a repeated (variant, prompt_style, seed, dataset, split) fails naming both files."""
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


def long_table(files_or_runs: Iterable[str | os.PathLike] | list[Run]) -> pd.DataFrame:
    """Tidy table: one row per (variant, prompt_style, seed, dataset, split, metric)."""
    runs = _runs(files_or_runs)
    labels = [*KEY, "model", *PROMPTS]
    rows = [
        {k: r[k] for k in labels} | {"metric": m, "value": float(v), "num_queries": r["num_queries"]}
        for r in runs
        for m, v in r["metrics"].items()
    ]
    return pd.DataFrame(rows).sort_values([*KEY, "metric"], ignore_index=True)


def variant_order(names: Iterable[str]) -> list[str]:
    """none, ebae, ebar, joint first, then the other columns (bm25, plain encoders) sorted."""
    names = set(names)
    return [v for v in CORE_VARIANTS if v in names] + sorted(names - set(CORE_VARIANTS))


def wide_table(long: pd.DataFrame, metric: str = "ndcg@10") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(means, seed counts): rows "dataset" (or "dataset/split" when a dataset has several splits),
    columns "variant" (or "variant [prompt_style]" when several prompt styles are present)."""
    df = long[long["metric"] == metric].copy()
    if df.empty:
        raise DataError(f"metric {metric!r} is in none of the files; have {sorted(long['metric'].unique())}")
    several_splits = df.groupby("dataset")["split"].nunique().max() > 1
    df["row"] = df["dataset"] + ("/" + df["split"] if several_splits else "")
    styled = df["prompt_style"] != "-"  # baselines (BM25, plain encoders) have no prompt style
    several_styles = df.loc[styled, "prompt_style"].nunique() > 1
    df["col"] = df["variant"] + (
        (" [" + df["prompt_style"] + "]").where(styled, "") if several_styles else ""
    )
    g = df.groupby(["row", "col"])["value"]
    means, counts = g.mean().unstack("col"), g.count().unstack("col")
    order = variant_order(df["variant"])
    cols = sorted(means.columns, key=lambda c: (order.index(c.split(" [")[0]), c))
    means, counts = means[cols], counts[cols].fillna(0).astype(int)
    means.attrs["prompts"] = {c: prompt_label(df[df["col"] == c]) for c in cols}
    return means, counts


def prompt_label(rows: pd.DataFrame) -> str:
    """'query/passage' prompt kinds of some runs ("ebar/ebae"); "-" for baselines (or runs scored without
    them); several different ones: joined by ", " (a column mixing assignments shows it)."""
    if not set(PROMPTS) <= set(rows.columns):
        return "-"
    pairs = {f"{q}/{p}" for q, p in zip(rows[PROMPTS[0]], rows[PROMPTS[1]], strict=True)} - {"-/-"}
    return ", ".join(sorted(pairs)) or "-"


def _bold_row(values: pd.Series, cells: list[str]) -> list[str]:
    best = values.max()
    return [
        f"**{c}**" if pd.notna(v) and np.isclose(v, best) else c for v, c in zip(values, cells, strict=True)
    ]


def wide_markdown(means: pd.DataFrame, counts: pd.DataFrame, metric: str = "ndcg@10") -> str:
    """Markdown: the row best in bold; "average" over datasets, only for columns that have them all."""
    cols = list(means.columns)
    lines = [f"| {metric} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    prompts = means.attrs.get("prompts", {})
    if any(prompts.get(c, "-") != "-" for c in cols):
        lines.append("| prompts (query/passage) | " + " | ".join(prompts.get(c, "-") for c in cols) + " |")
    for row, values in means.iterrows():
        cells = [
            "–" if pd.isna(v) else f"{v:.4f}" + (f" ({n} seeds)" if n > 1 else "")
            for v, n in zip(values, counts.loc[row], strict=True)
        ]
        lines.append(f"| {row} | " + " | ".join(_bold_row(values, cells)) + " |")
    avg = means.mean().where(means.notna().all())
    cells = ["–" if pd.isna(v) else f"{v:.4f}" for v in avg]
    lines.append("| average | " + " | ".join(_bold_row(avg, cells)) + " |")
    notes = "\nMean over seeds where several; average over datasets, '–' where a column lacks one.\n"
    if len(lines) > 2 and lines[2].startswith("| prompts"):
        notes += "Prompts: the prompt kinds of queries/passages in fine-tuning and encoding (ebae, ebar).\n"
    return "\n".join(lines) + "\n" + notes


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


def compare(run: Run, base: Run, metric: str) -> dict[str, Any]:
    """``run`` against ``base`` on the queries both scored: means, delta, wins/losses, p-values."""
    qids = sorted(set(run["per_query"]) & set(base["per_query"]))
    try:
        x = np.array([run["per_query"][q][metric] for q in qids], dtype=float)  # (n,)
        y = np.array([base["per_query"][q][metric] for q in qids], dtype=float)  # (n,)
    except KeyError:
        raise DataError(f"{run['source']} or {base['source']}: per-query values lack {metric!r}") from None
    d = x - y
    p_w, p_t = paired_tests(d)
    mean = lambda a: float(a.mean()) if len(a) else np.nan  # noqa: E731
    return {"n_queries": len(qids), "baseline_mean": mean(y), "variant_mean": mean(x), "delta": mean(d)} | {
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "wilcoxon_p": p_w,
        "ttest_p": p_t,
    }


def deltas(
    files_or_runs: Iterable[str | os.PathLike] | list[Run], metric: str = "ndcg@10", baseline: str = "none"
) -> pd.DataFrame:
    """Each variant against the baseline run with the same (prompt_style, seed, dataset, split).

    Runs with no such baseline run are listed in ``table.attrs["unmatched"]``.
    """
    runs = _runs(files_or_runs)
    base = {tuple(r[k] for k in KEY[1:]): r for r in runs if r["variant"] == baseline}
    order = variant_order(r["variant"] for r in runs)
    rows, unmatched = [], []
    for r in sorted(runs, key=lambda r: (order.index(r["variant"]), *(r[k] for k in KEY[1:]))):
        b = base.get(tuple(r[k] for k in KEY[1:]))
        if r["variant"] != baseline and b is None:
            unmatched.append(r["source"])
        elif r["variant"] != baseline:
            rows.append(
                {k: r[k] for k in [*KEY, *PROMPTS]}
                | {"baseline": baseline, "metric": metric}
                | compare(r, b, metric)
            )
    cols = [*KEY, *PROMPTS, "baseline", "metric", "n_queries", "baseline_mean", "variant_mean", "delta"]
    table = pd.DataFrame(rows, columns=[*cols, "wins", "losses", "wilcoxon_p", "ttest_p"])
    table.attrs["unmatched"] = unmatched
    return table


def deltas_markdown(table: pd.DataFrame, metric: str = "ndcg@10", baseline: str = "none") -> str:
    head = (
        "| variant | prompts q/p | prompt_style | seed | dataset | split | n | base mean | mean | delta | W/L "
        "| Wilcoxon p | t-test p |"
    )
    lines = [f"{metric}: each variant against `{baseline}`\n", head, "|---" * 13 + "|"]
    for r in table.itertuples():
        prompts = "-" if r.query_prompt == "-" else f"{r.query_prompt}/{r.passage_prompt}"
        lines.append(
            f"| {r.variant} | {prompts} | {r.prompt_style} | {r.seed} | {r.dataset} | {r.split} | {r.n_queries} | "
            f"{r.baseline_mean:.4f} | {r.variant_mean:.4f} | {r.delta:+.4f} | {r.wins}/{r.losses} | "
            f"{r.wilcoxon_p:.3g} | {r.ttest_p:.3g} |"
        )
    lines.append(
        "\nPaired over the queries both runs scored; Wilcoxon signed-rank (two-sided, zsplit) and paired"
        " t-test; no multiple-comparison correction."
    )
    if table.attrs.get("unmatched"):
        lines.append("\nNo baseline run with the same (prompt_style, seed, dataset, split) for: ")
        lines[-1] += ", ".join(table.attrs["unmatched"])
    return "\n".join(lines) + "\n"


# ---- cost: Snakemake benchmarks, the launcher's job records, encoding throughput -------------------
# The grid's paths carry the system: .../llara/{prompt_style}/{variant}/seed{seed}[/...] for LLaRA,
# .../baseline/{name}[/...] for baselines; benchmarks live under .../benchmarks/{stage}/<system>...
LLARA_PATH = re.compile(
    r"(?:^|/)llara/(?P<prompt_style>[^/]+)/(?P<variant>[^/]+)/seed(?P<seed>\d+)(?=[/.]|$)"
)
BASELINE_PATH = re.compile(r"(?:^|/)baseline/(?P<variant>[^/.]+)(?=[/.]|$)")
STAGE_PATH = re.compile(r"(?:^|/)benchmarks/(?P<stage>[^/]+)/")
SYSTEM = ["variant", "prompt_style", "seed"]
COST_STAGES = ("adapt", "finetune")


def path_labels(path: str | os.PathLike) -> dict[str, Any]:
    """{variant, prompt_style, seed} from a grid path (the last system segment in it); DataError if none."""
    text = Path(path).as_posix()
    found = list(LLARA_PATH.finditer(text))
    if found:
        m = found[-1]
        return {"variant": m["variant"], "prompt_style": m["prompt_style"], "seed": int(m["seed"])}
    found = list(BASELINE_PATH.finditer(text))
    if found:
        return {"variant": found[-1]["variant"], "prompt_style": "-", "seed": -1}
    raise DataError(f"{path}: no llara/<style>/<variant>/seed<N> or baseline/<name> in the path")


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
    rec = {
        "stage": m["stage"],
        **path_labels(path),
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
    """(variant, prompt_style, seed) -> corpus passages per second: rows / seconds summed over the
    shards and datasets (encoding only; model loading excluded; per job, not per machine)."""
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
    runs: list[Run],
    benchmarks: Iterable[str | os.PathLike] = (),
    encode_meta: Iterable[str | os.PathLike] = (),
    metric: str = "ndcg@10",
) -> pd.DataFrame:
    """One row per system (variant, prompt_style, seed) that has metrics: its prompt kinds, the mean
    of ``metric`` over datasets, and per stage (adapt, finetune) ``<stage>_gpu_hours``,
    ``<stage>_cpu_hours``, ``<stage>_wall_hours``, ``<stage>_max_rss_mb``, ``<stage>_cost_source``;
    ``encode_passages_per_s``. Benchmarks of other stages are ignored here (they stay in their TSVs)."""
    systems: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        key = tuple(r[k] for k in SYSTEM)
        row = systems.setdefault(key, dict(zip(SYSTEM, key, strict=True)) | {k: r[k] for k in PROMPTS})
        if metric in r["metrics"]:
            row.setdefault("_values", {})[(r["dataset"], r["split"])] = float(r["metrics"][metric])
    for f in benchmarks:
        b = load_benchmark(f)
        if b["stage"] not in COST_STAGES:
            continue
        key = tuple(b[k] for k in SYSTEM)
        if key not in systems:
            continue  # a system not in these metrics (e.g. a variant left out of the grid)
        row = systems[key]
        for field in ("gpu_hours", "cpu_hours", "wall_hours", "max_rss_mb", "gpus"):
            name = f"{b['stage']}_{field}"
            old = row.get(name)
            if field == "max_rss_mb" or field == "gpus":
                row[name] = b[field] if old is None else max(old, b[field] or 0)
            else:  # several benchmarks of one stage (shards): hours add up
                row[name] = b[field] if old is None or b[field] is None else old + b[field]
        row[f"{b['stage']}_cost_source"] = b["cost_source"]
        if b["note"] and b["cost_source"] != "benchmark+launcher":
            row[f"{b['stage']}_note"] = b["note"]
    speed = encode_throughput(encode_meta)
    datasets = {d for row in systems.values() for d in row.get("_values", {})}
    out = []
    for key, row in systems.items():
        values = row.pop("_values", {})
        row[metric] = float(np.mean(list(values.values()))) if values and set(values) == datasets else np.nan
        row["encode_passages_per_s"] = speed.get(key, np.nan)
        out.append(row)
    cols = [*SYSTEM, *PROMPTS, metric, "encode_passages_per_s"]
    for stage in COST_STAGES:
        cols += [f"{stage}_{f}" for f in ("gpus", "gpu_hours", "cpu_hours", "wall_hours", "max_rss_mb")]
        cols += [f"{stage}_cost_source", f"{stage}_note"]
    order = variant_order(r["variant"] for r in out)
    table = pd.DataFrame(out, columns=cols)
    table["_o"] = table["variant"].map(order.index)
    return table.sort_values(["_o", "prompt_style", "seed"], ignore_index=True).drop(columns="_o")


def uses_gpus(cost: pd.DataFrame) -> bool:
    """Whether any adaptation or fine-tuning job had GPUs: the cost unit is then the GPU-hour."""
    cols = [f"{s}_gpu_hours" for s in COST_STAGES if f"{s}_gpu_hours" in cost]
    return bool(cols) and bool((cost[cols].astype(float).fillna(0) > 0).any().any())


def cost_markdown(cost: pd.DataFrame, metric: str = "ndcg@10", baseline: str = "none") -> str:
    """Per system (mean over seeds): prompts, adaptation and fine-tuning hours, corpus passages per
    second, ``metric`` (average over datasets), its gain against ``baseline`` (same prompt style; for
    baselines: the only ``baseline`` row, if there is exactly one) and that gain per hour of the
    system's adaptation. Hours are GPU-hours when any job had a GPU, else CPU-hours, with wall-hours
    beside them; the header says which."""
    gpu = uses_gpus(cost)
    unit = "GPU-h" if gpu else "CPU-h"
    numeric = [c for c in cost.columns if c.endswith(("_hours", "_per_s", "_mb")) or c == metric]
    df = cost.copy()
    df[numeric] = df[numeric].astype(float)
    g = df.groupby(["variant", "prompt_style"], sort=False)
    mean = g[numeric].mean()
    seeds = g.size()
    prompts = g.apply(prompt_label, include_groups=False) if len(df) else pd.Series(dtype=str)
    base = mean.loc[mean.index.get_level_values("variant") == baseline]

    def hours(row, stage):
        h = row[f"{stage}_gpu_hours"] if gpu else row[f"{stage}_cpu_hours"]
        if pd.isna(h):
            return np.nan, "–"
        text = f"{h:.4f}" if gpu else f"{h:.4f} / {row[f'{stage}_wall_hours']:.4f}"
        return h, text

    suffix = "" if gpu else " / wall-h (no GPU: CPU-hours)"
    head = [
        "system",
        "prompts q/p",
        f"adaptation {unit}{suffix}",
        f"fine-tuning {unit}{suffix}",
        "corpus passages/s",
        f"{metric} (avg)",
        f"Δ vs {baseline}",
        f"Δ per adaptation {unit}",
    ]
    lines = [
        f"Cost of each system and {metric} gained against `{baseline}` per {unit} of adaptation\n",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for (variant, style), row in mean.iterrows():
        name = variant + ("" if style == "-" else f" [{style}]")
        if seeds[(variant, style)] > 1:
            name += f" ({seeds[(variant, style)]} seeds)"
        adapt_h, adapt_text = hours(row, "adapt") if "adapt_gpu_hours" in row else (np.nan, "–")
        _, ft_text = hours(row, "finetune") if "finetune_gpu_hours" in row else (np.nan, "–")
        if style != "-" and (baseline, style) in base.index:
            ref = base.loc[(baseline, style), metric]
        else:
            ref = base[metric].iloc[0] if len(base) == 1 else np.nan
        delta = row[metric] - ref
        per = delta / adapt_h if variant != baseline and style != "-" and adapt_h and adapt_h > 0 else np.nan
        speed = row["encode_passages_per_s"]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    prompts.get((variant, style), "-"),
                    adapt_text if style != "-" else "–",
                    ft_text if style != "-" else "–",
                    "–" if pd.isna(speed) else f"{speed:.1f}",
                    "–" if pd.isna(row[metric]) else f"{row[metric]:.4f}",
                    "–" if variant == baseline or pd.isna(delta) else f"{delta:+.4f}",
                    "–" if pd.isna(per) else f"{per:+.3g}",
                ]
            )
            + " |"
        )
    source = sorted({str(s) for c in df.columns if c.endswith("_cost_source") for s in df[c].dropna()})
    sources = {
        "sacct": "SLURM accounting (sacct)",
        "benchmark+launcher": "Snakemake's benchmark (wall time), the job itself (CPU time) and the launcher (GPUs)",
        "benchmark": "Snakemake's benchmark",
        "none": "nothing (sacct did not answer; see the notes)",
    }
    what = (
        "allocated GPUs x elapsed time, summed over a job's attempts"
        if gpu
        else "CPU time the stage command used (no job had a GPU); wall-h: elapsed time"
    )
    lines += [
        "",
        f"{unit}: {what}. Measured by: " + "; ".join(sources.get(s, s) for s in source) + "."
        if source
        else f"{unit}: no measurements were given.",
        "Corpus passages/s: encoding only (model loading excluded), per job.",
        f"Δ per adaptation {unit}: ({metric} - {metric} of `{baseline}`) / the system's adaptation {unit};"
        f" fine-tuning is the same recipe for every variant. `{baseline}` adapts nothing (its adaptation"
        " copies the base model). Means over seeds; no significance here (see deltas.md).",
    ]
    notes = sorted({str(n) for c in df.columns if c.endswith("_note") for n in df[c].dropna()})
    if notes:
        lines.append("Notes from the job records: " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def bar_chart(means: pd.DataFrame, path: str | os.PathLike, metric: str = "ndcg@10") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * means.size + 1), 3.5))
    width = 0.8 / max(1, len(means.columns))
    xs = np.arange(len(means))
    for i, col in enumerate(means.columns):
        ax.bar(xs + (i - (len(means.columns) - 1) / 2) * width, means[col].to_numpy(), width, label=col)
    ax.set_xticks(xs, list(means.index), rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small", ncols=min(5, len(means.columns)), loc="lower center", bbox_to_anchor=(0.5, 1))
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
) -> dict[str, Path]:
    """Write every table and the chart into ``output_dir``; returns {name: path}. ``cost.csv`` and
    ``cost.md`` are written when ``benchmarks`` or ``encode_meta`` are given."""
    out, stem = Path(output_dir), metric.replace("@", "")
    runs = load_runs(files)
    long = long_table(runs)
    means, counts = wide_table(long, metric)
    delta = deltas(runs, metric, baseline)
    paths = {
        n: out / n
        for n in ["long.csv", "long.parquet", f"{stem}.md", f"{stem}.png", "deltas.csv", "deltas.md"]
    }
    atomic_write_text(paths["long.csv"], long.to_csv(index=False))
    with atomic_path(paths["long.parquet"], suffix=".parquet") as tmp:
        long.to_parquet(tmp, index=False)
    atomic_write_text(paths[f"{stem}.md"], wide_markdown(means, counts, metric))
    bar_chart(means, paths[f"{stem}.png"], metric)
    atomic_write_text(paths["deltas.csv"], delta.to_csv(index=False))
    atomic_write_text(paths["deltas.md"], deltas_markdown(delta, metric, baseline))
    if benchmarks or encode_meta:
        cost = cost_table(runs, benchmarks, encode_meta, metric)
        paths |= {n: out / n for n in ("cost.csv", "cost.md")}
        atomic_write_text(paths["cost.csv"], cost.to_csv(index=False))
        atomic_write_text(paths["cost.md"], cost_markdown(cost, metric, baseline))
    return paths


def _runs(files_or_runs: Iterable[Any]) -> list[Run]:
    items = list(files_or_runs)
    return items if items and all(isinstance(i, dict) for i in items) else load_runs(items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.tables", description="Metrics JSONs -> result tables.")
    p.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics JSONs from llara.score")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--metric", default="ndcg@10", help="metric of the wide table, chart and deltas")
    p.add_argument("--baseline", default="none", help="variant the deltas are taken against")
    p.add_argument(
        "--benchmarks",
        nargs="*",
        default=[],
        type=Path,
        help="Snakemake benchmark TSVs under benchmarks/<stage>/<system>... (job records beside them are read)",
    )
    p.add_argument(
        "--encode-meta",
        nargs="*",
        default=[],
        type=Path,
        help="corpus shard .meta.json files of llara.encode",
    )
    args = p.parse_args(argv)
    try:
        paths = write_tables(
            args.metrics, args.output_dir, args.metric, args.baseline, args.benchmarks, args.encode_meta
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"tables in {args.output_dir}: " + " ".join(p.name for p in paths.values()))
    print(f'read them with: pd.read_parquet("{paths["long.parquet"]}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
