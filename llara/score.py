"""Score stage: a TREC run against qrels with pytrec_eval, under BEIR's conventions.

Metrics: NDCG@10, MRR@10, Recall@100, Recall@1000, MAP@10. Conventions (as BEIR's
``EvaluateRetrieval.evaluate``):

- a retrieved document whose id equals the query id is dropped first (``ignore_identical_ids``);
- by default the mean is over all judged queries: a judged query absent from the run counts 0
  (trec_eval ``-c``; a run file cannot tell "retrieved nothing" from "not run", and BM25 writes no
  line for a query that matches nothing). ``missing_as_zero=False`` (``--skip-missing``) averages
  over the judged queries present in the run only, as BEIR's ``evaluate`` does. Either way the
  output lists such queries and counts them (``num_queries_missing_from_run``). With dense
  retrieval every query is in the run, and the two agree;
- MRR@10 is trec_eval's ``recip_rank`` on each query's top 10, ranked as trec_eval ranks (score
  descending, then document id descending).

Per-query values are kept in the metrics JSON, with provenance (model, variant, prompt style, query
and passage prompts, dataset, split, code version, seed, date).

CLI::

    python -m llara.score --qrels DIR/qrels/test.tsv --run run.trec --output metrics.json \\
        --model all-MiniLM-L6-v2 --variant minilm --dataset scifact --split test --seed 0 \\
        [--prompt-style released --query-prompt ebar --passage-prompt ebae] [--skip-missing]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import pytrec_eval

from llara.grid import KINDS, check_choice
from llara.io import (
    DataError,
    atomic_write_json,
    code_version,
    format_ids,
    iter_lines,
    report_stream,
    utc_now,
    write_config,
)
from llara.runs import Run, ranked, read_trec_run

Qrels = dict[str, dict[str, int]]

# our name -> (pytrec_eval measure, key in its output)
TREC_MEASURES: dict[str, tuple[str, str]] = {
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10"),
    "recall@100": ("recall.100", "recall_100"),
    "recall@1000": ("recall.1000", "recall_1000"),
    "map@10": ("map_cut.10", "map_cut_10"),
}
MRR_CUTOFF = 10
METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "map@10")


def drop_identical_ids(run: Run) -> Run:
    """BEIR: a document whose id equals the query id is not counted as retrieved."""
    return {qid: {d: s for d, s in docs.items() if d != qid} for qid, docs in run.items()}


def truncate_run(run: Run, k: int) -> Run:
    """Each query's top ``k`` documents, in trec_eval's ranking order."""
    return {qid: dict(ranked(docs)[:k]) for qid, docs in run.items()}


def per_query_metrics(
    qrels: Qrels, run: Run, ignore_identical_ids: bool = True
) -> dict[str, dict[str, float]]:
    """{qid: {metric: value}} for the judged queries present in the run."""
    if ignore_identical_ids:
        run = drop_identical_ids(run)
    run = {qid: docs for qid, docs in run.items() if qid in qrels}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {m for m, _ in TREC_MEASURES.values()})
    scores = evaluator.evaluate(run)
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncate_run(run, MRR_CUTOFF))
    out: dict[str, dict[str, float]] = {}
    for qid in sorted(scores):
        values = {name: float(scores[qid][key]) for name, (_, key) in TREC_MEASURES.items()}
        values["mrr@10"] = float(mrr[qid]["recip_rank"])
        out[qid] = {name: values[name] for name in METRICS}
    return out


def score(
    qrels: Qrels, run: Run, ignore_identical_ids: bool = True, missing_as_zero: bool = True
) -> dict[str, Any]:
    """Aggregate and per-query metrics of ``run`` against ``qrels``."""
    if not qrels:
        raise ValueError("qrels are empty: nothing to score")
    per_query = per_query_metrics(qrels, run, ignore_identical_ids)
    missing = sorted(qid for qid in qrels if qid not in per_query)
    if missing_as_zero:
        for qid in missing:
            per_query[qid] = dict.fromkeys(METRICS, 0.0)
    n = len(per_query)
    aggregate = {name: (sum(v[name] for v in per_query.values()) / n if n else 0.0) for name in METRICS}
    return {
        "metrics": aggregate,
        "num_queries": n,  # the queries the mean is over
        "num_judged_queries": len(qrels),
        "num_queries_missing_from_run": len(missing),
        "queries_missing_from_run": missing,
        "per_query": per_query,
        "conventions": {
            "ignore_identical_ids": ignore_identical_ids,
            "missing_as_zero": missing_as_zero,
            "mean_over": "all judged queries (missing from the run = 0, trec_eval -c)"
            if missing_as_zero
            else "judged queries in the run (BEIR; --skip-missing)",
            "mrr@10": "pytrec_eval recip_rank on the top 10 (score desc, docid desc)",
        },
    }


def load_qrels_file(path: str | os.PathLike) -> Qrels:
    """BEIR qrels TSV (``query-id corpus-id score``, header optional) or TREC qrels (``qid 0 docid rel``)."""
    from llara.beir import load_qrels

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: qrels file not found")
    first = next((line for _, line in iter_lines(path) if line.strip()), "")
    if "\t" not in first and len(first.split()) == 4:  # TREC format
        qrels: Qrels = {}
        for lineno, line in iter_lines(path):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 4:
                raise DataError(f"{path}:{lineno}: expected 4 columns 'qid 0 docid rel', got {len(parts)}")
            try:
                rel = int(parts[3])
            except ValueError:
                raise DataError(f"{path}:{lineno}: relevance {parts[3]!r} is not an integer") from None
            qrels.setdefault(parts[0], {})[parts[2]] = rel
        return qrels
    return load_qrels(path)


def provenance(
    model: str | None = None,
    variant: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    seed: int | None = None,
    prompt_style: str | None = None,
    query_prompt: str | None = None,
    passage_prompt: str | None = None,
) -> dict[str, Any]:
    for name, value in (("query_prompt", query_prompt), ("passage_prompt", passage_prompt)):
        if value is not None:
            check_choice(value, KINDS, name)
    return {
        "model": model,
        "variant": variant,
        "prompt_style": prompt_style,
        "query_prompt": query_prompt,
        "passage_prompt": passage_prompt,
        "dataset": dataset,
        "split": split,
        "seed": seed,
        "code_version": code_version(),
        "date": utc_now(),
    }


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def score_files(
    qrels_path: str | os.PathLike,
    run_path: str | os.PathLike,
    ignore_identical_ids: bool = True,
    missing_as_zero: bool = True,
    **prov: Any,
) -> dict[str, Any]:
    """Score a run file against a qrels file; the result carries provenance and input hashes."""
    qrels = load_qrels_file(qrels_path)
    run = read_trec_run(run_path)
    result = score(qrels, run, ignore_identical_ids, missing_as_zero)
    result["provenance"] = provenance(**prov) | {
        "qrels": str(qrels_path),
        "run": str(run_path),
        "run_sha256": sha256_file(run_path),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m llara.score", description="Score a TREC run with pytrec_eval."
    )
    p.add_argument("--qrels", required=True, type=Path, help="BEIR qrels TSV (or TREC qrels)")
    p.add_argument("--run", required=True, type=Path, help="TREC run file")
    p.add_argument("--output", required=True, type=Path, help="metrics JSON to write")
    p.add_argument("--model", default=None)
    p.add_argument("--variant", default=None)
    p.add_argument("--dataset", default=None)
    p.add_argument("--split", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--prompt-style", default=None, help="LLaRA prompt style of the model ('-' or omitted: none)"
    )
    p.add_argument(
        "--query-prompt",
        choices=KINDS,
        default=None,
        help="LLaRA prompt the queries were encoded with (recorded in the provenance; omitted: none)",
    )
    p.add_argument(
        "--passage-prompt",
        choices=KINDS,
        default=None,
        help="LLaRA prompt the passages were encoded with (recorded in the provenance; omitted: none)",
    )
    p.add_argument(
        "--keep-identical-ids",
        dest="ignore_identical_ids",
        action="store_false",
        help="count a retrieved document whose id equals the query id (BEIR drops it)",
    )
    missing = p.add_mutually_exclusive_group()
    missing.add_argument(
        "--missing-as-zero",
        dest="missing_as_zero",
        action="store_true",
        default=True,
        help="judged queries absent from the run count 0, as trec_eval -c (the default)",
    )
    missing.add_argument(
        "--skip-missing",
        dest="missing_as_zero",
        action="store_false",
        help="average over the judged queries present in the run only, as BEIR's evaluate",
    )
    args = p.parse_args(argv)
    try:
        result = score_files(
            args.qrels,
            args.run,
            args.ignore_identical_ids,
            args.missing_as_zero,
            model=args.model,
            variant=args.variant,
            dataset=args.dataset,
            split=args.split,
            seed=args.seed,
            prompt_style=None if args.prompt_style in (None, "", "-") else args.prompt_style,
            query_prompt=args.query_prompt,
            passage_prompt=args.passage_prompt,
        )
        atomic_write_json(args.output, result)
        write_config(args.output, vars(args))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result["queries_missing_from_run"]:
        how = "counted as 0" if args.missing_as_zero else "left out of the mean (--skip-missing)"
        missing_ids = result["queries_missing_from_run"]
        print(
            f"warning: {len(missing_ids)} of {result['num_judged_queries']} judged queries are not in "
            f"{args.run}: {how} (ids: {format_ids(missing_ids)})",
            file=sys.stderr,
        )
    summary = "  ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
    print(f"{args.output}: {result['num_queries']} queries  {summary}", file=report_stream(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
