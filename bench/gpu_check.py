"""GPU check: the method's heavy steps in bf16/fp16 at 7B-like shapes scaled to one GPU, JSON out.

    PYTHONPATH=. python bench/gpu_check.py --out gpu_check.json          # on a GPU (bench/gpu_check.sh)
    PYTHONPATH=. python bench/gpu_check.py --smoke --out smoke.json      # tiny shapes on the CPU

Random weights (no checkpoint travels to the GPU machine): a Llama with hidden 2048, 8 layers,
vocabulary 32,016 by default. Steps, each timed with CUDA synchronisation, median of --steps:
  1. joint EBAE+EBAR adaptation step (forward + backward), bf16, sdpa with the dense 4-D mask, LM term on;
     the same with flex attention (a BlockMask) when llara.flex is present; peak memory of each;
  2. a LoRA fine-tuning step (InfoNCE, queries 64 / passages 160 tokens, groups of 16);
  3. encoding throughput in fp16 and bf16 (passages of 160 tokens);
  4. faiss exact search on the GPU when a GPU build of faiss is importable.
Every part that fails is recorded with its error; the script still writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import traceback
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, LlamaTokenizer

from llara.layout import PromptLayout
from llara.masks import joint_layout
from llara.model import LlaraModel
from llara.prompts import left_pad, prepare_tokenizer


def tokenizer():
    """A small Llama-style tokenizer trained in-process: only the prompt pieces' ids matter here."""
    words = "summarize the above passage within eight words predict following a of text".split()
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    tok = LlamaTokenizer().train_new_from_iterator(lines, vocab_size=300)
    tok.add_bos_token = True
    prepare_tokenizer(tok, "released")
    return tok


def llama_config(args, **extra) -> LlamaConfig:
    """The scaled 7B-like shape of this check (hidden, layers, heads, vocabulary from the flags)."""
    return LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(4096, args.length),
        **extra,
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, warmup: int, steps: int) -> dict:
    for _ in range(warmup):
        fn()
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    out = {"median_s": statistics.median(times), "times_s": times}
    if device == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def joint_batch(llara: LlaraModel, batch: int, length: int, vocab: int, n_targets: int, gen) -> dict:
    p = llara.prompter
    n_text = length - len(p.prefix_ids) - p.suffix_len("ebae") - p.suffix_len("ebar")
    rows, labels = [], []
    for _ in range(batch):
        text = torch.randint(3, vocab - 16, (n_text,), generator=gen).tolist()
        rows.append(p.prefix_ids + text + p.suffix_ids["ebae"] + p.suffix_ids["ebar"])
        labels.append(
            [-100] * len(p.prefix_ids) + text + [-100] * (len(rows[-1]) - len(p.prefix_ids) - n_text)
        )
    out = joint_layout(rows, p.suffix_len("ebae"), p.suffix_len("ebar"), p.tokenizer.pad_token_id)
    out["lm_labels"] = left_pad(labels, -100)["input_ids"]
    for kind in ("ebae", "ebar"):
        out[f"{kind}_targets"] = torch.stack(
            [torch.randperm(vocab - 16, generator=gen)[:n_targets] + 3 for _ in range(batch)]
        )
    return out


def adaptation(args, tok, device: str, attn: str) -> dict:
    cfg = llama_config(args, attn_implementation=attn)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=torch.bfloat16).train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    llara = LlaraModel(model, tok, PromptLayout())
    batch = joint_batch(llara, args.batch, args.length, args.vocab, 200, torch.Generator().manual_seed(0))
    batch = {k: v.to(device) for k, v in batch.items()}
    # under flex_attention LlaraModel builds a BlockMask from the same rule (llara.flex), else the dense mask

    def step():
        model.zero_grad(set_to_none=True)
        out = llara.adaptation_loss(batch, lm_weight=1.0)
        out.loss.backward()
        return out

    out = step()
    res = timed(step, device, args.warmup, args.steps)
    res.update(loss=float(out.loss), tokens_per_s=args.batch * args.length / res["median_s"], attn=attn)
    return res


def finetuning(args, tok, device: str) -> dict:
    from peft import LoraConfig, get_peft_model

    cfg = llama_config(args)
    torch.manual_seed(0)
    base = LlamaModel(cfg).to(device=device, dtype=torch.bfloat16)
    lora = LoraConfig(
        r=64,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(base, lora).train()
    llara = LlaraModel(model, tok, PromptLayout())
    gen = torch.Generator().manual_seed(1)

    def prompts(n: int, length: int) -> dict:
        rows = [
            [1] + torch.randint(3, args.vocab - 16, (length - 1,), generator=gen).tolist() for _ in range(n)
        ]
        b = left_pad(rows, 0)
        b["position_ids"] = torch.arange(length).expand(n, length)
        return {k: v.to(device) for k, v in b.items()}

    q, p = prompts(args.ft_batch, 64), prompts(args.ft_batch * 16, 160)

    def step():
        model.zero_grad(set_to_none=True)
        out = llara.contrastive_loss(q, p, temperature=0.01, group_size=16)
        out.loss.backward()
        return out

    out = step()
    res = timed(step, device, args.warmup, args.steps)
    res.update(loss=float(out.loss), queries_per_s=args.ft_batch / res["median_s"])
    return res


def encoding(args, tok, device: str, dtype: torch.dtype) -> dict:
    cfg = llama_config(args)
    torch.manual_seed(0)
    model = LlamaModel(cfg).to(device=device, dtype=dtype).eval()
    llara = LlaraModel(model, tok, PromptLayout())
    gen = torch.Generator().manual_seed(2)
    rows = [
        [1] + torch.randint(3, args.vocab - 16, (159,), generator=gen).tolist() for _ in range(args.enc_batch)
    ]
    batch = {k: v.to(device) for k, v in left_pad(rows, 0).items()}

    def step():
        with torch.inference_mode():
            return llara.embed(batch)

    emb = step()
    res = timed(step, device, args.warmup, args.steps)
    res.update(passages_per_s=args.enc_batch / res["median_s"], finite=bool(torch.isfinite(emb).all()))
    return res


def faiss_search(args) -> dict:
    import faiss
    import numpy as np

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return {
            "skipped": "faiss has no GPU build here (faiss-gpu is 135 MB: more than a device call carries)"
        }
    from llara.search import exact_index

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((200_000, 1024), dtype=np.float32)
    queries = rng.standard_normal((1000, 1024), dtype=np.float32)
    index = exact_index(corpus, use_gpu=True)
    start = time.perf_counter()
    index.search(queries, 1000)
    return {"queries_per_s": 1000 / (time.perf_counter() - start), "corpus": corpus.shape}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (checks the script runs)")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32016)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ft-batch", type=int, default=8)
    ap.add_argument("--enc-batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.hidden, args.layers, args.heads, args.vocab, args.length = 64, 2, 4, 1000, 128
        args.batch, args.ft_batch, args.enc_batch, args.steps, args.warmup = 2, 2, 8, 1, 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = tokenizer()
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "shapes": {k: getattr(args, k) for k in ("hidden", "layers", "heads", "vocab", "length", "batch")},
    }
    parts = {
        "adapt_joint_sdpa_dense_mask": lambda: adaptation(args, tok, device, "sdpa"),
        "adapt_joint_flex_attention": lambda: adaptation(args, tok, device, "flex_attention"),
        "finetune_lora_step": lambda: finetuning(args, tok, device),
        "encode_fp16": lambda: encoding(args, tok, device, torch.float16),
        "encode_bf16": lambda: encoding(args, tok, device, torch.bfloat16),
        "faiss_gpu_search": lambda: faiss_search(args),
    }
    for name, fn in parts.items():
        try:
            report[name] = fn()
        except Exception as err:  # one failing part must not hide the others
            report[name] = {
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-2000:],
            }
        if device == "cuda":
            torch.cuda.empty_cache()
        print(name, json.dumps({k: v for k, v in report[name].items() if k != "times_s"})[:400], flush=True)
    dense, flex = report["adapt_joint_sdpa_dense_mask"], report["adapt_joint_flex_attention"]
    if "median_s" in dense and "median_s" in flex:
        report["flex_over_dense_time"] = flex["median_s"] / dense["median_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
