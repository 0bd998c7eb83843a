"""Stage: contrastive fine-tuning of an (adapted) decoder into a retriever (llara-method.md sections 1, 6).

``python -m llara.finetune --model_name_or_path ADAPTED --train_file train.jsonl --output_dir OUT``

RepLLaMA-style, as the released code: LoRA (r=64, alpha=16, dropout 0.1 on q,k,v,o,gate,up,down),
InfoNCE with temperature 0.01 over in-batch and hard negatives (optionally shared across devices),
groups of 16 passages (1 positive + 15 negatives), query max length 64, passage max length 160.
Queries use the EBAR prompt and passages the EBAE prompt by default ("N2S").
Rows are ``{query, pos: [...], neg: [...]}`` JSONL. The model has no LM head here: the backbone's
final hidden states are pooled with :func:`llara.pooling.pool` (the released code computes
full-vocabulary logits it never uses, method notes section 8).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments, set_seed

from llara.adapt import LORA_TARGETS
from llara.losses import info_nce, info_nce_cross_device
from llara.modeling import last_hidden, load_backbone, load_tokenizer, resize_for_tokenizer
from llara.pooling import pool
from llara.prompts import KINDS, PROMPT_STYLES, Prompter, check_kind, check_style
from llara.rows import FINETUNE_FIELDS, RowError, load_rows
from llara.training import (
    PRECISIONS,
    PartsLoggingTrainer,
    last_checkpoint,
    parse_stage_args,
    prepare_output,
    resolve_precision,
    save_trained,
    training_config,
    wrap_lora,
)

log = logging.getLogger("llara.finetune")


@dataclass
class FinetuneArguments:
    model_name_or_path: str = field(metadata={"help": "adapted model folder (or any HF decoder)"})
    train_file: str = field(metadata={"help": "JSONL {query, pos: [...], neg: [...]}"})
    prompt_style: str = field(default="released", metadata={"help": f"one of {', '.join(PROMPT_STYLES)}"})
    query_prompt: str = field(
        default="ebar", metadata={"help": f"prompt for queries, one of {', '.join(KINDS)}"}
    )
    passage_prompt: str = field(
        default="ebae", metadata={"help": f"prompt for passages, one of {', '.join(KINDS)}"}
    )
    query_max_length: int = 64
    passage_max_length: int = 160
    group_size: int = field(
        default=16, metadata={"help": "passages per query: 1 positive + group_size-1 negatives"}
    )
    temperature: float = 0.01
    cross_device_negatives: bool = field(default=True, metadata={"help": "share passages across devices"})
    use_lora: bool = True
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    merge_lora: bool = field(
        default=False, metadata={"help": "save a merged full model instead of an adapter"}
    )
    max_rows: int | None = None
    precision: str = field(default="auto", metadata={"help": f"one of {', '.join(PRECISIONS)}"})
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        check_style(self.prompt_style)
        check_kind(self.query_prompt)
        check_kind(self.passage_prompt)
        if self.group_size < 1:
            raise ValueError("--group_size must be at least 1 (the positive)")


class GroupDataset(torch.utils.data.Dataset):
    """Row i -> (query, [positive, negatives...]) sampled with a seed that depends on (seed, epoch, i)."""

    def __init__(self, rows, group_size: int, seed: int) -> None:
        self.rows, self.group_size, self.seed, self.epoch = rows, group_size, seed, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        rng = random.Random(f"{self.seed}-{self.epoch}-{i}")
        negs = list(row["neg"])
        want = self.group_size - 1
        if want and len(negs) >= want:
            negs = rng.sample(negs, want)
        elif want:
            negs = [rng.choice(negs) for _ in range(want)]  # too few: with replacement (as Tevatron)
        return {"query": row["query"], "passages": [rng.choice(row["pos"]), *negs]}


class EpochCallback(TrainerCallback):
    def __init__(self, dataset: GroupDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(state.epoch or 0)


class PairCollator:
    def __init__(self, prompter: Prompter, args: FinetuneArguments) -> None:
        self.prompter, self.args = prompter, args

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        a = self.args
        queries = self.prompter.batch([x["query"] for x in items], a.query_prompt, a.query_max_length)
        texts = [p for x in items for p in x["passages"]]  # (B * G) in groups, positive first
        passages = self.prompter.batch(texts, a.passage_prompt, a.passage_max_length)
        return {"queries": queries, "passages": passages}


class ContrastiveTrainer(PartsLoggingTrainer):
    """Trainer whose only change is ``compute_loss``: InfoNCE over pooled query / passage embeddings."""

    def __init__(
        self, *args: Any, n_slots: int, temperature: float, group_size: int, cross_device: bool, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.n_slots, self.temperature, self.group_size = n_slots, temperature, group_size
        self.cross_device = cross_device

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        q = pool(last_hidden(model, inputs["queries"]), self.n_slots)  # (B, H)
        p = pool(last_hidden(model, inputs["passages"]), self.n_slots)  # (B * G, H)
        loss_fn = info_nce_cross_device if self.cross_device else info_nce
        loss = loss_fn(q, p, self.temperature, self.group_size)
        self.record_parts({"infonce": loss})
        return (loss, {"q": q, "p": p}) if return_outputs else loss


def check_rows(rows, path: str, group_size: int) -> None:
    """Every row needs a positive, and negatives when the group holds more than the positive."""
    for i, row in enumerate(rows):
        if not row["pos"]:
            raise RowError(f"{path}: row {i + 1} has an empty 'pos' list; every query needs a positive")
        if group_size > 1 and not row["neg"]:
            raise RowError(
                f"{path}: row {i + 1} has no negatives but --group_size is {group_size}; mine negatives "
                "(python -m llara.mine) or pass --group_size 1 for in-batch negatives only"
            )


def run_finetune(args: FinetuneArguments, training_args: TrainingArguments) -> Path:
    """Fine-tune and write the retriever (LoRA adapter or merged model) + tokenizer + config."""
    output = Path(training_args.output_dir)
    training_args = resolve_precision(training_args, args.precision)
    config = training_config("finetune", args, training_args)
    rows = load_rows(args.train_file, FINETUNE_FIELDS, args.max_rows)
    check_rows(rows, args.train_file, args.group_size)
    checkpoints = prepare_output(output, config)

    tokenizer = load_tokenizer(args.model_name_or_path, args.prompt_style)
    dtype = torch.bfloat16 if training_args.bf16 else None
    set_seed(training_args.seed)  # the new slot-token rows are drawn when the embeddings are resized
    model = load_backbone(args.model_name_or_path, args.attn_implementation, dtype)
    resize_for_tokenizer(model, tokenizer)
    if args.use_lora:
        model = wrap_lora(
            model,
            tokenizer,
            "FEATURE_EXTRACTION",
            args.lora_r,
            args.lora_alpha,
            args.lora_dropout,
            args.lora_target_modules,
        )
    prompter = Prompter(tokenizer, args.prompt_style)
    dataset = GroupDataset(rows, args.group_size, training_args.seed)
    training_args = dataclasses.replace(
        training_args, output_dir=str(checkpoints), remove_unused_columns=False
    )
    trainer = ContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=PairCollator(prompter, args),
        processing_class=tokenizer,
        callbacks=[EpochCallback(dataset)],
        n_slots=prompter.n_slots,
        temperature=args.temperature,
        group_size=args.group_size,
        cross_device=args.cross_device_negatives,
    )
    result = trainer.train(resume_from_checkpoint=last_checkpoint(checkpoints))
    if args.use_lora and args.merge_lora:
        trainer.model = trainer.model.merge_and_unload()
    save_trained(trainer, tokenizer, output, config, rows_used=len(rows), train_loss=result.training_loss)
    return output


def main(argv: list[str] | None = None) -> int:
    args, training_args = parse_stage_args(FinetuneArguments, argv)
    args.model_name_or_path = _absolute_if_local(args.model_name_or_path)
    run_finetune(args, training_args)
    return 0


def _absolute_if_local(path: str) -> str:
    """Adapters record their base model's path: make a local one absolute so it resolves from anywhere."""
    return str(Path(path).resolve()) if Path(path).exists() else path


if __name__ == "__main__":
    sys.exit(main())
