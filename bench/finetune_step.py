"""Where one fine-tuning step of the default grid spends its time (issue 17: the 20-minute budget).

``python bench/finetune_step.py --model results/adapt/released/ebar/seed0/model \
    --train-file results/finetune_data/bm25/seed0/synthetic-pretrain-train.jsonl``

Run with ``OMP_NUM_THREADS=1`` (the grid's fine-tuning jobs have one CPU each) on a quiet machine: it
builds one batch of the grid's shape (``--batch`` queries, ``--group`` passages each) with the stage's
own prompts and loss, times ``--steps`` forward + backward passes after two warm-up steps, prints the
padded shapes, the step time, the matrix products' GFLOP/s and torch's profile of three steps.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch.profiler import ProfilerActivity, profile

from llara.model import LlaraModel
from llara.rows import FINETUNE_FIELDS, load_rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--train-file", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--group", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument(
        "--variant",
        choices=("sdpa", "math", "eager", "bf16", "compile"),
        default="sdpa",
        help="sdpa (the stage's path), sdpa's math kernel, eager attention, bf16 autocast, torch.compile",
    )
    args = p.parse_args(argv)
    torch.manual_seed(0)
    attn = "eager" if args.variant == "eager" else "sdpa"
    llara = LlaraModel.from_pretrained(args.model, head=False, attn_implementation=attn)
    data = load_rows(args.train_file, FINETUNE_FIELDS, args.batch)
    rows = [data[i] for i in range(len(data))]
    layout = llara.layout
    queries = llara.prompt_batch(
        [r["query"] for r in rows], layout.prompt_for("query"), layout.query_max_length
    )
    texts = [t for r in rows for t in [r["pos"][0], *r["neg"][: args.group - 1]]]
    passages = llara.prompt_batch(texts, layout.prompt_for("passage"), layout.passage_max_length)
    q_shape, p_shape = tuple(queries["input_ids"].shape), tuple(passages["input_ids"].shape)
    print(
        f"queries {q_shape}, passages {p_shape} (real tokens per passage: "
        f"{passages['attention_mask'].sum(1).float().mean():.1f})"
    )
    net = llara.model
    net.train()
    if args.variant == "compile":
        net = torch.compile(net, dynamic=True)

    def context() -> contextlib.AbstractContextManager:
        if args.variant == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        if args.variant == "math":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            return sdpa_kernel(SDPBackend.MATH)
        return contextlib.nullcontext()

    def step() -> None:
        with context():
            out = llara.contrastive_loss(queries, passages, temperature=0.01, group_size=args.group, net=net)
        out.loss.backward()

    start = time.perf_counter()
    for _ in range(2):
        step()
    print(f"{args.variant}: two warm-up steps {time.perf_counter() - start:.1f} s (compilation included)")
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    linear = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Linear))
    tokens = q_shape[0] * q_shape[1] + p_shape[0] * p_shape[1]
    flops = 6 * linear * tokens  # forward 2, backward 4 per weight and token
    print(
        f"step {seconds:.3f} s; linear layers {linear / 1e6:.2f} M weights x {tokens} tokens: "
        f"{flops / 1e9:.1f} GFLOP per step, {flops / 1e9 / seconds:.0f} GFLOP/s over the whole step"
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
