"""BM25 baseline with ``bm25s``: a table row (same TREC run format as dense search) and the
retriever behind BM25 hard-negative mining.

Tokenisation: lower-cased ``\\w\\w+`` tokens, bm25s's English stop-word list, Snowball English
stemming (PyStemmer) by default; Lucene's BM25 variant with k1 = 0.9, b = 0.4 (Anserini's
defaults, the usual BEIR baseline settings).

A query that retrieves nothing (empty, only stop words, or no term in the corpus) gets no line in
the run; :meth:`BM25Index.search` warns with its id, and the score stage counts it 0.

CLI::

    python -m llara.bm25 --beir-dir DIR --split test --k 1000 --output results/search/bm25/scifact/run.trec
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llara.io import cli_main, cli_warnings, format_ids, report_stream, warn_data, write_config
from llara.runs import Run, write_trec_run


def make_stemmer(stemmer: str | None) -> Any:
    """A Snowball stemmer by language name (``english``), or None for ``None``/``"none"``."""
    if stemmer in (None, "none"):
        return None
    try:
        import Stemmer
    except ImportError:
        raise ImportError(
            f"stemmer {stemmer!r} needs PyStemmer: pip install PyStemmer (or use stemmer='none')"
        ) from None
    return Stemmer.Stemmer(stemmer)


class BM25Index:
    """A bm25s index over ``doc_ids`` / ``texts``; :meth:`search` returns ``{qid: {docid: score}}``."""

    def __init__(
        self,
        doc_ids: Sequence[str],
        texts: Sequence[str],
        *,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        stopwords: str | None = "en",
        stemmer: str | None = "english",
        progress: bool = False,
    ) -> None:
        import bm25s

        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} ids but {len(texts)} texts")
        if not doc_ids:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        self.doc_ids = list(doc_ids)
        self._stemmer = make_stemmer(stemmer)
        self._stopwords = stopwords or []
        self.progress = progress
        tokens = bm25s.tokenize(
            list(texts), stopwords=self._stopwords, stemmer=self._stemmer, show_progress=progress
        )
        self.retriever = bm25s.BM25(k1=k1, b=b, method=method)
        self.retriever.index(tokens, show_progress=progress)
        self.config = {"k1": k1, "b": b, "method": method, "stopwords": stopwords, "stemmer": stemmer}

    def search(self, query_ids: Sequence[str], queries: Sequence[str], k: int) -> Run:
        """Top-``k`` documents per query (documents with score 0, i.e. no shared term, are dropped).

        A query left with no document (no token after stop words and stemming, or no token in the
        corpus) maps to ``{}`` and a :class:`llara.io.DataWarning` names it.
        """
        import bm25s

        if len(query_ids) != len(queries):
            raise ValueError(f"{len(query_ids)} query ids but {len(queries)} queries")
        if not queries:
            return {}
        k = min(k, len(self.doc_ids))
        tokens = bm25s.tokenize(
            list(queries), stopwords=self._stopwords, stemmer=self._stemmer, show_progress=self.progress
        )
        # query tokens unknown to the corpus vocabulary are dropped by bm25s; a query left empty
        # still gets a (zero-score) result row, which we filter below
        idx, scores = self.retriever.retrieve(tokens, k=k, show_progress=self.progress, n_threads=1)
        run: Run = {}
        for qid, row_idx, row_scores in zip(query_ids, np.asarray(idx), np.asarray(scores), strict=True):
            run[qid] = {
                self.doc_ids[int(j)]: float(s) for j, s in zip(row_idx, row_scores, strict=True) if s > 0
            }
        no_terms = [q for q, ids in zip(query_ids, tokens.ids, strict=True) if len(ids) == 0]
        empty = set(no_terms)
        unmatched = [q for q in query_ids if not run[q] and q not in empty]
        if no_terms:
            warn_data(
                f"BM25: {len(no_terms)} of {len(query_ids)} queries have no term left after stop words and "
                f"stemming (empty or only stop words; ids: {format_ids(no_terms)}); they retrieve nothing, "
                "have no line in the run, and score 0"
            )
        if unmatched:
            warn_data(
                f"BM25: {len(unmatched)} of {len(query_ids)} queries share no term with the corpus "
                f"(ids: {format_ids(unmatched)}); they retrieve nothing, have no line in the run, and score 0"
            )
        return run


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.bm25", description="BM25 (bm25s) run on a BEIR split.")
    p.add_argument("--beir-dir", required=True, type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--output", required=True, type=Path, help="TREC run file to write")
    p.add_argument("--tag", default="bm25")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    p.add_argument("--method", default="lucene", choices=("lucene", "robertson", "atire", "bm25l", "bm25+"))
    p.add_argument("--stopwords", default="en", help="bm25s stop-word list name, or 'none'")
    p.add_argument("--stemmer", default="english", help="Snowball language (needs PyStemmer), or 'none'")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    from llara.beir import load_beir

    with cli_warnings():
        ds = load_beir(args.beir_dir, args.split)
        doc_ids, texts = ds.corpus_items()
        qids, queries = ds.query_items()
        index = BM25Index(
            doc_ids,
            texts,
            k1=args.k1,
            b=args.b,
            method=args.method,
            stopwords=None if args.stopwords == "none" else args.stopwords,
            stemmer=args.stemmer,
            progress=args.progress,
        )
        run = index.search(qids, queries, args.k)
        write_trec_run(args.output, run, args.tag)
        write_config(args.output, vars(args))
    retrieved = sum(1 for docs in run.values() if docs)
    print(
        f"{args.output}: {retrieved} of {len(run)} queries retrieved documents, top-{args.k} of "
        f"{len(doc_ids)} documents (BM25)",
        file=report_stream(args.output),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
