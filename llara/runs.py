"""The TREC run format: ``qid Q0 docid rank score tag`` per retrieved document.

Written by search and BM25, read by scoring, mining and the tables; reading one imports nothing heavy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from llara.io import DataError, atomic_path, iter_lines

Run = dict[str, dict[str, float]]  # {qid: {docid: score}}


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """Documents of one query in rank order: score descending, then docid descending (trec_eval's)."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def write_trec_run(path: str | os.PathLike, run: Run, tag: str) -> Path:
    """Write ``qid Q0 docid rank score tag`` lines, ranks from 1 in trec_eval order (atomically).

    A non-finite score (NaN, inf) is a DataError: nothing is written (a reader would refuse it).
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be a non-empty word without spaces, got {tag!r}")
    for qid, docs in run.items():
        bad = next((d for d, s in docs.items() if not math.isfinite(s)), None)
        if bad is not None:
            raise DataError(
                f"{path}: score {docs[bad]!r} of document {bad!r} for query {qid!r} is not finite; "
                "nothing written (were the vectors finite?)"
            )
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for qid, docs in run.items():
                for rank, (doc_id, score) in enumerate(ranked(docs), start=1):
                    fh.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")
    return Path(path)


def read_trec_run(path: str | os.PathLike) -> Run:
    """Read a TREC run file -> {qid: {docid: score}}; malformed lines and non-finite scores fail with
    file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: run file not found")
    run: Run = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise DataError(
                f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}"
            )
        qid, _, doc_id, _, raw_score, _ = parts
        try:
            score = float(raw_score)
        except ValueError:
            raise DataError(f"{path}:{lineno}: score {raw_score!r} is not a number") from None
        if not math.isfinite(score):
            raise DataError(
                f"{path}:{lineno}: score {raw_score!r} is not finite; the run was made from NaN or inf "
                "scores: rerun the search that wrote it"
            )
        docs = run.setdefault(qid, {})
        if doc_id in docs:
            raise DataError(f"{path}:{lineno}: document {doc_id!r} listed twice for query {qid!r}")
        docs[doc_id] = score
    return run
