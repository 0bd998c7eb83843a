"""Does a corpus shard job's memory follow its shard, not the corpus? (issue 16)

A generated BEIR folder of ``--passages`` short passages (200,000 by default) is encoded in
``--shards`` shards (8), and ``--run-shards`` of them (0 and 1) are run, each as its own
``python -m llara.encode --what corpus --shard I --num-shards N`` process; a second folder of
passages/shards passages (25,000) is encoded in one shard. Each job's peak RSS (``os.wait4``'s
``ru_maxrss`` of that process alone) and wall time are compared: the targets are a shard job's peak
RSS <= 1.3x and its wall time <= 1.5x the single-shard job's.

The encoder is the real ``--encoder hf`` path on a tiny random BERT (hidden 64, 2 layers) built and
saved here, so the corpus reading, tokenising, batching and storing are what is measured. Run it
against another checkout (e.g. ``git archive HEAD | tar -x -C ../before``) with ``--code-dir``::

    .venv/bin/python bench/encode_scaling.py --output results/bench/encode_scaling.json
    .venv/bin/python bench/encode_scaling.py --code-dir ../before --output before.json
    .venv/bin/python bench/encode_scaling.py --passages 20000 --run-shards 0     # quick

Prints a markdown table; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RSS_TARGET, WALL_TARGET = 1.3, 1.5
VOCAB_WORDS = 2000
ENGLISH = "the a of and to in is was for on river city music king war school quick brown fox".split()


def passage(rng: random.Random) -> dict[str, str]:
    """A short passage: a title of 2 words and a text of 20-63 words of a 2000-word vocabulary."""
    words = [f"w{rng.randrange(VOCAB_WORDS)}" for _ in range(rng.randint(22, 65))]
    return {"title": " ".join(words[:2]), "text": " ".join(words[2:])}


def write_corpus(root: Path, passages: int, seed: int = 0) -> Path:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) of ``passages`` documents; the first
    rows are the same for every size (one generator, one seed)."""
    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for i in range(passages):
            fh.write(json.dumps({"_id": f"d{i}", **passage(rng)}) + "\n")
    queries = [(f"q{i}", passage(rng)["text"]) for i in range(10)]
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries))
    qrels = ["query-id\tcorpus-id\tscore", *(f"q{i}\td{i}\t1" for i in range(10))]
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return root


def write_tiny_bert(folder: Path) -> Path:
    """A tiny random BERT (hidden 64, 2 layers, 4 heads, 128 positions) with a word-level vocabulary
    (the passages' words, and a few English ones: llara.model.tokenizer_of checks it encodes English)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate([*specials, *ENGLISH, *(f"w{i}" for i in range(VOCAB_WORDS))])}
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=128,
    )  # fmt: skip
    BertModel(cfg).eval().save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return folder


def run_job(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run ``cmd`` (its output into ``log``); its wall seconds and its own peak RSS (``os.wait4``
    reports the rusage of that one process, where RUSAGE_CHILDREN would be the largest child so far)."""
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    return {"wall_seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # KiB on Linux


def encode_cmd(beir_dir: Path, model: Path, out: Path, shard: int, num_shards: int, args) -> list[str]:
    cmd = [
        sys.executable, "-m", "llara.encode", "--encoder", "hf", "--model", str(model), "--beir-dir",
        str(beir_dir), "--what", "corpus", "--shard", str(shard), "--num-shards", str(num_shards),
        "--output", str(out), "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
        "--device", "cpu", "--no-progress", "--overwrite",
    ]  # fmt: skip
    if args.store_dtype:  # a checkout from before --store-dtype has no such flag
        cmd += ["--store-dtype", args.store_dtype]
    return cmd


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| job | corpus rows | shard rows | peak RSS (MB) | wall (s) | .npy bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['job']} | {r['corpus_rows']:,} | {r['shard_rows']:,} | {r['peak_rss_mb']:.1f} | "
            f"{r['wall_seconds']:.2f} | {r['npy_bytes']:,} |"
        )
    return "\n".join(lines)


def run_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    code_dir = Path(args.code_dir).resolve()
    env = {
        **os.environ,
        "PYTHONPATH": str(code_dir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import llara; print(llara.__file__)"], env=env, cwd=code_dir,
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    model = write_tiny_bert(work / "model")
    per_shard = args.passages // args.shards
    big, small = write_corpus(work / "big", args.passages), write_corpus(work / "small", per_shard)
    rows = []
    jobs = [(big, work / "emb-big", shard, args.shards) for shard in args.run_shards]
    for beir_dir, out, shard, num_shards in [*jobs, (small, work / "emb-small", 0, 1)]:
        cmd = encode_cmd(beir_dir, model, out, shard, num_shards, args)
        measured = run_job(cmd, env, code_dir, work / f"{out.name}-{shard}.log")
        prefix = out / f"corpus.shard{shard:04d}-of-{num_shards:04d}"
        meta = json.loads(prefix.with_name(prefix.name + ".meta.json").read_text())
        rows.append(
            {
                "job": f"shard {shard} of {num_shards}" if num_shards > 1 else "single shard",
                "corpus_rows": meta.get("total_rows"),
                "shard_rows": meta["rows"],
                **measured,
                "npy_bytes": prefix.with_name(prefix.name + ".npy").stat().st_size,
            }
        )
    single = rows[-1]
    sharded = rows[:-1]
    rss_ratio = max(r["peak_rss_mb"] for r in sharded) / single["peak_rss_mb"]
    wall_ratio = max(r["wall_seconds"] for r in sharded) / single["wall_seconds"]
    return {
        "rows": rows,
        "rss_ratio": round(rss_ratio, 3),
        "wall_ratio": round(wall_ratio, 3),
        "targets": {"rss_ratio": RSS_TARGET, "wall_ratio": WALL_TARGET},
        "passed": rss_ratio <= RSS_TARGET and wall_ratio <= WALL_TARGET,
        "llara": where,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--passages", type=int, default=200_000, help="passages of the sharded corpus")
    p.add_argument("--shards", type=int, default=8, help="--num-shards of the sharded corpus")
    p.add_argument("--run-shards", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1],
                   help="which shard jobs to run, comma-separated (default 0,1)")  # fmt: skip
    p.add_argument("--code-dir", default=str(REPO), help="the checkout whose llara is run (PYTHONPATH)")
    p.add_argument("--store-dtype", default=None, help="passed on when given (older checkouts lack it)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder, removed")
    p.add_argument("--output", type=Path, default=None, help="JSON of the results")
    args = p.parse_args(argv)
    if args.passages < args.shards or any(not 0 <= s < args.shards for s in args.run_shards):
        p.error("need --passages >= --shards and 0 <= each of --run-shards < --shards")
    with tempfile.TemporaryDirectory(prefix="encode-scaling-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run_bench(args, work)
    result |= {
        "command": " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(markdown(result["rows"]))
    print(
        f"\nshard job / single-shard job: peak RSS {result['rss_ratio']:.3f}x (target <= {RSS_TARGET}), "
        f"wall {result['wall_ratio']:.3f}x (target <= {WALL_TARGET}); llara from {result['llara']}"
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
