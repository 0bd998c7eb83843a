"""Compare what our evaluation path measures with published numbers (docs/anchors.yaml).

    .venv/bin/python bench/anchors.py                         # BM25 anchors (seconds), MiniLM read or skipped
    .venv/bin/python bench/anchors.py --run-slow              # also runs all-MiniLM-L6-v2 (~15 min on 2 cores)
    .venv/bin/python bench/anchors.py --metrics minilm=results/bench/scifact_minilm.json

Writes a markdown table (anchor, published, ours, difference, within tolerance) to stdout and JSON
to --output. SciFact is read from ../shared/data/beir/scifact unless --beir-dir says otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def measure_bm25(beir: Path, work: Path) -> dict:
    run, out = work / "bm25.trec", work / "bm25.json"
    py = sys.executable
    subprocess.run(
        [py, "-m", "llara.bm25", "--beir-dir", str(beir), "--split", "test", "--output", str(run)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            py,
            "-m",
            "llara.score",
            "--qrels",
            str(beir / "qrels" / "test.tsv"),
            "--run",
            str(run),
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return json.loads(out.read_text())


def measure_minilm(beir: Path, work: Path) -> dict:
    out = work / "minilm.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "scifact_minilm.py"),
            "--beir-dir",
            str(beir),
            "--output",
            str(out),
            "--work-dir",
            str(work / "minilm"),
        ],
        check=True,
    )
    return json.loads(out.read_text())


def metric_of(result: dict, metric: str) -> float:
    """The mean of ``metric`` in a llara.score metrics JSON (or a bench JSON holding one)."""
    for key in ("metrics", "mean", "aggregate"):
        if isinstance(result.get(key), dict) and metric in result[key]:
            return float(result[key][metric])
    if metric in result:
        return float(result[metric])
    raise KeyError(f"no {metric!r} in the metrics JSON (keys: {sorted(result)})")


def compare(anchors: list[dict], measured: dict[str, dict]) -> list[dict]:
    rows = []
    for a in anchors:
        result = measured.get(a["measure"])
        ours = metric_of(result, a["metric"]) if result is not None else None
        diff = None if ours is None else ours - a["published"]
        rows.append(
            {
                **a,
                "ours_value": ours,
                "difference": diff,
                "within": None if diff is None else abs(diff) <= a["tolerance"],
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| anchor | published | ours | difference | tolerance | within |", "|---|---|---|---|---|---|"]
    for r in rows:
        ours = "not measured" if r["ours_value"] is None else f"{r['ours_value']:.4f}"
        diff = "" if r["difference"] is None else f"{r['difference']:+.4f}"
        within = "" if r["within"] is None else ("yes" if r["within"] else "**no**")
        lines.append(
            f"| {r['name']} | {r['published']:.4f} | {ours} | {diff} | {r['tolerance']} | {within} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=Path, default=REPO / "docs" / "anchors.yaml")
    ap.add_argument("--beir-dir", type=Path, default=REPO.parent / "shared" / "data" / "beir" / "scifact")
    ap.add_argument("--metrics", action="append", default=[], help="NAME=metrics.json: use this measurement")
    ap.add_argument("--run-slow", action="store_true", help="also run the slow measurements (MiniLM)")
    ap.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "anchors.json")
    args = ap.parse_args(argv)
    anchors = yaml.safe_load(args.anchors.read_text())["anchors"]
    measured = {}
    for item in args.metrics:
        name, _, path = item.partition("=")
        measured[name] = json.loads(Path(path).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        if "bm25" not in measured:
            measured["bm25"] = measure_bm25(args.beir_dir, Path(tmp))
        if "minilm" not in measured and args.run_slow:
            measured["minilm"] = measure_minilm(args.beir_dir, Path(tmp))
    rows = compare(anchors, measured)
    print(markdown(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["within"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
