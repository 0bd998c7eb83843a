"""One adaptation step, ours against the official LLaRA code, side by side.

    bash ../shared/reference/official-llara/setup-venv.sh .official-venv   # once (about 2 minutes)
    .venv/bin/python bench/vs_official.py --rounds 7
    # writes bench/results/vs_official.json (--output to change)

Both sides train the same tiny LLaMA (``../shared/fixtures/official-llara/model``: vocab 32016, hidden 64,
2 layers, fp32) on the same 8 rows (``pretrain_rows.jsonl`` lines 1-8) with the fixture LLaMA-2
tokenizer, joint EBAE+EBAR input, stop words removed, at ``--lengths`` tokens per row (the official
``cutoff_len``; our ``max_length``), LM term on and off.

* official: its own virtualenv (``.official-venv``, transformers 4.41), its own data pipeline
  (``pretrain/data.py`` ``TrainDatasetForEmbedding`` + ``EmbedCollator``, as ``pretrain/run.py``) and
  model (``pretrain/load_model.get_model`` -> ``PreLlamaModel``, sdpa), called unmodified;
* ours: :func:`ours_step` -- the one place that says what "our adaptation loss" is.

One step = forward + loss + backward (gradients set to None before each step; no optimizer, the same
for both); wall time and the process's CPU time (``cpu``: all threads, robust to being descheduled
by other users' load) are both recorded. Every (side, length, LM) runs in a fresh subprocess with ``--threads`` torch threads:
``--warmup`` untimed steps, then ``--steps`` timed ones (the process reports their median). Rounds
alternate the two sides in a random order per configuration, so a burst of load from other users
hits both alike; ``paired`` ratios are medians over rounds of the per-round ratios. Both sides'
losses are recorded and compared (they compute the same objective).

Memory (Linux ``/proc/self/status``): ``import_mib`` = VmHWM after the imports; ``setup_rss_mib`` =
VmRSS before the first step (model + batch loaded); ``step_mib`` = peak RSS during the steps minus
that (VmHWM reset to the current RSS through ``/proc/self/clear_refs`` just before the first step);
``process_peak_mib`` = the whole process's peak RSS (max of VmHWM before the reset and after the
steps). ``ru_maxrss`` is not used: Linux carries a parent's peak into a child's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "official-llara"
OFFICIAL = SHARED / "reference" / "official-llara"
OFFICIAL_PRETRAIN = OFFICIAL / "research" / "LLARA" / "pretrain"
OFFICIAL_PYTHON = REPO / ".official-venv" / "bin" / "python"
SIDES = ("official", "ours")
BATCH = 8
IMPORT_SETS = {  # name -> modules imported in a fresh interpreter (ours)
    "torch": ["torch"],
    "llara.losses+prompts+masks": ["llara.losses", "llara.prompts", "llara.masks"],
    "llara.model": ["llara.model"],
    "llara.adapt": ["llara.adapt"],
}


# ---- memory -------------------------------------------------------------------------------------
def status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB: VmRSS (now) or VmHWM (peak RSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---- the two sides ------------------------------------------------------------------------------
def rows() -> list[dict[str, str]]:
    lines = (FIXTURES / "pretrain_rows.jsonl").read_text().splitlines()[:BATCH]
    return [json.loads(line) for line in lines]


def ours_step(length: int, lm: bool, lm_chunk_size: int = 0):
    """Our adaptation loss (joint EBAE+EBAR + LM term): returns (step, n_tokens, width).

    The one function to change when our code path changes: today ``LlaraModel.adaptation_loss``
    (what ``llara.adapt`` trains with), with the model and tokenizer loaded as the golden tests do.
    ``lm_chunk_size``: rows per slice of the chunked LM loss (0: the model's default)."""
    import torch

    from llara.layout import PromptLayout
    from llara.model import LlaraModel, load_module, load_tokenizer

    module = load_module(FIXTURES / "model", head=True, dtype=torch.float32, attn_implementation="sdpa")
    llara = LlaraModel(module, load_tokenizer(FIXTURES / "tokenizer", "released"), PromptLayout())
    llara.model.train()
    batch = llara.adaptation_batch(
        rows(),
        "joint",
        max_length=length,
        target_max_length=length,
        remove_stop_words=True,
        pad_to_multiple_of=8,
    )

    extra = {"lm_chunk_size": lm_chunk_size} if lm_chunk_size else {}

    def step() -> float:
        llara.model.zero_grad(set_to_none=True)
        out = llara.adaptation_loss(batch, bow_scale=0.1, lm_weight=1.0 if lm else 0.0, **extra)
        out.loss.backward()
        return out.loss.item()

    return step, int(batch["attention_mask"].sum()), int(batch["input_ids"].shape[1])


def official_step(length: int, lm: bool):
    """The official pre-training step, its code unmodified: returns (step, n_tokens, width)."""
    os.environ.setdefault("NLTK_DATA", str(OFFICIAL / "nltk_data"))
    sys.dont_write_bytecode = True  # keep __pycache__ out of the official tree
    sys.path.insert(0, str(OFFICIAL_PRETRAIN))
    from arguments import DataArguments, ModelArguments
    from data import EmbedCollator, TrainDatasetForEmbedding
    from load_model import get_model
    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="vs-official-"))
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    tok = AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizer"), use_fast=False)  # as pretrain/run.py
    tok.pad_token = tok.pad_token or tok.unk_token
    tok.padding_side = "left"
    args = DataArguments(
        train_data=str(data), cutoff_len=length, remove_stop_words=True, cache_path=str(work / "cache")
    )
    ds = TrainDatasetForEmbedding(tok, args)
    collator = EmbedCollator(
        tokenizer=tok, cutoff_len=length, pad_to_multiple_of=8, return_tensors="pt", padding=True
    )
    batch = collator([ds[i] for i in range(BATCH)])
    keys = ["input_ids", "attention_mask", "output_summarize_ids", "output_predict_ids"]
    inputs = {k: batch[k] for k in keys + (["labels"] if lm else [])}
    margs = ModelArguments(
        model_name_or_path=str(FIXTURES / "model"),
        use_lora=False,
        use_flash_attn=False,
        cache_dir=str(work / "lms"),
    )
    model = get_model(margs, False)
    model.train()

    def step() -> float:
        model.zero_grad(set_to_none=True)
        out = model(**inputs)
        out.loss.backward()
        return out.loss.item()

    return step, int(batch["attention_mask"].sum()), int(batch["input_ids"].shape[1])


def worker(side: str, length: int, lm: bool, warmup: int, steps: int, threads: int, chunk: int) -> dict:
    """Runs in the subprocess: set up one side, time its steps, measure memory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    if side == "ours":
        sys.path.insert(0, str(REPO))
        import llara.model  # noqa: F401  (the imports our step needs, measured apart from the setup)
    else:
        sys.path.insert(0, str(OFFICIAL_PRETRAIN))
        os.environ.setdefault("NLTK_DATA", str(OFFICIAL / "nltk_data"))
        sys.dont_write_bytecode = True
        import data  # noqa: F401
        import load_model  # noqa: F401
        import modeling  # noqa: F401
    import_mib = status_mib("VmHWM")
    import_s = time.perf_counter() - t0
    if side == "ours":
        step, n_tokens, width = ours_step(length, lm, chunk)
    else:
        step, n_tokens, width = official_step(length, lm)
    setup_rss = status_mib("VmRSS")
    peak_before = status_mib("VmHWM")
    did_reset = reset_peak()
    times, cpu, losses = [], [], []
    for i in range(warmup + steps):
        t, c = time.perf_counter(), time.process_time()
        losses.append(step())
        if i >= warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    peak_steps = status_mib("VmHWM")
    return {
        "side": side,
        "length": length,
        "lm": lm,
        "width": width,
        "tokens": n_tokens,
        "step_s": times,
        "median_s": statistics.median(times),
        "cpu_s": cpu,
        "median_cpu_s": statistics.median(cpu),
        "loss": losses[0],
        "loss_last": losses[-1],
        "import_s": import_s,
        "import_mib": import_mib,
        "setup_rss_mib": setup_rss,
        "step_mib": (peak_steps - setup_rss) if did_reset else None,
        "process_peak_mib": max(peak_before, peak_steps),
        "loadavg": os.getloadavg(),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }


# ---- the driver ---------------------------------------------------------------------------------
def run_worker(side: str, length: int, lm: bool, args) -> dict:
    python = str(OFFICIAL_PYTHON) if side == "official" else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--length", str(length)]
    cmd += ["--worker-lm", str(int(lm)), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads), "--lm-chunk-size", str(args.lm_chunk_size)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def import_memory(python: str, modules: list[str], path: Path = REPO) -> dict:
    """Peak and current RSS of a fresh interpreter after importing `modules` (with `path` first on
    sys.path), and which heavy packages those imports loaded."""
    code = (
        f"import sys, time; sys.dont_write_bytecode = True; sys.path.insert(0, {str(path)!r})\n"
        "t = time.perf_counter()\n" + "".join(f"import {m}\n" for m in modules) + "from pathlib import Path\n"
        "f = {l.split(':')[0]: int(l.split()[1]) / 1024 for l in Path('/proc/self/status').read_text()"
        ".splitlines() if l.startswith(('VmHWM', 'VmRSS'))}\n"
        "heavy = ['deepspeed', 'faiss', 'bm25s', 'pandas', 'datasets', 'pytrec_eval', "
        "'sentence_transformers', 'transformers', 'peft', 'accelerate', 'scipy']\n"
        "import json; print(json.dumps({'peak_mib': f['VmHWM'], 'rss_mib': f['VmRSS'], "
        "'seconds': time.perf_counter() - t, 'loaded': [h for h in heavy if h in sys.modules]}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NLTK_DATA": str(OFFICIAL / "nltk_data")}
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(results: list[dict], lengths, lms) -> dict:
    out = {}
    for length in lengths:
        for lm in lms:
            key = f"len{length},lm={'on' if lm else 'off'}"
            mine = {
                s: [r for r in results if r["side"] == s and r["length"] == length and r["lm"] == lm]
                for s in SIDES
            }
            rounds = sorted({r["round"] for r in mine["ours"]} & {r["round"] for r in mine["official"]})
            by = {s: {r["round"]: r for r in mine[s]} for s in SIDES}
            off, our = by["official"], by["ours"]

            def med(side, field, _by=by, _rounds=rounds):
                return statistics.median(_by[side][r][field] for r in _rounds)

            out[key] = {
                "rounds": len(rounds),
                "width": {s: by[s][rounds[0]]["width"] for s in SIDES},
                "tokens_per_step": {s: by[s][rounds[0]]["tokens"] for s in SIDES},
                "median_step_s": {s: med(s, "median_s") for s in SIDES},
                "tokens_per_s": {s: by[s][rounds[0]]["tokens"] / med(s, "median_s") for s in SIDES},
                "speedup_paired": statistics.median(off[r]["median_s"] / our[r]["median_s"] for r in rounds),
                "speedup_per_round": [off[r]["median_s"] / our[r]["median_s"] for r in rounds],
                "median_step_cpu_s": {s: med(s, "median_cpu_s") for s in SIDES},
                "speedup_cpu_paired": statistics.median(
                    off[r]["median_cpu_s"] / our[r]["median_cpu_s"] for r in rounds
                ),
                "step_mib": {s: med(s, "step_mib") for s in SIDES},
                "step_mib_ratio_paired": statistics.median(
                    our[r]["step_mib"] / off[r]["step_mib"] for r in rounds
                ),
                "setup_rss_mib": {s: med(s, "setup_rss_mib") for s in SIDES},
                "process_peak_mib": {s: med(s, "process_peak_mib") for s in SIDES},
                "process_peak_ratio_paired": statistics.median(
                    our[r]["process_peak_mib"] / off[r]["process_peak_mib"] for r in rounds
                ),
                "import_mib": {s: med(s, "import_mib") for s in SIDES},
                "loss": {s: by[s][rounds[0]]["loss"] for s in SIDES},
                "loss_rel_diff": abs(our[rounds[0]]["loss"] - off[rounds[0]]["loss"])
                / abs(off[rounds[0]]["loss"]),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--lm", choices=["on", "off", "both"], default="both")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lm-chunk-size", type=int, default=0, help="ours: LM loss slice rows (0: default)")
    ap.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "vs_official.json")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--worker-lm", type=int, choices=[0, 1], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        lm = bool(args.worker_lm)
        result = worker(
            args.worker, args.length, lm, args.warmup, args.steps, args.threads, args.lm_chunk_size
        )
        print(json.dumps(result))
        return 0
    if not OFFICIAL_PYTHON.exists():
        sys.exit(
            f"{OFFICIAL_PYTHON} is missing: bash {OFFICIAL / 'setup-venv.sh'} {OFFICIAL_PYTHON.parents[1]}"
        )

    lms = {"on": [True], "off": [False], "both": [True, False]}[args.lm]
    rng = random.Random(args.seed)
    started = time.time()
    load_start = os.getloadavg()
    imports = {name: import_memory(sys.executable, mods) for name, mods in IMPORT_SETS.items()}
    imports["official: torch"] = import_memory(str(OFFICIAL_PYTHON), ["torch"], OFFICIAL_PRETRAIN)
    imports["official: modeling+data+load_model"] = import_memory(
        str(OFFICIAL_PYTHON), ["modeling", "data", "load_model"], OFFICIAL_PRETRAIN
    )
    results = []
    for rnd in range(args.rounds):
        for length in args.lengths:
            for lm in lms:
                order = list(SIDES)
                rng.shuffle(order)
                for side in order:
                    r = run_worker(side, length, lm, args)
                    r["round"] = rnd
                    results.append(r)
                    print(
                        f"round {rnd} len {length} lm {'on' if lm else 'off'} {side:8s} "
                        f"{r['median_s'] * 1000:8.1f} ms  step {r['step_mib']:7.1f} MiB  "
                        f"peak {r['process_peak_mib']:7.1f} MiB  loss {r['loss']:.6f}  load {r['loadavg'][0]:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
    summary = summarize(results, args.lengths, lms)
    report = {
        "what": "one adaptation step (forward + loss + backward), official LLaRA code vs ours",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "batch": BATCH,
            "lengths": args.lengths,
            "lm": args.lm,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "steps": args.steps,
            "threads": args.threads,
            "lm_chunk_size": args.lm_chunk_size or "model default",
            "dtype": "float32",
            "model": os.path.relpath(FIXTURES / "model", REPO),  # no path of this machine in the result
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "loadavg_during": [r["loadavg"][0] for r in results],
            "seconds": time.time() - started,
        },
        "import_memory": imports,
        "summary": summary,
        "runs": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    for key, s in summary.items():
        print(
            f"{key:16s} speedup {s['speedup_paired']:.2f}x (cpu {s['speedup_cpu_paired']:.2f}x)  step mem {s['step_mib_ratio_paired']:.2f}x  "
            f"peak {s['process_peak_ratio_paired']:.2f}x  ms {s['median_step_s']['official'] * 1000:.0f}/"
            f"{s['median_step_s']['ours'] * 1000:.0f}  loss rel diff {s['loss_rel_diff']:.1e}"
        )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
