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
and passage prompts, dataset, split, code version, seed, date). The prompts come from the query
encoding (``--encoding DIR``: its shards' ``.meta.json`` record the encoder's ``prompt_style``,
``query_prompt``, ``passage_prompt``; a plain encoder has none); a prompt flag given as well must agree.

A run cut short fails: when the search's ``<run>.stats.json`` lies beside the run (or with
``--expect-queries N``), a run holding fewer queries than the search wrote is an error. A non-finite
score in the run is an error naming its line.

CLI::

    python -m llara.score --qrels DIR/qrels/test.tsv --run run.trec --output metrics.json \\
        --model all-MiniLM-L6-v2 --variant minilm --dataset scifact --split test --seed 0 \\
        [--encoding results/encode/<system>/scifact/queries-test] [--skip-missing]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytrec_eval

from llara.grid import KINDS, PROMPT_STYLES, check_choice
from llara.io import (
    DataError,
    atomic_write_json,
    cli_main,
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
PROMPT_KEYS = ("prompt_style", "query_prompt", "passage_prompt")  # from the encoder's settings


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
    encoding: str | os.PathLike | None = None,
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
        "encoding": None if encoding is None else str(encoding),
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


def encoding_prompts(folder: str | os.PathLike) -> tuple[dict[str, str | None], Path]:
    """The prompts a query encoding was made with: ``{prompt_style, query_prompt, passage_prompt}``
    from the ``encoder`` settings in its shards' ``.meta.json`` (absent: None, as for a plain HF
    encoder), and the marker they were read from. Shards that disagree are an error."""
    from llara.shards import list_shards, read_meta

    found: dict[str, str | None] | None = None
    source: Path | None = None
    for paths in list_shards(folder, "queries"):
        settings = read_meta(paths).get("encoder") or {}
        if not isinstance(settings, dict):
            raise DataError(f"{paths['meta']}: 'encoder' must be an object; re-encode the queries")
        values = {key: settings.get(key) for key in PROMPT_KEYS}
        for key, valid in (
            ("prompt_style", PROMPT_STYLES),
            ("query_prompt", KINDS),
            ("passage_prompt", KINDS),
        ):
            if values[key] is not None and values[key] not in valid:
                raise DataError(
                    f"{paths['meta']}: encoder {key} {values[key]!r} is not one of {', '.join(valid)}; "
                    "re-encode the queries"
                )
        if found is None:
            found, source = values, paths["meta"]
        elif values != found:
            raise DataError(
                f"{paths['meta']}: encoded with prompts {values}, but {source} with {found}; re-encode "
                f"the queries in {folder}"
            )
    assert found is not None and source is not None  # list_shards found at least one shard
    return found, source


def resolve_prompts(
    flags: dict[str, str | None], encoding: str | os.PathLike | None
) -> dict[str, str | None]:
    """The prompts to record: from ``encoding`` when given (see :func:`encoding_prompts`), else the
    flags. ``flags`` maps each of :data:`PROMPT_KEYS` to its flag's value (None: not given; a
    ``prompt_style`` of ``-`` or empty says "none"); a flag given with an encoding must agree."""
    given = {key: value for key, value in flags.items() if value is not None}
    explicit = {
        key: (None if key == "prompt_style" and value in ("", "-") else value) for key, value in given.items()
    }
    if encoding is None:
        return {key: explicit.get(key) for key in PROMPT_KEYS}
    recorded, source = encoding_prompts(encoding)
    for key, value in explicit.items():
        if value != recorded[key]:
            raise DataError(
                f"--{key.replace('_', '-')} {given[key]} disagrees with the encoding: {source} records "
                f"{key} {recorded[key]!r}; drop the flag (the encoding says which) or re-encode"
            )
    return recorded


def expected_queries(run_path: str | os.PathLike, expect: int | None = None) -> tuple[int, str] | None:
    """How many queries the run must hold and who says so: ``expect`` (``--expect-queries``), else
    the search's ``<run>.stats.json`` beside the run (``queries_written``; a stats file of an older
    exact search: ``queries``, every one of which has documents), else None (no check)."""
    if expect is not None:
        return expect, "--expect-queries"
    run_path = Path(run_path)
    stats_path = run_path.with_name(run_path.name + ".stats.json")
    if not stats_path.is_file():
        return None
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{stats_path}: the search's stats do not parse ({exc}); delete it with its run and rerun "
            "the search (snakemake --forcerun search)"
        ) from None
    if not isinstance(stats, dict):
        raise DataError(f"{stats_path}: expected a JSON object (the search's stats); rerun the search")
    n = stats.get("queries_written", stats.get("queries") if "index" not in stats else None)
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool):
        raise DataError(f"{stats_path}: queries_written must be an integer, got {n!r}; rerun the search")
    return n, str(stats_path)


def score_files(
    qrels_path: str | os.PathLike,
    run_path: str | os.PathLike,
    ignore_identical_ids: bool = True,
    missing_as_zero: bool = True,
    expect_queries: int | None = None,
    **prov: Any,
) -> dict[str, Any]:
    """Score a run file against a qrels file; the result carries provenance and input hashes.

    A run holding fewer queries than its search wrote (see :func:`expected_queries`) is an error.
    """
    qrels = load_qrels_file(qrels_path)
    run = read_trec_run(run_path)
    expected = expected_queries(run_path, expect_queries)
    if expected is not None and len(run) < expected[0]:
        raise DataError(
            f"{run_path}: holds {len(run)} queries but the search wrote {expected[0]} ({expected[1]}); the "
            "run file is cut short: rerun the search (snakemake --forcerun search) or copy the run again"
        )
    result = score(qrels, run, ignore_identical_ids, missing_as_zero)
    result["provenance"] = provenance(**prov) | {
        "qrels": str(qrels_path),
        "run": str(run_path),
        "run_sha256": sha256_file(run_path),
    }
    return result


@cli_main
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
        "--encoding",
        type=Path,
        default=None,
        help="the query encoding's folder (queries.shard*.meta.json): the prompts recorded in the "
        "provenance are its encoder's",
    )
    p.add_argument(
        "--expect-queries",
        type=int,
        default=None,
        help="fail when the run holds fewer queries (default: the search's <run>.stats.json, when there)",
    )
    p.add_argument(
        "--prompt-style",
        default=None,
        help="LLaRA prompt style of the model ('-': none; omitted: the encoding's, else none)",
    )
    p.add_argument(
        "--query-prompt",
        choices=KINDS,
        default=None,
        help="LLaRA prompt the queries were encoded with (omitted: the encoding's, else none)",
    )
    p.add_argument(
        "--passage-prompt",
        choices=KINDS,
        default=None,
        help="LLaRA prompt the passages were encoded with (omitted: the encoding's, else none)",
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
    if args.expect_queries is not None and args.expect_queries < 0:
        p.error(f"--expect-queries must be >= 0, got {args.expect_queries}")
    prompts = resolve_prompts({key: getattr(args, key) for key in PROMPT_KEYS}, args.encoding)
    result = score_files(
        args.qrels,
        args.run,
        args.ignore_identical_ids,
        args.missing_as_zero,
        args.expect_queries,
        model=args.model,
        variant=args.variant,
        dataset=args.dataset,
        split=args.split,
        seed=args.seed,
        encoding=args.encoding,
        **prompts,
    )
    atomic_write_json(args.output, result)
    write_config(args.output, vars(args))
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
