"""The tiny base model the default grid makes itself: a byte-level BPE tokenizer and a small Llama.

Stands in for LLaMA-2-7B on a CPU: same architecture family (``LlamaForCausalLM``, untied LM head
by default), same special-token layout (``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2, no pad token)
and the same tokenizer behaviour (BOS added when ``add_special_tokens=True``, no EOS), so the
method code treats it exactly like the real one. Everything is trained from the corpus here:

1. **Tokenizer.** ``tokenizers`` byte-level BPE (no unknown bytes, ``<unk>`` kept only for the id
   layout) trained on the training articles, wrapped as a ``PreTrainedTokenizerFast`` whose
   ``tokenizer.json`` post-processor prepends ``<s>``. ``AutoTokenizer.from_pretrained(folder)``
   loads it offline. Note: transformers 5 does not save the ``add_bos_token`` flag, so after a
   reload the attribute reads False although BOS *is* added (the post-processor does it); test the
   behaviour (``tok("a").input_ids[0] == tok.bos_token_id``), not the flag.
2. **Data.** Each article is ``title + "\\n" + text``, encoded as ``<s> ... </s>``, all concatenated
   and cut into blocks of ``block_size`` tokens (remainder dropped). The last ``eval_fraction`` of
   the articles (file order) is held out for perplexity and not seen by the tokenizer or training.
3. **Training.** A plain loop (faster than the Trainer on 2 CPU cores): AdamW (betas 0.9/0.95,
   weight decay on matrices only), linear warm-up then cosine decay to 10% of ``lr``, gradient
   clipping at 1.0, blocks drawn in a seeded random order (reshuffled each epoch), stopped at
   ``max_steps`` or ``max_seconds`` (whichever first; a time cap makes the step count machine
   dependent, it is recorded).
4. **Output.** ``save_pretrained`` of model and tokenizer into ``<output>.partial``, plus
   ``basemodel.json`` (resolved arguments, parameter count, token counts, held-out perplexity
   before/after, loss log, timings), then renamed to ``<output>``.

CLI::

    python -m llara.basemodel --corpus resources/synthetic/wiki.parquet --output resources/basemodel \\
        --vocab-size 4000 --max-steps 300 [--hidden-size 128 --layers 4 --heads 4 --max-seconds 150]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llara.io import DataError, atomic_folder, atomic_write_json, cli_main
from llara.wiki import iter_articles, parse_bool

log = logging.getLogger("llara.basemodel")

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in LLaMA-2
STATS_FILE = "basemodel.json"


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 512
    tie_embeddings: bool = False


@dataclass(frozen=True)
class TrainSettings:
    block_size: int = 128
    batch_size: int = 16
    max_steps: int = 300
    max_seconds: float | None = None
    lr: float = 2e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.1
    seed: int = 0
    log_every: int = 25


# ---------------------------------------------------------------------------------------------
# Corpus and tokenizer
# ---------------------------------------------------------------------------------------------


def load_corpus_texts(corpus: str | Path, max_articles: int | None = None) -> list[str]:
    """``title + "\\n" + text`` of every non-empty article of a wiki-layout parquet/JSONL source."""
    texts = [
        f"{a.title}\n{a.text}".strip()
        for a in iter_articles(corpus, max_articles)
        if a.text.strip() or a.title.strip()
    ]
    if not texts:
        raise DataError(f"{corpus}: no article has any text; give a corpus with non-empty 'text' values")
    return texts


def split_held_out(texts: list[str], eval_fraction: float) -> tuple[list[str], list[str]]:
    """(train, held-out): the held-out part is the last ``eval_fraction`` of the articles (at least one)."""
    if len(texts) < 2:
        raise DataError(f"the corpus has {len(texts)} article(s); at least 2 are needed (train + held-out)")
    n_eval = min(len(texts) - 1, max(1, round(len(texts) * eval_fraction)))
    return texts[:-n_eval], texts[-n_eval:]


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int = 2):
    """Byte-level BPE with ``<unk>``/``<s>``/``</s>`` at ids 0/1/2, adding BOS like Llama."""
    if vocab_size < 300:  # checked before the imports (a second of CPU)
        raise DataError(
            f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}; raise --vocab-size"
        )
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )


def encode_stream(tokenizer, texts: list[str]) -> np.ndarray:
    """All texts as one id stream, each ``<s> ... </s>``. (N,) int64"""
    parts = []
    for start in range(0, len(texts), 256):
        batch = tokenizer(texts[start : start + 256], add_special_tokens=False)["input_ids"]
        for ids in batch:
            parts.append(np.asarray([tokenizer.bos_token_id, *ids, tokenizer.eos_token_id], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def pack_blocks(ids: np.ndarray, block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """Consecutive blocks of ``block_size`` tokens (remainder dropped). (B, block_size)"""
    n = len(ids) // block_size
    if max_blocks is not None:
        n = min(n, max_blocks)
    return torch.from_numpy(ids[: n * block_size].reshape(n, block_size).copy())


# ---------------------------------------------------------------------------------------------
# Model and training
# ---------------------------------------------------------------------------------------------


def build_model(tokenizer, shape: ModelShape, seed: int):
    """A freshly initialised ``LlamaForCausalLM`` (seeded) sized for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape.hidden_size % shape.num_heads:
        raise DataError(
            f"hidden_size {shape.hidden_size} is not divisible by num_heads {shape.num_heads}; "
            "change --hidden-size or --heads"
        )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=shape.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@torch.no_grad()
def perplexity(model, blocks: torch.Tensor, batch_size: int = 16) -> float:
    """exp(mean next-token NLL) over ``blocks`` (every block the same length). (B, T) -> float"""
    if len(blocks) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size]
        loss = model(input_ids=batch, labels=batch).loss
        total += loss.item() * len(batch)
        count += len(batch)
    model.train(was_training)
    return math.exp(total / count)


def _optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def lr_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up over ``warmup_ratio * max_steps`` steps, then cosine decay to 10%."""
    warmup = max(1, round(settings.warmup_ratio * settings.max_steps))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, settings.max_steps - warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_lm(model, blocks: torch.Tensor, settings: TrainSettings) -> dict[str, Any]:
    """Causal-LM training on ``blocks`` (B, T); returns the loss log and why it stopped."""
    if len(blocks) == 0:
        raise DataError("no training block: the corpus is shorter than one block; lower --block-size")
    model.train()
    opt = _optimizer(model, settings.lr, settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(blocks), generator=gen)
    cursor, history, stopped, last_loss = 0, [], "max_steps", float("nan")
    t0 = time.perf_counter()
    step = 0
    for step in range(settings.max_steps):
        if settings.max_seconds is not None and time.perf_counter() - t0 > settings.max_seconds:
            stopped = "max_seconds"
            break
        if cursor + settings.batch_size > len(order):  # new epoch, new order
            order, cursor = torch.randperm(len(blocks), generator=gen), 0
        batch = blocks[order[cursor : cursor + settings.batch_size]]  # (b, T)
        cursor += settings.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = model(input_ids=batch, labels=batch).loss
        last_loss = loss.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % settings.log_every == 0 or step == settings.max_steps - 1:
            entry = {"step": step, "loss": last_loss, "lr": lr_at(step, settings)}
            entry["elapsed_s"] = round(time.perf_counter() - t0, 2)
            history.append(entry)
            log.info(
                "step %d loss %.4f lr %.2e (%.1fs)", step, entry["loss"], entry["lr"], entry["elapsed_s"]
            )
    else:
        step = settings.max_steps
    return {
        "steps_done": step,
        "stopped_by": stopped,
        "final_loss": last_loss,
        "loss_log": history,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "tokens_per_second": round(
            step * settings.batch_size * blocks.shape[1] / max(1e-9, time.perf_counter() - t0)
        ),
    }


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def build_base_model(
    corpus: str | Path,
    output: str | Path,
    vocab_size: int = 4000,
    shape: ModelShape = ModelShape(),
    settings: TrainSettings = TrainSettings(),
    max_articles: int | None = None,
    eval_fraction: float = 0.05,
    eval_blocks: int = 32,
) -> dict[str, Any]:
    """Train tokenizer + model on ``corpus`` and save both to ``output``; returns the stats written."""
    t0 = time.perf_counter()
    if settings.block_size > shape.max_positions:
        raise DataError(
            f"block_size {settings.block_size} exceeds max_positions {shape.max_positions}; lower "
            "--block-size or raise --max-positions"
        )
    texts = load_corpus_texts(corpus, max_articles)
    train_texts, eval_texts = split_held_out(texts, eval_fraction)
    tokenizer = train_tokenizer(train_texts, vocab_size)
    t_tok = time.perf_counter() - t0
    train_ids, eval_ids = encode_stream(tokenizer, train_texts), encode_stream(tokenizer, eval_texts)
    train_blocks = pack_blocks(train_ids, settings.block_size)
    held_out = pack_blocks(eval_ids, settings.block_size, eval_blocks)
    if len(held_out) == 0:
        raise DataError(
            f"{corpus}: the held-out articles give {len(eval_ids)} tokens, less than one block of "
            f"{settings.block_size}; raise --eval-fraction or lower --block-size"
        )
    model = build_model(tokenizer, shape, settings.seed)
    ppl_before = perplexity(model, held_out, settings.batch_size)
    run = train_lm(model, train_blocks, settings)
    ppl_after = perplexity(model, held_out, settings.batch_size)
    log.info("held-out perplexity %.1f -> %.1f", ppl_before, ppl_after)
    stats = {
        "stage": "llara.basemodel",
        "args": {
            "corpus": str(corpus),
            "output": str(output),
            "vocab_size": vocab_size,
            "max_articles": max_articles,
            "eval_fraction": eval_fraction,
            "eval_blocks": eval_blocks,
            "model": asdict(shape),
            "train": asdict(settings),
        },
        "tokenizer": {
            "vocab_size": len(tokenizer),
            "special_tokens": {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS},
        },
        "parameters": sum(p.numel() for p in model.parameters()),
        "articles": {"train": len(train_texts), "held_out": len(eval_texts)},
        "tokens": {"train": len(train_ids), "held_out": len(eval_ids), "train_blocks": len(train_blocks)},
        "perplexity": {"before": ppl_before, "after": ppl_after, "held_out_blocks": len(held_out)},
        **run,
        "seconds": {"corpus_and_tokenizer": round(t_tok, 2), "total": None},
        "torch_threads": torch.get_num_threads(),
    }
    output = Path(output)
    with atomic_folder(output, overwrite=True) as tmp:  # a rerun replaces the model
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stats["seconds"]["total"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(tmp / STATS_FILE, stats)
    return stats


def _none_if_zero(value: str) -> float | None:
    return float(value) or None


@cli_main
def main(argv: list[str] | None = None) -> int:
    d_shape, d_train = ModelShape(), TrainSettings()
    p = argparse.ArgumentParser(prog="python -m llara.basemodel", description="Train the tiny base model.")
    p.add_argument("--corpus", required=True, help="wiki-layout .parquet/.jsonl (id, url, title, text)")
    p.add_argument("--output", required=True, type=Path, help="model folder to write")
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--max-articles", type=int, default=0, help="read at most N articles (0: all)")
    p.add_argument("--eval-fraction", type=float, default=0.05, help="share of articles held out")
    p.add_argument("--eval-blocks", type=int, default=32, help="held-out blocks used for perplexity")
    p.add_argument("--hidden-size", type=int, default=d_shape.hidden_size)
    p.add_argument("--layers", type=int, default=d_shape.num_layers)
    p.add_argument("--heads", type=int, default=d_shape.num_heads)
    p.add_argument("--intermediate-size", type=int, default=d_shape.intermediate_size)
    p.add_argument("--max-positions", type=int, default=d_shape.max_positions)
    p.add_argument(
        "--tie-embeddings", type=parse_bool, nargs="?", const=True, default=False, help="true|false"
    )
    p.add_argument("--block-size", type=int, default=d_train.block_size)
    p.add_argument("--batch-size", type=int, default=d_train.batch_size)
    p.add_argument("--max-steps", type=int, default=d_train.max_steps)
    p.add_argument("--max-seconds", type=_none_if_zero, default=None, help="time cap on training (0: none)")
    p.add_argument("--lr", type=float, default=d_train.lr)
    p.add_argument("--warmup-ratio", type=float, default=d_train.warmup_ratio)
    p.add_argument("--weight-decay", type=float, default=d_train.weight_decay)
    p.add_argument("--seed", type=int, default=d_train.seed)
    p.add_argument("--log-every", type=int, default=d_train.log_every)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: robust on shared cores; 0: torch default)",
    )
    a = p.parse_args(argv)
    sizes = (
        "hidden_size layers heads intermediate_size max_positions block_size batch_size eval_blocks log_every"
    )
    for name in sizes.split():
        if getattr(a, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if not 0 < a.eval_fraction < 1:
        raise DataError(f"--eval-fraction must be between 0 and 1 (exclusive), got {a.eval_fraction}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    shape = ModelShape(
        a.hidden_size, a.layers, a.heads, a.intermediate_size, a.max_positions, a.tie_embeddings
    )
    settings = TrainSettings(
        a.block_size,
        a.batch_size,
        a.max_steps,
        a.max_seconds,
        a.lr,
        a.warmup_ratio,
        a.weight_decay,
        a.seed,
        a.log_every,
    )
    stats = build_base_model(
        a.corpus,
        a.output,
        a.vocab_size,
        shape,
        settings,
        a.max_articles or None,
        a.eval_fraction,
        a.eval_blocks,
    )
    summary = {
        k: stats[k] for k in ("parameters", "steps_done", "stopped_by", "final_loss", "perplexity", "seconds")
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
