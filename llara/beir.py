"""BEIR datasets: load a local BEIR folder; download the official archives (or HF BeIR/<name>) by name.

Layout (as published by BEIR)::

    <root>/corpus.jsonl        {"_id", "title", "text"} per line
    <root>/queries.jsonl       {"_id", "text"} per line
    <root>/qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score, with a header line

As in BEIR, only the queries that appear in the split's qrels are evaluated, and a passage is
``title + " " + text`` stripped (so an empty title leaves just the text).

CLI::

    python -m llara.beir download --name scifact --cache-dir resources/beir        # official zip, md5 checked
    python -m llara.beir download --name scifact --cache-dir resources/beir --source hf --revision REV
    python -m llara.beir subsample --beir-dir DIR --split test --num-queries 20 --num-other-docs 200 --output OUT
    python -m llara.beir check --beir-dir resources/beir/scifact --split test
"""

from __future__ import annotations

import argparse
import array
import contextlib
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llara.io import (
    DataError,
    atomic_folder,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    cli_main,
    cli_warnings,
    format_ids,
    iter_jsonl,
    iter_lines,
    json_error_place,
    jsonable,
    utc_now,
    warn_data,
)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

# md5 of each official archive, as published in the BEIR README (beir-cellar/beir, "Available
# Datasets" table). BioASQ, Signal-1M, TREC-NEWS and Robust04 are not distributed as zips.
BEIR_MD5: dict[str, str] = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}

DOWNLOAD_MARKER = ".llara-download.json"


@dataclass
class BeirDataset:
    """One split of a BEIR dataset.

    ``queries`` holds only the queries judged in the split's qrels (in ``queries.jsonl`` order);
    ``qrels`` maps query id -> {doc id: relevance}.
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    root: Path | None = None
    split: str | None = None
    meta: dict[str, int] = field(default_factory=dict)

    def corpus_items(self) -> tuple[list[str], list[str]]:
        """(doc ids, passage texts) in corpus order, title and text joined as BEIR does."""
        ids = list(self.corpus)
        return ids, [join_title_text(self.corpus[i]["title"], self.corpus[i]["text"]) for i in ids]

    def query_items(self) -> tuple[list[str], list[str]]:
        ids = list(self.queries)
        return ids, [self.queries[i] for i in ids]


def join_title_text(title: str, text: str) -> str:
    """BEIR's passage text: ``(title + " " + text).strip()``; an empty title adds nothing."""
    return (f"{title} {text}").strip()


def _str_field(path: Path, lineno: int, obj: dict, key: str, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(f"{path}:{lineno}: missing field {key!r} (a BEIR row needs '_id' and 'text')")
        return ""
    value = obj[key]
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "_id":
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def corpus_file(path: str | os.PathLike) -> Path:
    """``path``, or ``path`` + ``.gz`` when only the gzipped corpus is there (``corpus.jsonl.gz``)."""
    path = Path(path)
    if not path.exists() and path.suffix != ".gz":
        gz = path.with_name(path.name + ".gz")
        if gz.is_file():
            return gz
    return path


def load_corpus(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Read ``corpus.jsonl`` -> {doc id: {"title", "text"}}; duplicate ids and an empty corpus fail.

    When only ``corpus.jsonl.gz`` is there (or ``path`` ends in ``.gz``), the gzipped file is read.
    """
    path = corpus_file(path)
    rows = iter_jsonl(path)  # a .gz file is read decompressed (llara.io.iter_lines)
    corpus: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in rows:
        doc_id = _str_field(path, lineno, obj, "_id", required=True)
        if doc_id in corpus:
            raise DataError(
                f"{path}:{lineno}: duplicate document id {doc_id!r} (first seen on line "
                f"{first_line[doc_id]}); document ids must be unique"
            )
        first_line[doc_id] = lineno
        corpus[doc_id] = {
            "title": _str_field(path, lineno, obj, "title", required=False),
            "text": _str_field(path, lineno, obj, "text", required=True),
        }
    if not corpus:
        raise DataError(f"{path}: empty corpus (no documents); a BEIR corpus needs at least one row")
    return corpus


# ---------------------------------------------------------------------------------------------
# streaming the corpus: a shard job keeps only its rows
#
# Two passes over the file, nothing of the corpus kept but an 8-byte hash per id: the first
# (scan_corpus) parses and checks every row as load_corpus does and counts them (shard_bounds needs
# the count); the second (read_corpus_rows) stops at the shard's end and parses only its rows. An
# offset index would save the second pass's reading but not the first's parsing (every row must be
# checked, as load_corpus checks it), and cannot seek in a .gz file. Duplicate ids are found by
# sorting the hashes (a set of 8.8M id strings would be about 600 MB; the hashes are 70 MB); hashes
# that collide are confirmed on the ids themselves by a rescan of the rows read, so an error is
# load_corpus's own, naming the first duplicate and its first line, and a bad line after a duplicate
# reports the duplicate, as load_corpus does.


def _corpus_row(path: Path, lineno: int, obj: dict) -> tuple[str, str, str]:
    """(doc id, title, text) of one corpus row, checked as load_corpus checks it."""
    doc_id = _str_field(path, lineno, obj, "_id", required=True)
    title = _str_field(path, lineno, obj, "title", required=False)
    return doc_id, title, _str_field(path, lineno, obj, "text", required=True)


def _duplicate_error(path: Path, hashes: np.ndarray) -> DataError | None:
    """load_corpus's error for the first duplicate id among the first ``len(hashes)`` rows, or None
    (``hashes``: ``hash(doc_id)`` of those rows, in file order)."""
    ordered = np.sort(hashes)
    suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())  # hashes seen twice (few)
    if not suspects:
        return None
    first_line: dict[str, int] = {}
    for row, (lineno, obj) in enumerate(iter_jsonl(path)):
        doc_id = _str_field(path, lineno, obj, "_id", required=True)
        if hash(doc_id) in suspects:
            if doc_id in first_line:
                return DataError(
                    f"{path}:{lineno}: duplicate document id {doc_id!r} (first seen on line "
                    f"{first_line[doc_id]}); document ids must be unique"
                )
            first_line[doc_id] = lineno
        if row + 1 == len(hashes):
            break  # not into the row that stopped the scan
    return None  # only hashes that collide


def scan_corpus(path: str | os.PathLike) -> int:
    """The number of documents in ``corpus.jsonl`` (or ``.jsonl.gz``, see :func:`corpus_file`),
    every row checked with the errors :func:`load_corpus` gives (bad lines, duplicate ids, an empty
    corpus); holds an 8-byte hash per id, not the corpus."""
    path = corpus_file(path)
    hashes = array.array("q")  # hash(doc_id) per row, in file order: (N,) int64
    try:
        for lineno, obj in iter_jsonl(path):
            hashes.append(hash(_str_field(path, lineno, obj, "_id", required=True)))  # as load_corpus:
            _corpus_row(path, lineno, obj)  # the id (and its duplicate) before the title and text
    except DataError as bad_line:
        duplicate = _duplicate_error(path, np.frombuffer(hashes, dtype=np.int64))
        raise (duplicate or bad_line) from None  # load_corpus stops at whichever comes first
    if not hashes:
        raise DataError(f"{path}: empty corpus (no documents); a BEIR corpus needs at least one row")
    n = len(hashes)
    ordered = np.array(hashes, dtype=np.int64)
    del hashes
    duplicate = _duplicate_error(path, ordered)
    if duplicate is not None:
        raise duplicate
    return n


def read_corpus_rows(path: str | os.PathLike, start: int, end: int) -> tuple[list[str], list[str]]:
    """(doc ids, passage texts as :func:`join_title_text` makes them) of documents ``[start, end)``
    in file order, the same rows as ``list(load_corpus(path))[start:end]``; reads the file only up to
    row ``end`` and parses only those rows (check the whole file first with :func:`scan_corpus`)."""
    path = corpus_file(path)
    ids: list[str] = []
    texts: list[str] = []
    if end <= start:
        return ids, texts
    row = 0
    for lineno, line in iter_lines(path):
        if not line.strip():  # as iter_jsonl: a blank line is no row
            continue
        if row >= start:
            doc_id, title, text = _corpus_row(path, lineno, _json_object(path, lineno, line))
            ids.append(doc_id)
            texts.append(join_title_text(title, text))
        row += 1
        if row == end:
            break  # not a line further
    return ids, texts


def _json_object(path: Path, lineno: int, line: str) -> dict:
    """One JSONL line parsed, with iter_jsonl's errors."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}:{lineno}: malformed JSON ({json_error_place(exc)}); each line must be one JSON object"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    """Read ``queries.jsonl`` -> {query id: text}; duplicate ids fail."""
    path = Path(path)
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _str_field(path, lineno, obj, "_id", required=True)
        if qid in queries:
            raise DataError(
                f"{path}:{lineno}: duplicate query id {qid!r} (first seen on line {first_line[qid]}); "
                "query ids must be unique"
            )
        first_line[qid] = lineno
        queries[qid] = _str_field(path, lineno, obj, "text", required=True)
    return queries


def _parse_rel(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def load_qrels(
    path: str | os.PathLike,
    query_ids: set[str] | dict | None = None,
    doc_ids: set[str] | dict | None = None,
) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id corpus-id score``; the header line is optional).

    When ``query_ids`` / ``doc_ids`` are given, a row naming an unknown query or document fails
    with the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: qrels file not found")
    qrels: dict[str, dict[str, int]] = {}
    first_row = True
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\n").rstrip("\r").split("\t")
        if len(parts) != 3:
            raise DataError(
                f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                f"got {len(parts)}"
            )
        qid, doc_id, raw = (p.strip() for p in parts)
        rel = _parse_rel(raw)
        if rel is None:
            if first_row:
                first_row = False
                continue  # the header line (query-id corpus-id score)
            raise DataError(f"{path}:{lineno}: relevance score {raw!r} is not an integer")
        first_row = False
        if query_ids is not None and qid not in query_ids:
            raise DataError(
                f"{path}:{lineno}: query id {qid!r} is not in queries.jsonl; fix the qrels row or add "
                "the query"
            )
        if doc_ids is not None and doc_id not in doc_ids:
            raise DataError(
                f"{path}:{lineno}: document id {doc_id!r} is not in corpus.jsonl; fix the qrels row or "
                "add the document"
            )
        judged = qrels.setdefault(qid, {})
        if doc_id in judged:
            raise DataError(
                f"{path}:{lineno}: duplicate judgement for query {qid!r} and document {doc_id!r}; "
                "keep one row per pair"
            )
        judged[doc_id] = rel
    return qrels


def available_splits(root: str | os.PathLike) -> list[str]:
    qrels_dir = Path(root) / "qrels"
    return sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []


def qrels_path(root: str | os.PathLike, split: str) -> Path:
    root = Path(root)
    path = root / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = available_splits(root)
        raise DataError(
            f"{path}: no qrels for split {split!r}; available splits in {root / 'qrels'}: "
            f"{', '.join(splits) if splits else '(none)'}"
        )
    return path


def load_beir(root: str | os.PathLike, split: str = "test") -> BeirDataset:
    """Load one split of a BEIR folder, validating ids across the three files."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: not a folder; pass a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)"
        )
    qpath = qrels_path(root, split)
    corpus = load_corpus(root / "corpus.jsonl")
    all_queries = load_queries(root / "queries.jsonl")
    qrels = load_qrels(qpath, query_ids=all_queries, doc_ids=corpus)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    empty_docs = [d for d, v in corpus.items() if not join_title_text(v["title"], v["text"])]
    empty_queries = [q for q, text in queries.items() if not text.strip()]
    warn_empty_texts(root / "corpus.jsonl", "documents", empty_docs, len(corpus))
    warn_empty_texts(root / "queries.jsonl", f"queries judged in {split!r}", empty_queries, len(queries))
    meta = {
        "documents": len(corpus),
        "queries_in_file": len(all_queries),
        "queries_judged": len(queries),
        "judgements": sum(len(v) for v in qrels.values()),
        "empty_documents": len(empty_docs),
        "empty_queries": len(empty_queries),
    }
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, root=root, split=split, meta=meta)


def empty_text_ids(ids: Sequence[str], texts: Sequence[str]) -> list[str]:
    """The ids whose text is empty or only whitespace."""
    return [i for i, t in zip(ids, texts, strict=True) if not t.strip()]


def warn_empty_texts(source: str | os.PathLike, what: str, ids: Sequence[str], total: int) -> None:
    """Warn (:class:`llara.io.DataWarning`) that ``ids`` out of ``total`` ``what`` have no text."""
    if ids:
        warn_data(
            f"{source}: {len(ids)} of {total} {what} have an empty text (ids: {format_ids(ids)}); "
            "they are kept (an empty query retrieves nothing and scores 0); fix or remove those rows"
        )


def subsample(ds: BeirDataset, num_queries: int, num_other_docs: int, seed: int = 0) -> BeirDataset:
    """A deterministic small split: ``num_queries`` judged queries, all their judged documents, and
    ``num_other_docs`` other documents; corpus and query order as in the original."""
    rng = random.Random(seed)
    qids = sorted(ds.queries)
    chosen = set(rng.sample(qids, min(num_queries, len(qids))))
    judged = {d for q in chosen for d in ds.qrels[q]}
    others = sorted(d for d in ds.corpus if d not in judged)
    extra = set(rng.sample(others, min(num_other_docs, len(others))))
    keep = judged | extra
    corpus = {d: v for d, v in ds.corpus.items() if d in keep}
    queries = {q: t for q, t in ds.queries.items() if q in chosen}
    qrels = {q: dict(ds.qrels[q]) for q in ds.qrels if q in chosen}
    meta = {
        "documents": len(corpus),
        "queries_judged": len(queries),
        "judgements": sum(map(len, qrels.values())),
    }
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, root=None, split=ds.split, meta=meta)


def write_beir(ds: BeirDataset, root: str | os.PathLike, split: str | None = None) -> Path:
    """Write ``ds`` as a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), atomically per file."""
    root = Path(root)
    split = split or ds.split or "test"
    atomic_write_jsonl(
        root / "corpus.jsonl",
        ({"_id": d, "title": v["title"], "text": v["text"]} for d, v in ds.corpus.items()),
    )
    atomic_write_jsonl(root / "queries.jsonl", ({"_id": q, "text": t} for q, t in ds.queries.items()))
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{r}" for q, docs in ds.qrels.items() for d, r in docs.items()
    ]
    atomic_write_text(root / "qrels" / f"{split}.tsv", "\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------------------------
# download


class DownloadError(DataError):
    """A download that did not complete or did not match its checksum (nothing was kept); like any
    :class:`DataError`, the CLI prints it as one ``error:`` line and exits with status 2."""


def _fetch(url: str, dest: Path, timeout: float, chunk_size: int = 1 << 20) -> tuple[int, str]:
    """Stream ``url`` into ``dest``; return (bytes, md5). A short read raises DownloadError."""
    md5 = hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            expected = resp.headers.get("Content-Length")
            expected_len = int(expected) if expected is not None and expected.isdigit() else None
            while True:
                chunk = resp.read(chunk_size)
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                received += len(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # http.client.IncompleteRead is an HTTPException, caught below
        raise DownloadError(f"download of {url} failed after {received} bytes: {exc}") from exc
    except Exception as exc:  # http.client.HTTPException and friends
        raise DownloadError(f"download of {url} failed after {received} bytes: {exc!r}") from exc
    if expected_len is not None and received != expected_len:
        raise DownloadError(
            f"download of {url} is incomplete: received {received} of {expected_len} bytes; run again"
        )
    return received, md5.hexdigest()


def _safe_extract(zip_path: Path, dest: Path) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.namelist():
            target = (dest / member).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise DownloadError(f"{zip_path}: archive member {member!r} points outside the target folder")
        zf.extractall(dest)


def _find_dataset_root(extracted: Path) -> Path:
    candidates = sorted(p.parent for p in extracted.rglob("corpus.jsonl"))
    if not candidates:
        raise DownloadError(f"archive has no corpus.jsonl (extracted into {extracted})")
    return candidates[0]


def download_beir(
    name: str,
    cache_dir: str | os.PathLike,
    *,
    md5: str | None = None,
    url: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the official BEIR zip of ``name`` into ``cache_dir/name`` and return that folder.

    The archive goes to a temporary file, its md5 is checked (the published one for known names,
    or ``md5``), it is extracted into a temporary folder, and that folder is renamed into place last,
    so ``cache_dir/name`` only ever exists complete. A folder already there is reused.
    """
    cache_dir = Path(cache_dir)
    if md5 is None:
        if name not in BEIR_MD5:
            raise DataError(
                f"unknown BEIR dataset {name!r}; known: {', '.join(sorted(BEIR_MD5))} "
                "(or pass md5= / --md5 for another archive)"
            )
        md5 = BEIR_MD5[name]
    url = url or BEIR_URL.format(name=name)
    target = cache_dir / name
    marker = target / DOWNLOAD_MARKER
    if target.exists():
        if marker.is_file():
            recorded = json.loads(marker.read_text())
            if recorded.get("md5") != md5:
                raise DownloadError(
                    f"{target} holds a download with md5 {recorded.get('md5')}, not {md5}; remove it to "
                    "download again"
                )
            return target
        raise DownloadError(
            f"{target} exists but was not written by a completed download (no {DOWNLOAD_MARKER}); "
            "remove it or load it directly with load_beir"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_zip_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=cache_dir)
    os.close(fd)
    tmp_zip = Path(tmp_zip_name)
    try:
        size, got = _fetch(url, tmp_zip, timeout)
        if got != md5:
            raise DownloadError(
                f"checksum mismatch for {url}: md5 {got}, expected {md5} ({size} bytes); the download "
                "was discarded, run again (or check the expected checksum)"
            )
        try:
            with atomic_folder(target) as tmp_dir:
                extracted = tmp_dir / ".extract"
                try:
                    _safe_extract(tmp_zip, extracted)
                except zipfile.BadZipFile as exc:
                    raise DownloadError(f"{url}: not a valid zip archive ({exc})") from exc
                root = _find_dataset_root(extracted)
                for item in root.iterdir():  # the dataset's files, without the archive's own folder
                    os.replace(item, tmp_dir / item.name)
                shutil.rmtree(extracted)
                atomic_write_json(
                    tmp_dir / DOWNLOAD_MARKER,
                    {"name": name, "url": url, "md5": md5, "bytes": size, "date": utc_now()},
                )
        except DataError:
            if not (target / DOWNLOAD_MARKER).is_file():  # not a concurrent download of the same
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_zip.unlink()
    return target


def download_beir_hf(
    name: str,
    cache_dir: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    revision: str | None = None,
    qrels_revision: str | None = None,
    load_dataset: Callable[..., Any] | None = None,
    split_names: Callable[..., list[str]] | None = None,
) -> Path:
    """Fetch ``BeIR/<name>`` (corpus, queries) and ``BeIR/<name>-qrels`` from the Hugging Face hub
    into ``cache_dir/<name>-hf`` as a BEIR folder.

    There is no published checksum there: pin ``revision`` / ``qrels_revision`` for a fixed
    version. The folder is written and validated (every split loads) in a temporary folder, then
    renamed into place. ``load_dataset`` / ``split_names`` default to the ``datasets`` functions.
    """
    if load_dataset is None or split_names is None:
        import datasets

        load_dataset = load_dataset or datasets.load_dataset
        split_names = split_names or datasets.get_dataset_split_names
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{name}-hf"
    if (target / DOWNLOAD_MARKER).is_file():
        return target
    if target.exists():
        raise DownloadError(f"{target} exists but was not written by a completed download; remove it")
    with atomic_folder(target) as tmp_dir:
        repo, qrels_repo = f"BeIR/{name}", f"BeIR/{name}-qrels"
        corpus = load_dataset(repo, "corpus", split="corpus", revision=revision)
        queries = load_dataset(repo, "queries", split="queries", revision=revision)
        atomic_write_jsonl(
            tmp_dir / "corpus.jsonl",
            ({"_id": str(r["_id"]), "title": r.get("title") or "", "text": r["text"]} for r in corpus),
        )
        atomic_write_jsonl(
            tmp_dir / "queries.jsonl", ({"_id": str(r["_id"]), "text": r["text"]} for r in queries)
        )
        splits = list(splits or split_names(qrels_repo, revision=qrels_revision))
        for split in splits:
            rows = load_dataset(qrels_repo, split=split, revision=qrels_revision)
            lines = ["query-id\tcorpus-id\tscore"]
            lines += [f"{r['query-id']}\t{r['corpus-id']}\t{int(r['score'])}" for r in rows]
            atomic_write_text(tmp_dir / "qrels" / f"{split}.tsv", "\n".join(lines) + "\n")
        for split in splits:
            load_beir(tmp_dir, split)  # validate before it is taken as complete
        atomic_write_json(
            tmp_dir / DOWNLOAD_MARKER,
            {"name": name, "source": f"hf:{repo}", "revision": revision, "qrels_revision": qrels_revision,
             "splits": splits, "date": utc_now()},
        )  # fmt: skip
    return target


# ---------------------------------------------------------------------------------------------
# CLI


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llara.beir", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download an official BEIR zip into a cache folder")
    dl.add_argument("--name", required=True, help=f"dataset name, one of: {', '.join(sorted(BEIR_MD5))}")
    dl.add_argument("--cache-dir", required=True, type=Path)
    dl.add_argument("--md5", default=None, help="expected md5 (defaults to the published one)")
    dl.add_argument("--url", default=None, help="archive URL (defaults to the official BEIR mirror)")
    dl.add_argument("--timeout", type=float, default=60.0)
    dl.add_argument(
        "--source", choices=("zip", "hf"), default="zip", help="official zip, or BeIR/<name> on HF"
    )
    dl.add_argument("--revision", default=None, help="hf: dataset revision to pin")
    ck = sub.add_parser("check", help="load and validate a BEIR folder, print its counts as JSON")
    ck.add_argument("--beir-dir", required=True, type=Path)
    ck.add_argument("--split", default="test")
    ss = sub.add_parser("subsample", help="write a small deterministic subsample of one split")
    ss.add_argument("--beir-dir", required=True, type=Path)
    ss.add_argument("--split", default="test")
    ss.add_argument("--num-queries", type=int, required=True)
    ss.add_argument("--num-other-docs", type=int, required=True)
    ss.add_argument("--seed", type=int, default=0)
    ss.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    with cli_warnings():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.command == "download":
        if args.source == "hf":
            path = download_beir_hf(args.name, args.cache_dir, revision=args.revision)
        else:
            path = download_beir(args.name, args.cache_dir, md5=args.md5, url=args.url, timeout=args.timeout)
        print(path)
    elif args.command == "subsample":
        ds = subsample(load_beir(args.beir_dir, args.split), args.num_queries, args.num_other_docs, args.seed)
        write_beir(ds, args.output, args.split)
        atomic_write_json(args.output / "subsample.config.json", jsonable(vars(args)))
        print(f"{args.output}: {json.dumps(ds.meta)}")
    else:
        ds = load_beir(args.beir_dir, args.split)
        print(json.dumps({"beir_dir": str(args.beir_dir), "split": args.split, **ds.meta}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
