"""Tables stage: metrics JSONs (from :mod:`llara.score`) -> the grid's user-facing tables and chart.

Each metrics file is one run, labelled from its ``provenance``: ``variant``, ``dataset`` (both
required), ``split`` and ``model`` ("-" when absent), ``prompt_style`` ("-") and ``seed`` (-1).
A run is keyed by (variant, prompt_style, seed, dataset, split); two files with the same key fail.

Outputs, written atomically into the output folder (``ndcg10`` is the metric's file stem):

- ``long.csv`` / ``long.parquet``: one row per (variant, prompt_style, seed, dataset, split, metric);
- ``ndcg10.md``: datasets x variants, mean over seeds (seed count noted), an average row, row best
  in bold; ``ndcg10.png``: the same numbers as grouped bars;
- ``deltas.csv`` / ``deltas.md``: each variant against the baseline on the same (prompt_style, seed,
  dataset, split), over the queries both scored: mean paired difference, Wilcoxon signed-rank p
  (two-sided, ``zero_method="zsplit"``: queries where both runs score the same, often both 0 in
  retrieval, are kept and their ranks split between the signs, which is conservative) and the paired
  t-test p. All-zero differences give delta 0 and p = 1. No multiple-comparison correction.

CLI::

    python -m llara.tables --metrics results/score/*/*/metrics.json --output-dir results/tables
"""

from __future__ import annotations

import argparse
import json
import os
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
Run = dict[str, Any]  # labels (KEY + model, source) plus "metrics", "num_queries", "per_query"


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
    labels = [*KEY, "model"]
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
    return means[cols], counts[cols].fillna(0).astype(int)


def _bold_row(values: pd.Series, cells: list[str]) -> list[str]:
    best = values.max()
    return [
        f"**{c}**" if pd.notna(v) and np.isclose(v, best) else c for v, c in zip(values, cells, strict=True)
    ]


def wide_markdown(means: pd.DataFrame, counts: pd.DataFrame, metric: str = "ndcg@10") -> str:
    """Markdown: the row best in bold; "average" over datasets, only for columns that have them all."""
    cols = list(means.columns)
    lines = [f"| {metric} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
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
                {k: r[k] for k in KEY} | {"baseline": baseline, "metric": metric} | compare(r, b, metric)
            )
    cols = [*KEY, "baseline", "metric", "n_queries", "baseline_mean", "variant_mean", "delta"]
    table = pd.DataFrame(rows, columns=[*cols, "wins", "losses", "wilcoxon_p", "ttest_p"])
    table.attrs["unmatched"] = unmatched
    return table


def deltas_markdown(table: pd.DataFrame, metric: str = "ndcg@10", baseline: str = "none") -> str:
    head = "| variant | prompt_style | seed | dataset | split | n | base mean | mean | delta | W/L | Wilcoxon p | t-test p |"
    lines = [f"{metric}: each variant against `{baseline}`\n", head, "|---" * 12 + "|"]
    for r in table.itertuples():
        lines.append(
            f"| {r.variant} | {r.prompt_style} | {r.seed} | {r.dataset} | {r.split} | {r.n_queries} | "
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
) -> dict[str, Path]:
    """Write every table and the chart into ``output_dir``; returns {name: path}."""
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
    args = p.parse_args(argv)
    try:
        paths = write_tables(args.metrics, args.output_dir, args.metric, args.baseline)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"tables in {args.output_dir}: " + " ".join(p.name for p in paths.values()))
    print(f'read them with: pd.read_parquet("{paths["long.parquet"]}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
