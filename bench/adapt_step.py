"""Cost of one adaptation training step: EBAE, EBAR, the one-pass joint input, and the naive two passes.

    .venv/bin/python bench/adapt_step.py --steps 30 --diagnose --memory-repeats 2
    # writes bench/results/adapt_step.json (--output to change)

One step = forward + loss + backward + AdamW step on a tiny random Llama (hidden 256, 4 layers, 4 heads,
vocabulary 8,000; fp32), batch of 8 texts of exactly 256 tokens, released prompt style. Every variant
goes through the project's own code: ``llara.model.LlaraModel.adaptation_batch`` builds the batch and
``LlaraModel.adaptation_loss`` (inside ``llara.training.LlaraTrainer.compute_loss``) computes the loss
(bag-of-words parts + LM term), with the
Trainer's own optimizer (``Trainer.create_optimizer``). ``joint-two-pass`` is the naive way to train
on both tasks: one ``ebae`` pass and one ``ebar`` pass over the same texts, each backpropagated with
weight 1/2 before one optimizer step. Its loss, (L_ebae + L_ebar) / 2 = (bow_ebae + bow_ebar) / 2 + lm,
is exactly the joint loss; the script checks that (losses and gradients at the same weights).

Timing: one process holds one model copy + optimizer per variant and runs the variants interleaved,
one step each per round in a new random order (so a burst of load from other users hits every
variant alike), after warm-up rounds; medians and quartiles are reported, and ``time_paired_*``
ratios (median of the per-round ratios). One torch thread by default: on 2 shared cores a 2-thread
step varied 10x with other people's load, a 1-thread step within +-5%.

Peak memory: CPU: every variant runs again alone in a fresh subprocess; the peak resident set size
(VmHWM, reset to the current RSS through /proc/self/clear_refs just before the first step) minus the
RSS before the first step is what a training step adds at its peak (activations, gradients, AdamW
states, allocator slack). ``ru_maxrss`` is not used: Linux carries the parent's peak into a child's.
GPU (``--device cuda``, not run here): ``torch.cuda.max_memory_allocated`` per step in the timing
process. FLOPs: ``torch.utils.flop_counter`` (+ the fused attention kernel, added analytically).
``--diagnose`` adds forward-only timings and a joint-length control with a plain causal mask, to
tell the cost of the longer row from the cost of the 4-D mask. Results and findings:
bench/ADAPT_NOTES.md.
"""

from __future__ import annotations

import argparse
import copy
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

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llara.io import atomic_write_json, code_version, utc_now  # noqa: E402
from llara.layout import PromptLayout  # noqa: E402
from llara.model import LlaraModel  # noqa: E402
from llara.prompts import Prompter, prepare_tokenizer  # noqa: E402
from llara.training import LlaraTrainer  # noqa: E402

VARIANTS = ("ebae", "ebar", "joint", "joint-two-pass")
MODEL = dict(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=8000,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
)
SYLLABLES = "ka to ri mu se la no vi de pa go lu me sa ti ro be na ku fi".split()


def words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(n))


def build_tokenizer(folder: Path, seed: int = 0):
    """A Llama-style tokenizer trained in code (offline) on pseudo-words, with the slot tokens."""
    from transformers import AutoTokenizer, LlamaTokenizer

    rng = random.Random(seed)
    lines = [words(rng, 40) for _ in range(3000)]
    lines += ["summarize the above passage within eight words predict the following passage"] * 5
    tok = LlamaTokenizer().train_new_from_iterator(lines, vocab_size=4000)
    tok.add_bos_token = True
    tok.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    prepare_tokenizer(tok, "released")
    tok.save_pretrained(folder)
    return tok


def rows_for(batch_size: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    texts = [words(rng, 400) for _ in range(batch_size + 1)]  # 400 words > 256 tokens: cut to 256
    return [
        {"input": texts[i], "output_summarize": texts[i], "output_predict": texts[i + 1]}
        for i in range(batch_size)
    ]


def new_model(attn: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation=attn, **MODEL)
    return LlamaForCausalLM(config).train()


class Setup:
    """Batches and loss functions of every variant, built with LlaraModel and LlaraTrainer."""

    def __init__(self, tokenizer, batch_size: int, text_tokens: int, attn: str, work: Path, device: str):
        from transformers import TrainingArguments

        self.prompter = Prompter(tokenizer, "released")
        self.tokenizer = tokenizer
        self.batcher = LlaraModel(new_model(attn), tokenizer, PromptLayout())  # builds batches only
        self.device, self.attn, self.work = device, attn, work
        self.rows = rows_for(batch_size)
        p = self.prompter
        head = len(p.prefix_ids)
        self.max_length = {  # every variant sees exactly `text_tokens` tokens of each text
            "ebae": head + text_tokens + p.suffix_len("ebae"),
            "ebar": head + text_tokens + p.suffix_len("ebar"),
            "joint": head + text_tokens + p.suffix_len("ebae") + p.suffix_len("ebar"),
        }
        self.args = TrainingArguments(
            output_dir=str(work / "trainer"), report_to="none", use_cpu=device == "cpu", learning_rate=1e-4
        )
        self.batches = {kind: self.collate(kind) for kind in self.max_length}
        for kind, batch in self.batches.items():
            n_text = int((batch["lm_labels"] != -100).sum(1).min())
            if n_text != text_tokens:
                raise RuntimeError(f"{kind}: rows hold {n_text} text tokens, not {text_tokens}")

    def collate(self, kind: str) -> dict[str, torch.Tensor]:
        batch = self.batcher.adaptation_batch(
            self.rows, kind, max_length=self.max_length[kind], target_max_length=256
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def trainer(self, model, kind: str) -> LlaraTrainer:
        llara = LlaraModel(model, self.tokenizer, PromptLayout())
        return LlaraTrainer(
            model=model,
            args=self.args,
            loss_fn=lambda net, batch: llara.adaptation_loss(batch, bow_scale=0.1, lm_weight=1.0, net=net),
        )

    def runner(self, variant: str, model):
        """(step function, optimizer) for ``variant`` training ``model``."""
        kinds = ("ebae", "ebar") if variant == "joint-two-pass" else (variant,)
        passes = [(self.trainer(model, k), self.batches[k]) for k in kinds]
        optimizer = passes[0][0].create_optimizer(model)
        weight = 1.0 / len(passes)

        def step() -> float:
            total = 0.0
            for trainer, batch in passes:
                loss = trainer.compute_loss(model, batch)
                (loss * weight if len(passes) > 1 else loss).backward()
                total += float(loss.detach()) * weight
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return total

        return step, optimizer


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def check_same_objective(setup: Setup, model) -> dict[str, float]:
    """joint vs (ebae + ebar) / 2 at the same weights: loss and gradient differences."""
    grads, losses = {}, {}
    for variant in ("joint", "joint-two-pass"):
        m = copy.deepcopy(model)
        kinds = ("ebae", "ebar") if variant == "joint-two-pass" else ("joint",)
        total = 0.0
        for k in kinds:
            loss = setup.trainer(m, k).compute_loss(m, setup.batches[k]) / len(kinds)
            loss.backward()
            total += float(loss.detach())
        losses[variant] = total
        grads[variant] = {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}
    a, b = grads["joint"], grads["joint-two-pass"]
    return {
        "loss_joint": losses["joint"],
        "loss_two_pass": losses["joint-two-pass"],
        "abs_loss_difference": abs(losses["joint"] - losses["joint-two-pass"]),
        "max_abs_grad_difference": max(float((a[n] - b[n]).abs().max()) for n in a),
        "max_abs_grad": max(float(a[n].abs().max()) for n in a),
    }


def time_variants(setup: Setup, variants, warmup: int, steps: int, seed: int) -> dict:
    base = new_model(setup.attn).to(setup.device)
    runners = {v: setup.runner(v, copy.deepcopy(base))[0] for v in variants}
    samples: dict[str, list[float]] = {v: [] for v in variants}
    mem: dict[str, int] = {}
    rng = random.Random(seed)
    order = list(variants)
    for i in range(warmup + steps):
        rng.shuffle(order)  # a new order every round: no variant always runs after the same one
        for v in order:
            if setup.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(setup.device)
            t0 = time.perf_counter()
            runners[v]()
            sync(setup.device)
            if i >= warmup:
                samples[v].append(time.perf_counter() - t0)
            if setup.device == "cuda":
                mem[v] = max(mem.get(v, 0), torch.cuda.max_memory_allocated())
    out = {}
    for v in variants:
        q = statistics.quantiles(samples[v], n=4) if len(samples[v]) > 1 else samples[v] * 3
        out[v] = {
            "median_s": statistics.median(samples[v]),
            "q1_s": q[0],
            "q3_s": q[2],
            "min_s": min(samples[v]),
            "samples_s": [round(s, 5) for s in samples[v]],
        }
        if v in mem:
            out[v]["cuda_max_memory_allocated_mib"] = mem[v] / 2**20
    return out


def count_flops(setup: Setup) -> dict:
    """Floating-point operations of forward + backward per variant: a noise-free cost ratio.

    ``torch.utils.flop_counter`` counts the matrix products; on the CPU it does not count the fused
    attention kernel, whose score and value products are then added analytically:
    12 * B * heads * T^2 * head_dim per layer (forward 4 B H T^2 d, backward twice that), over the
    full T x T (a kernel given an arbitrary mask cannot skip the blocks above the diagonal).
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = new_model(setup.attn).to(setup.device)
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    out = {}
    for kind, batch in setup.batches.items():
        with FlopCounterMode(display=False) as counter:
            setup.trainer(model, kind).compute_loss(model, batch).backward()
        model.zero_grad(set_to_none=True)
        ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
        counted = counter.get_total_flops()
        rows, width = batch["input_ids"].shape
        attention_counted = any("attention" in op for op in ops)
        attention = 0 if attention_counted else 12 * rows * cfg.num_attention_heads * width**2 * head_dim
        attention *= cfg.num_hidden_layers
        out[kind] = {
            "counted_gflop": counted / 1e9,
            "counted_ops": sorted(ops),
            "attention_added_analytically_gflop": attention / 1e9,
            "total_gflop": (counted + attention) / 1e9,
        }
    out["joint-two-pass"] = {"total_gflop": out["ebae"]["total_gflop"] + out["ebar"]["total_gflop"]}
    return out


def diagnose(setup: Setup, warmup: int, steps: int, seed: int) -> dict:
    """Forward-only times, and the joint-length row with a plain causal mask (no 4-D mask)."""
    base = new_model(setup.attn).to(setup.device)
    joint = setup.batches["joint"]
    plain = {k: v for k, v in joint.items()}
    plain["attention_mask"] = torch.ones_like(joint["input_ids"])  # 2-D: every row is full length
    plain["position_ids"] = torch.arange(joint["input_ids"].shape[1], device=setup.device).expand_as(
        joint["input_ids"]
    )
    cases = {
        "ebae": ("ebae", setup.batches["ebae"]),
        "joint": ("joint", joint),
        "joint-row-causal-2d-mask": ("joint", plain),  # same length and loss, stock causal mask
    }
    trainers = {name: setup.trainer(base, kind) for name, (kind, _) in cases.items()}
    fwd: dict[str, list[float]] = {n: [] for n in cases}
    step: dict[str, list[float]] = {n: [] for n in cases}
    rng = random.Random(seed)
    order = list(cases)
    for i in range(warmup + steps):
        rng.shuffle(order)
        for name in order:
            batch = cases[name][1]
            sync(setup.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                trainers[name].compute_loss(base, batch)
            sync(setup.device)
            t1 = time.perf_counter()
            trainers[name].compute_loss(base, batch).backward()  # no optimizer: weights stay fixed
            base.zero_grad(set_to_none=True)
            sync(setup.device)
            t2 = time.perf_counter()
            if i >= warmup:
                fwd[name].append(t1 - t0)
                step[name].append(t2 - t1)
    return {
        name: {
            "forward_only_median_s": statistics.median(fwd[name]),
            "forward_backward_median_s": statistics.median(step[name]),
            "row_width": int(cases[name][1]["input_ids"].shape[1]),
        }
        for name in cases
    }


def proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status (Linux), in MiB: VmRSS (now) or VmHWM (peak RSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(args) -> int:
    """Run one variant alone in this (fresh) process and print its peak RSS as JSON."""
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.work_dir / "tokenizer")
    setup = Setup(tok, args.batch_size, args.text_tokens, args.attn, args.work_dir, "cpu")
    step, _ = setup.runner(args.memory_child, new_model(args.attn))
    # Not ru_maxrss: Linux carries the parent's high-water mark into a forked/exec'd child's
    # ru_maxrss, so a big parent hides the child's own peak. VmHWM belongs to this process's memory
    # map (new at exec) and can be reset to the current RSS just before the steps.
    peak_setup = proc_status_mib("VmHWM")
    was_reset = reset_peak_rss()
    before = proc_status_mib("VmRSS")
    for _ in range(args.memory_steps):
        step()
    peak = proc_status_mib("VmHWM")
    print(
        json.dumps(
            {
                "rss_before_first_step_mib": before,
                "peak_rss_during_setup_mib": peak_setup,
                "peak_rss_mib": peak,
                "step_peak_delta_mib": peak - before,
                "peak_reset": was_reset,
            }
        )
    )
    return 0


def measure_memory_cpu(args, variants) -> dict:
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.memory_repeats):
        for v in variants:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", v]
            cmd += ["--work-dir", str(args.work_dir), "--threads", str(args.threads)]
            cmd += ["--batch-size", str(args.batch_size), "--text-tokens", str(args.text_tokens)]
            cmd += ["--attn", args.attn, "--memory-steps", str(args.memory_steps)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"memory run of {v} failed:\n{res.stderr[-3000:]}")
            runs[v].append(json.loads(res.stdout.strip().splitlines()[-1]))
    out = {}
    for v in variants:
        out[v] = {
            key: statistics.median(r[key] for r in runs[v])
            for key in ("peak_rss_mib", "rss_before_first_step_mib", "step_peak_delta_mib")
        }
        out[v]["peak_reset"] = all(r["peak_reset"] for r in runs[v])
        out[v]["runs"] = len(runs[v])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "adapt_step.json")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--text-tokens", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps per variant first")
    p.add_argument("--steps", type=int, default=10, help="measured steps per variant")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on shared cores)")
    p.add_argument("--attn", default="sdpa", help="sdpa (AdaptArguments default) or eager")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--memory-repeats", type=int, default=1, help="fresh processes per variant (CPU)")
    p.add_argument("--memory-steps", type=int, default=2, help="steps per memory process (CPU)")
    p.add_argument("--diagnose", action="store_true", help="forward-only and plain-mask control timings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory-child", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return memory_child(args)

    torch.set_num_threads(args.threads)
    load_at_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="adapt_step_") as tmp:
        args.work_dir = Path(tmp)
        tokenizer = build_tokenizer(args.work_dir / "tokenizer")
        setup = Setup(tokenizer, args.batch_size, args.text_tokens, args.attn, args.work_dir, args.device)
        model = new_model(args.attn).to(args.device)
        n_params = sum(t.numel() for t in model.parameters())
        same = check_same_objective(setup, model)
        del model
        flops = count_flops(setup)
        t0 = time.perf_counter()
        timing = time_variants(setup, VARIANTS, args.warmup, args.steps, args.seed)
        timing_wall = time.perf_counter() - t0
        diag = diagnose(setup, args.warmup, args.steps, args.seed) if args.diagnose else None
        if args.device == "cpu":
            memory = measure_memory_cpu(args, VARIANTS)
            memory_method = (
                "CPU: each variant alone in a fresh subprocess (same setup); the peak resident set size "
                "(VmHWM of /proc/self/status, reset to the current RSS through /proc/self/clear_refs just "
                "before the first step) over --memory-steps steps; step_peak_delta_mib = that peak minus "
                "the RSS before the first step (model, optimizer without states yet, batch built), so it "
                "holds activations, gradients, AdamW states and allocator slack. ru_maxrss is not used: "
                "Linux carries the parent's peak into a child's ru_maxrss. Median over "
                f"{args.memory_repeats} process(es) per variant."
            )
        else:
            key = "cuda_max_memory_allocated_mib"
            memory = {v: {key: timing[v].pop(key)} for v in VARIANTS}
            memory_method = (
                "GPU: torch.cuda.max_memory_allocated per step (peak stats reset before each step)"
            )

    med = {v: timing[v]["median_s"] for v in VARIANTS}
    widths = {k: int(b["input_ids"].shape[1]) for k, b in setup.batches.items()}

    def paired(a: str, b: str) -> float:
        """Median over rounds of the ratio of the two steps run in the same round (load drifts cancel)."""
        pairs = zip(timing[a]["samples_s"], timing[b]["samples_s"], strict=True)
        return statistics.median(x / y for x, y in pairs)

    mem_key = "step_peak_delta_mib" if args.device == "cpu" else "cuda_max_memory_allocated_mib"
    ratios = {
        "time_joint/ebae": med["joint"] / med["ebae"],
        "time_joint/ebar": med["joint"] / med["ebar"],
        "time_joint/joint-two-pass": med["joint"] / med["joint-two-pass"],
        "time_joint-two-pass/ebae": med["joint-two-pass"] / med["ebae"],
        "time_paired_joint/ebae": paired("joint", "ebae"),
        "time_paired_joint/joint-two-pass": paired("joint", "joint-two-pass"),
        "flops_joint/ebae": flops["joint"]["total_gflop"] / flops["ebae"]["total_gflop"],
        "flops_joint/joint-two-pass": flops["joint"]["total_gflop"] / flops["joint-two-pass"]["total_gflop"],
        "row_width_joint/ebae": widths["joint"] / widths["ebae"],  # what a longer row alone costs
        f"memory_joint/ebae ({mem_key})": memory["joint"][mem_key] / memory["ebae"][mem_key],
        f"memory_joint/joint-two-pass ({mem_key})": memory["joint"][mem_key]
        / memory["joint-two-pass"][mem_key],
    }
    out = {
        "benchmark": "adapt_step",
        "description": "one training step (forward + loss + backward + AdamW step) per variant",
        "model": {
            "architecture": "LlamaForCausalLM, random init",
            **MODEL,
            "parameters": n_params,
            "dtype": "float32",
            "attn_implementation": args.attn,
        },
        "batch": {
            "rows": args.batch_size,
            "text_tokens_per_row": args.text_tokens,
            "prompt_style": "released",
            "prefix_tokens": len(setup.prompter.prefix_ids),
            "suffix_tokens": {k: setup.prompter.suffix_len(k) for k in ("ebae", "ebar")},
            "row_width": widths,
            "note": "joint-two-pass runs the ebae batch then the ebar batch (each backward with weight 1/2)",
        },
        "loss": {"bow_scale": 0.1, "lm_weight": 1.0, "same_objective_check": same},
        "optimizer": setup.args.optim.value if hasattr(setup.args.optim, "value") else str(setup.args.optim),
        "timing": {
            "method": (
                "one process, one model copy + optimizer per variant, variants interleaved in a new random "
                f"order every round; {args.warmup} warm-up then {args.steps} measured steps per variant; "
                "wall clock per step (perf_counter), median and quartiles; time_paired_* ratios are the "
                "median over rounds of the per-round ratio"
            ),
            "warmup_steps": args.warmup,
            "measured_steps": args.steps,
            "wall_seconds": timing_wall,
            "per_variant": timing,
        },
        "memory": {"method": memory_method, "per_variant": memory},
        "flops": {
            "method": "torch.utils.flop_counter over one forward + loss + backward (no optimizer step)",
            "per_variant": flops,
        },
        "ratios": ratios,
        "requirement": {
            "joint/ebae <= 1.15": ratios["time_joint/ebae"] <= 1.15,
            "joint < joint-two-pass": ratios["time_joint/joint-two-pass"] < 1.0,
        },
        "diagnosis": diag,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
            "load_average_1_5_15_at_start": load_at_start,
            "load_average_1_5_15_at_end": list(os.getloadavg()),
        },
        "code_version": code_version(),
        "date": utc_now(),
    }
    atomic_write_json(args.output, out)
    print(json.dumps({"median_s": med, "ratios": ratios, "requirement": out["requirement"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
