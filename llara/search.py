"""Search stage: exact inner-product top-k with faiss over corpus shards -> TREC run file.

Each corpus shard is searched on its own and the per-shard top-k lists are merged, which gives the
same ranking as searching the concatenated corpus (tested) without holding it in memory at once;
queries go in batches of ``--query-batch-size``. Shards stored as float16 are upcast to float32 one
shard at a time. The GPU build of faiss is used when it sees a GPU. An approximate index (HNSW or
IVF, built on the CPU) can be used instead; it is built shard by shard (IVF trained on a seeded
sample of at most 256 rows per list drawn across the shards), and its recall@k against the exact
top-k is measured and written beside the run.

A TREC run file has one line per retrieved document: ``qid Q0 docid rank score tag``. Its
``.stats.json`` (written beside it) records, among timings, how many queries the run holds
(``queries_written``): :mod:`llara.score` checks a run against it, so a run cut short fails. Shards are
verified as they are read (:mod:`llara.shards`): damaged files and non-finite vectors are errors.

CLI::

    python -m llara.search --query-dir results/encode/minilm/scifact \\
        --corpus-dir results/encode/minilm/scifact --k 1000 --tag minilm \\
        --output results/search/minilm/scifact/run.trec [--index hnsw --recall-k 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from llara.io import (
    atomic_write_json,
    cli_main,
    code_version,
    report_stream,
    sidecar_path,
    utc_now,
    write_config,
)
from llara.runs import Run, write_trec_run

GPU_MAX_K = 2048  # faiss's GPU top-k limit; larger k searches on the CPU
QUERY_BATCH_SIZE = 4096  # queries searched at a time: bounds the (batch, k) results and faiss's scratch
IVF_TRAIN_PER_LIST = 256  # IVF training rows per list (faiss's own cap, max_points_per_centroid)

ShardSource = Callable[[], Iterable[np.ndarray]]  # a fresh pass over the corpus shards, in order


def use_gpu_default() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_f32(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, H), got shape {x.shape}")
    return x


def exact_index(corpus: np.ndarray, use_gpu: bool | None = None) -> faiss.Index:
    """An exact inner-product index (IndexFlatIP) holding ``corpus``; on the GPU when available."""
    corpus = _as_f32(corpus, "corpus")
    index = faiss.IndexFlatIP(corpus.shape[1])
    if use_gpu_default() if use_gpu is None else use_gpu:
        if not use_gpu_default():
            raise RuntimeError("use_gpu=True but faiss sees no GPU (faiss-cpu build, or no CUDA device)")
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(corpus)
    return index


def search_in_batches(
    index: faiss.Index, queries: np.ndarray, k: int, batch_size: int = QUERY_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` over ``batch_size`` queries at a time -> (scores (Q, k), indices (Q, k))."""
    if batch_size < 1:
        raise ValueError(f"query batch size must be >= 1, got {batch_size}")
    parts = [index.search(queries[i : i + batch_size], k) for i in range(0, queries.shape[0], batch_size)]
    if not parts:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])  # (Q, k)


def search_exact(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    use_gpu: bool | None = None,
    query_batch_size: int = QUERY_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products -> (scores (Q, k') float32, row indices (Q, k') int64), k' = min(k, N)."""
    queries, corpus = _as_f32(queries, "queries"), _as_f32(corpus, "corpus")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != corpus dim {corpus.shape[1]}")
    k = min(k, corpus.shape[0])
    if k < 1 or queries.shape[0] == 0:
        return np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64)
    if use_gpu is None:
        use_gpu = use_gpu_default() and k <= GPU_MAX_K
    return search_in_batches(exact_index(corpus, use_gpu), queries, k, query_batch_size)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists whose indices are already global -> overall top-k.

    Ties are broken by the smaller global index, so the result does not depend on shard order.
    """
    scores = np.concatenate([p[0] for p in parts], axis=1)  # (Q, sum k_i)
    indices = np.concatenate([p[1] for p in parts], axis=1)
    valid = indices >= 0
    scores = np.where(valid, scores, -np.inf)
    # sort by (score desc, index asc): lexsort's last key is the primary one
    order = np.lexsort((indices, -scores), axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_indices = np.take_along_axis(indices, order, axis=1)
    top_indices = np.where(np.isfinite(top_scores), top_indices, -1)
    return top_scores.astype(np.float32), top_indices


def search_sharded(
    queries: np.ndarray,
    shards: Iterable[np.ndarray],
    k: int,
    use_gpu: bool | None = None,
    query_batch_size: int = QUERY_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Search each corpus shard in turn, keep a running top-k; indices refer to the concatenation."""
    best: tuple[np.ndarray, np.ndarray] | None = None
    offset = 0
    for shard in shards:
        scores, idx = search_exact(queries, shard, k, use_gpu, query_batch_size)
        part = (scores, np.where(idx >= 0, idx + offset, -1))
        best = part if best is None else merge_topk([best, part], k)
        offset += shard.shape[0]
    if best is None:
        raise ValueError("no corpus shards to search")
    return best


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: about 4 sqrt(n), at least 39 training rows per list."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))


def sample_rows(shards: ShardSource, sizes: Sequence[int], size: int, seed: int = 0) -> np.ndarray:
    """``size`` rows drawn without replacement (seeded) across shards of ``sizes`` rows, in corpus
    order -> (size', H) float32, size' = min(size, sum(sizes)); one shard in memory at a time."""
    bounds = np.cumsum([0, *sizes])  # shard i holds rows [bounds[i], bounds[i + 1])
    n = int(bounds[-1])
    if size >= n:
        picked = np.arange(n)
    else:
        picked = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    parts = []
    for i, shard in enumerate(shards()):
        if shard.shape[0] != sizes[i]:
            raise ValueError(f"corpus shard {i} has {shard.shape[0]} rows, expected {sizes[i]}")
        lo, hi = np.searchsorted(picked, [bounds[i], bounds[i + 1]])
        parts.append(_as_f32(shard[picked[lo:hi] - bounds[i]], "corpus"))  # (rows drawn here, H)
    return np.concatenate(parts, axis=0)


def build_ann_index_sharded(
    shards: ShardSource,
    sizes: Sequence[int],
    dim: int,
    kind: str = "hnsw",
    *,
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    nlist: int | None = None,
    nprobe: int = 16,
    seed: int = 0,
) -> faiss.Index:
    """An approximate inner-product index built on the CPU shard by shard (``shards()``: a fresh pass
    over the non-empty corpus shards, of ``sizes`` rows): HNSW (flat storage), or IVF-Flat trained on
    :func:`sample_rows` (at most 256 rows per list, seeded by ``seed``) and then filled shard by shard."""
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    elif kind == "ivf":
        nlist = nlist or default_nlist(sum(sizes))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(sample_rows(shards, sizes, IVF_TRAIN_PER_LIST * nlist, seed))
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}; use 'hnsw' or 'ivf'")
    for shard in shards():
        index.add(_as_f32(shard, "corpus"))
    return index


def build_ann_index(corpus: np.ndarray, kind: str = "hnsw", **params: Any) -> faiss.Index:
    """:func:`build_ann_index_sharded` over one array ``corpus`` (N, H)."""
    corpus = _as_f32(corpus, "corpus")
    return build_ann_index_sharded(lambda: [corpus], [corpus.shape[0]], corpus.shape[1], kind, **params)


def recall_against_exact(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (row indices, -1 = none)."""
    hits, total = 0, 0
    for a, e in zip(approx[:, :k], exact[:, :k], strict=True):
        e_set = {int(x) for x in e if x >= 0}
        hits += len(e_set & {int(x) for x in a if x >= 0})
        total += len(e_set)
    return hits / total if total else 1.0


def to_run(query_ids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, indices: np.ndarray) -> Run:
    """(Q, k) scores and corpus row indices -> {qid: {docid: score}} (invalid rows dropped)."""
    run: Run = {}
    for qid, row_scores, row_idx in zip(query_ids, scores, indices, strict=True):
        run[qid] = {doc_ids[j]: float(s) for s, j in zip(row_scores, row_idx, strict=True) if j >= 0}
    return run


# ---------------------------------------------------------------------------------------------
# CLI


def search_dirs(
    query_dir: str | os.PathLike,
    corpus_dir: str | os.PathLike,
    k: int,
    index: str = "exact",
    recall_k: int = 100,
    use_gpu: bool | None = None,
    ann_params: dict[str, Any] | None = None,
    query_batch_size: int = QUERY_BATCH_SIZE,
) -> tuple[Run, dict[str, Any]]:
    """Search encoded query shards against encoded corpus shards -> (run, stats). The corpus is read
    one shard at a time (float16 shards upcast to float32 per shard), for the ANN index too."""
    from llara.shards import list_shards, load_embeddings, load_shard, read_meta, stored_dtype

    query_ids, queries = load_embeddings(query_dir, "queries")
    corpus_shards = list_shards(corpus_dir, "corpus")
    metas = [read_meta(paths) for paths in corpus_shards]
    doc_ids: list[str] = []

    def shard_arrays(collect_ids: bool = False) -> Iterable[np.ndarray]:
        for paths in corpus_shards:
            ids, emb = load_shard(paths)  # (rows, H) float32, verified
            if collect_ids:
                doc_ids.extend(ids)
            if len(ids):  # an empty shard's vectors may be (0, 0)
                yield emb

    t0 = time.perf_counter()
    exact_scores, exact_idx = search_sharded(queries, shard_arrays(True), k, use_gpu, query_batch_size)
    exact_seconds = time.perf_counter() - t0
    stats: dict[str, Any] = {
        "queries": len(query_ids),
        "documents": len(doc_ids),
        "corpus_shards": len(corpus_shards),
        "corpus_store_dtypes": sorted({stored_dtype(m) for m in metas}),
        "query_batch_size": query_batch_size,
        "exact_seconds": round(exact_seconds, 4),
        "exact_queries_per_second": round(len(query_ids) / exact_seconds, 1) if exact_seconds > 0 else None,
        "faiss_gpu": bool(use_gpu_default() if use_gpu is None else use_gpu),
    }
    if index == "exact":
        return to_run(query_ids, doc_ids, exact_scores, exact_idx), stats
    sizes = [m["rows"] for m in metas if m["rows"]]
    t0 = time.perf_counter()
    ann = build_ann_index_sharded(shard_arrays, sizes, queries.shape[1], index, **(ann_params or {}))
    build_seconds = time.perf_counter() - t0
    ann_params = dict(ann_params or {})
    if index == "ivf":
        ann_params.update(nlist=int(ann.nlist), nprobe=int(ann.nprobe))  # the values actually used
    t0 = time.perf_counter()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores, idx = search_in_batches(ann, queries, min(k, len(doc_ids)), query_batch_size)
    ann_seconds = time.perf_counter() - t0
    rk = min(recall_k, k)
    stats.update(
        {
            "index": index,
            "ann_params": ann_params,
            "ann_build_seconds": round(build_seconds, 4),
            "ann_seconds": round(ann_seconds, 4),
            "ann_queries_per_second": round(len(query_ids) / ann_seconds, 1) if ann_seconds > 0 else None,
            f"recall@{rk}_vs_exact": recall_against_exact(idx, exact_idx, rk),
            "recall_k": rk,
        }
    )
    return to_run(query_ids, doc_ids, scores, idx), stats


def queries_in_run(run: Run) -> int:
    """How many queries the run file holds (a query with no document has no line)."""
    return sum(1 for docs in run.values() if docs)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.search", description="Top-k search -> TREC run file.")
    p.add_argument("--query-dir", required=True, type=Path, help="folder with queries.shard*.npy")
    p.add_argument("--corpus-dir", required=True, type=Path, help="folder with corpus.shard*.npy")
    p.add_argument(
        "--output", required=True, type=Path, help="TREC run file to write ('-' or a FIFO: streamed to)"
    )
    p.add_argument("--tag", required=True, help="run tag (last column of the run file)")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--index", choices=("exact", "hnsw", "ivf"), default="exact")
    p.add_argument("--recall-k", type=int, default=100, help="recall@k of the ANN index against exact")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, default=128)
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument(
        "--query-batch-size",
        type=int,
        default=QUERY_BATCH_SIZE,
        help="queries searched at a time (bounds the memory of the results)",
    )
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even when faiss sees one")
    args = p.parse_args(argv)
    if args.query_batch_size < 1:
        p.error(f"--query-batch-size must be >= 1, got {args.query_batch_size}")
    ann_params: dict[str, Any] = {}
    if args.index == "hnsw":
        ann_params = {
            "hnsw_m": args.hnsw_m,
            "ef_construction": args.ef_construction,
            "ef_search": args.ef_search,
        }
    elif args.index == "ivf":
        ann_params = {"nlist": args.nlist, "nprobe": args.nprobe}
    run, stats = search_dirs(
        args.query_dir,
        args.corpus_dir,
        args.k,
        args.index,
        args.recall_k,
        use_gpu=False if args.cpu else None,
        ann_params=ann_params,
        query_batch_size=args.query_batch_size,
    )
    write_trec_run(args.output, run, args.tag)
    stats["queries_written"] = queries_in_run(run)  # llara.score: a run holding fewer was cut short
    stats_path = sidecar_path(args.output, ".stats.json")  # None for a stream (-, FIFO, /dev/stdout)
    if stats_path is not None:
        atomic_write_json(stats_path, stats | {"code_version": code_version(), "date": utc_now()})
    write_config(args.output, vars(args))
    msg = f"{args.output}: {stats['queries']} queries x top-{args.k} of {stats['documents']} documents"
    if args.index != "exact":
        recall = stats[f"recall@{stats['recall_k']}_vs_exact"]
        msg += f"; {args.index} recall@{stats['recall_k']} vs exact = {recall:.4f}"
    print(msg, file=report_stream(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
