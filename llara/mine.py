"""Mine hard negatives: training queries -> ``{query, pos, neg}`` JSONL for fine-tuning.

Negatives are sampled (with a seed) from each query's top ``depth`` documents of a retriever,
minus its positives (by id and by identical text), minus the document whose id is the query id,
optionally after skipping the first ``skip_top`` ranks (likely false negatives). The retriever is
BM25 (:mod:`llara.bm25`) or any TREC run (a dense retriever's, from :mod:`llara.search`); ``none``
writes the rows with an empty ``neg`` list (fine-tune them with ``--group_size 1``: in-batch
negatives only). Each query
gets its own random stream (seeded with ``seed`` and the query id), so a row does not change when
other queries are added or removed.

Input: a BEIR split (``--beir-dir DIR --split train``; positives are qrels with score > 0) or a JSONL
file of ``{query, pos}`` rows (``pos`` a string or list of strings), whose candidate pool is a BEIR
``--corpus`` file or, without one, all positives of the file.

CLI::

    python -m llara.mine --beir-dir DIR --split train --negatives bm25 --output train.jsonl
    python -m llara.mine --beir-dir DIR --split train --negatives run --run dense.trec --output train.jsonl
    python -m llara.mine --pairs pairs.jsonl --negatives bm25 --output train.jsonl
    python -m llara.mine --beir-dir DIR --split train --negatives none --output train.jsonl
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llara.io import (
    DataError,
    atomic_write_jsonl,
    cli_main,
    cli_warnings,
    iter_jsonl,
    report_stream,
    write_config,
)
from llara.runs import Run, ranked, read_trec_run


@dataclass
class TrainingSet:
    """Queries with their positive documents and the candidate pool negatives come from."""

    queries: dict[str, str]  # qid -> text
    positives: dict[str, list[str]]  # qid -> doc ids
    corpus: dict[str, str]  # doc id -> passage text


def from_beir(root: str | Path, split: str = "train") -> TrainingSet:
    from llara.beir import load_beir

    ds = load_beir(root, split)
    doc_ids, texts = ds.corpus_items()
    corpus = dict(zip(doc_ids, texts, strict=True))
    positives = {q: [d for d, r in rels.items() if r > 0] for q, rels in ds.qrels.items()}
    positives = {q: p for q, p in positives.items() if p}
    queries = {q: t for q, t in ds.queries.items() if q in positives}
    return TrainingSet(queries, positives, corpus)


def from_pairs(path: str | Path, corpus_path: str | Path | None = None) -> TrainingSet:
    """``{query, pos}`` rows (query ids ``q<line>``); candidates from ``corpus_path`` or the positives."""
    from llara.beir import join_title_text, load_corpus

    path = Path(path)
    rows: list[tuple[int, str, list[str]]] = []
    for lineno, obj in iter_jsonl(path):
        query, pos = obj.get("query"), obj.get("pos")
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"{path}:{lineno}: field 'query' must be a non-empty string")
        if isinstance(pos, str):
            pos = [pos]
        if not isinstance(pos, list) or not pos or not all(isinstance(p, str) for p in pos):
            raise DataError(f"{path}:{lineno}: field 'pos' must be a string or a non-empty list of strings")
        rows.append((lineno, query, pos))
    if not rows:
        raise DataError(f"{path}: no rows; expected JSONL rows with 'query' and 'pos'")
    corpus: dict[str, str] = {}
    if corpus_path is not None:
        raw = load_corpus(corpus_path)
        corpus = {d: join_title_text(v["title"], v["text"]) for d, v in raw.items()}
    by_text = {text: doc_id for doc_id, text in corpus.items()}
    queries: dict[str, str] = {}
    positives: dict[str, list[str]] = {}
    for lineno, query, pos in rows:
        qid = f"q{lineno}"
        queries[qid] = query
        ids = []
        for text in pos:
            if text not in by_text:  # a positive outside the given corpus joins the pool
                doc_id = f"p{len(corpus)}"
                while doc_id in corpus:
                    doc_id += "_"
                corpus[doc_id] = text
                by_text[text] = doc_id
            ids.append(by_text[text])
        positives[qid] = ids
    return TrainingSet(queries, positives, corpus)


def sample_negatives(
    ranking: Sequence[str],
    exclude: set[str],
    num_negs: int,
    rng: random.Random,
    depth: int = 100,
    skip_top: int = 0,
) -> list[str]:
    """Sample ``num_negs`` ids (fewer if the pool is smaller) from ranks ``skip_top..depth`` of
    ``ranking``, leaving out ``exclude``; returned in rank order."""
    pool = [d for d in ranking[skip_top:depth] if d not in exclude]
    if len(pool) <= num_negs:
        return pool
    chosen = set(rng.sample(range(len(pool)), num_negs))
    return [d for i, d in enumerate(pool) if i in chosen]


def mine(
    data: TrainingSet,
    run: Run,
    num_negs: int = 15,
    depth: int = 100,
    skip_top: int = 0,
    seed: int = 0,
    min_negs: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows ``{query, pos, neg, query_id, pos_ids, neg_ids}`` and counts of what was dropped."""
    rows: list[dict[str, Any]] = []
    stats = {
        "queries": len(data.queries),
        "rows": 0,
        "not_in_run": 0,
        "too_few_negatives": 0,
        "short_rows": 0,
    }
    for qid, query in data.queries.items():
        if qid not in run:
            stats["not_in_run"] += 1
            continue
        pos_ids = data.positives[qid]
        pos_texts = {data.corpus[d] for d in pos_ids}
        exclude = set(pos_ids) | {qid}
        ranking = [d for d, _ in ranked(run[qid]) if d in data.corpus]
        exclude |= {d for d in ranking[:depth] if data.corpus[d] in pos_texts}  # duplicates of a positive
        rng = random.Random(f"{seed}:{qid}")
        neg_ids = sample_negatives(ranking, exclude, num_negs, rng, depth, skip_top)
        if len(neg_ids) < min_negs:
            stats["too_few_negatives"] += 1
            continue
        stats["short_rows"] += len(neg_ids) < num_negs
        rows.append(
            {
                "query": query,
                "pos": [data.corpus[d] for d in pos_ids],
                "neg": [data.corpus[d] for d in neg_ids],
                "query_id": qid,
                "pos_ids": list(pos_ids),
                "neg_ids": neg_ids,
            }
        )
    stats["rows"] = len(rows)
    return rows, stats


def bm25_run(data: TrainingSet, depth: int, **bm25_params: Any) -> Run:
    from llara.bm25 import BM25Index

    doc_ids = list(data.corpus)
    index = BM25Index(doc_ids, [data.corpus[d] for d in doc_ids], **bm25_params)
    qids = list(data.queries)
    # one extra per positive so that removing positives still leaves `depth` candidates
    extra = max((len(p) for p in data.positives.values()), default=0) + 1
    return index.search(qids, [data.queries[q] for q in qids], depth + extra)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.mine", description="Mine hard negatives -> JSONL.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--beir-dir", type=Path, help="BEIR folder (positives from qrels of --split)")
    src.add_argument("--pairs", type=Path, help="JSONL rows {query, pos}")
    p.add_argument("--split", default="train")
    p.add_argument(
        "--corpus", type=Path, default=None, help="with --pairs: BEIR corpus.jsonl as candidate pool"
    )
    p.add_argument(
        "--negatives",
        choices=("bm25", "run", "none"),
        default="bm25",
        help="bm25; run: from --run FILE; none: no negatives (an empty neg list: in-batch negatives only)",
    )
    p.add_argument("--run", type=Path, default=None, help="TREC run to take negatives from (--negatives run)")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--num-negs", type=int, default=15)
    p.add_argument("--depth", type=int, default=100, help="sample from the top-depth documents")
    p.add_argument("--skip-top", type=int, default=0, help="ignore the first ranks (likely false negatives)")
    p.add_argument("--min-negs", type=int, default=1, help="drop a query with fewer negatives than this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stemmer", default="english", help="BM25 stemmer (Snowball language or 'none')")
    args = p.parse_args(argv)
    if args.negatives == "run" and args.run is None:
        p.error("--negatives run needs --run FILE (a TREC run over the same document ids)")
    if args.negatives == "run" and args.pairs is not None:
        p.error("--negatives run needs --beir-dir: the run's query and document ids must match the data")
    if args.corpus is not None and args.pairs is None:
        p.error("--corpus goes with --pairs (a BEIR folder has its own corpus)")
    with cli_warnings():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    data = from_beir(args.beir_dir, args.split) if args.beir_dir else from_pairs(args.pairs, args.corpus)
    if args.negatives == "none":  # every query, no candidates: rows with an empty neg list
        run = {qid: {} for qid in data.queries}
        args.num_negs = args.min_negs = 0
    elif args.negatives == "bm25":
        run = bm25_run(data, args.depth, stemmer=args.stemmer)
    else:
        run = read_trec_run(args.run)
        unknown = {d for docs in run.values() for d in docs} - data.corpus.keys()
        if unknown:
            raise DataError(
                f"{args.run}: {len(unknown)} document ids are not in the corpus (e.g. "
                f"{sorted(unknown)[:3]}); was the run made on another dataset?"
            )
    rows, stats = mine(data, run, args.num_negs, args.depth, args.skip_top, args.seed, args.min_negs)
    if not rows:
        source = args.beir_dir or args.pairs
        raise DataError(f"{source}: no rows mined ({stats}); check --depth / --min-negs and the run")
    atomic_write_jsonl(args.output, rows)
    write_config(args.output, vars(args) | {"stats": stats})
    print(f"{args.output}: {stats['rows']} rows ({stats})", file=report_stream(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
