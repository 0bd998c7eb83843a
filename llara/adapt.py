"""Stage: adapt a decoder LLM with EBAE, EBAR or both (llara-method.md sections 1, 3, 4, 6).

``python -m llara.adapt --model_name_or_path BASE --train_file pairs.jsonl --output_dir OUT --variant joint``

Variants: ``ebae`` (the embedding of T predicts the tokens of T), ``ebar`` (it predicts the tokens of
the next chunk), ``joint`` (both in one forward pass, :mod:`llara.masks`) and ``none`` (the base model
passed through with the tokenizer prepared, so the grid's fine-tuning starts from it unchanged).
Loss (released code): mean of the bag-of-words parts + ``lm_weight`` x next-token loss on T.
Any ``transformers.TrainingArguments`` flag is accepted (``--max_steps``, ``--bf16``,
``--gradient_checkpointing``, ``--deepspeed config/deepspeed/zero1.json`` ...).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed

from llara.losses import bow_loss, combine_adaptation_losses, lm_loss
from llara.masks import joint_inputs, position_ids_from_mask
from llara.modeling import load_causal_lm
from llara.pooling import slot_positions
from llara.prompts import PROMPT_STYLES, Prompter, check_style, left_pad
from llara.rows import PRETRAIN_FIELDS, load_rows
from llara.targets import bow_targets, pad_targets
from llara.training import (
    PRECISIONS,
    PartsLoggingTrainer,
    finalize_output,
    last_checkpoint,
    parse_stage_args,
    prepare_output,
    resolve_precision,
    save_trained,
    training_config,
    work_dir,
    wrap_lora,
)

log = logging.getLogger("llara.adapt")
VARIANTS = ("none", "ebae", "ebar", "joint")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class AdaptArguments:
    model_name_or_path: str = field(metadata={"help": "base decoder: local folder or hub id"})
    train_file: str | None = field(
        default=None, metadata={"help": "JSONL {input, output_summarize, output_predict}"}
    )
    variant: str = field(default="joint", metadata={"help": f"one of {', '.join(VARIANTS)}"})
    prompt_style: str = field(default="released", metadata={"help": f"one of {', '.join(PROMPT_STYLES)}"})
    max_length: int = field(
        default=1024, metadata={"help": "prompt length in tokens (text is cut, slots kept)"}
    )
    target_max_length: int = field(default=1024, metadata={"help": "tokens of a target text considered"})
    bow_scale: float = field(
        default=0.1, metadata={"help": "bag-of-words scale (released code divides by 10)"}
    )
    lm_weight: float = field(default=1.0, metadata={"help": "weight of the next-token loss on T (0 = off)"})
    remove_stop_words: bool = field(default=False, metadata={"help": "drop stop words and !,.? from targets"})
    max_rows: int | None = field(default=None, metadata={"help": "use only the first N rows"})
    precision: str = field(default="auto", metadata={"help": f"one of {', '.join(PRECISIONS)}"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager (needs a 4-D mask)"})
    use_lora: bool = field(default=False, metadata={"help": "LoRA instead of full-parameter training"})
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid variants: {', '.join(VARIANTS)}")
        check_style(self.prompt_style)
        if self.variant != "none" and not self.train_file:
            raise ValueError(f"variant {self.variant!r} needs --train_file (pre-training pairs JSONL)")


def needed_fields(variant: str) -> dict[str, type]:
    names = {"ebae": ("input", "output_summarize"), "ebar": ("input", "output_predict")}
    wanted = names.get(variant, tuple(PRETRAIN_FIELDS))
    return {k: PRETRAIN_FIELDS[k] for k in wanted}


def target_kinds(variant: str) -> tuple[str, ...]:
    return ("ebae", "ebar") if variant == "joint" else (variant,)


TARGET_FIELD = {"ebae": "output_summarize", "ebar": "output_predict"}


class AdaptCollator:
    """Raw rows -> model inputs, LM labels on the text tokens, and padded bag-of-words targets."""

    def __init__(
        self,
        prompter: Prompter,
        variant: str,
        max_length: int,
        target_max_length: int,
        remove_stop_words: bool = False,
    ) -> None:
        self.prompter, self.variant = prompter, variant
        self.max_length, self.target_max_length = max_length, target_max_length
        self.remove_stop_words = remove_stop_words
        self.pad_id = prompter.tokenizer.pad_token_id

    def targets(self, rows: list[dict[str, str]], kind: str) -> list[list[int]]:
        texts = [r[TARGET_FIELD[kind]] for r in rows]
        return bow_targets(
            self.prompter.tokenizer,
            texts,
            self.prompter.special_ids,
            self.target_max_length,
            self.remove_stop_words,
        )

    def __call__(self, rows: list[dict[str, str]]) -> dict[str, torch.Tensor]:
        p = self.prompter
        if self.variant == "joint":
            ids = [p.build_joint(r["input"], self.max_length) for r in rows]
            tail = p.suffix_len("ebae") + p.suffix_len("ebar")
            batch = joint_inputs(ids, p.suffix_len("ebae"), p.suffix_len("ebar"), self.pad_id)
        else:
            ids = [p.build(r["input"], self.variant, self.max_length) for r in rows]
            tail = p.suffix_len(self.variant)
            batch = left_pad(ids, self.pad_id)
            batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
        head = len(p.prefix_ids)
        labels = [[-100] * head + r[head : len(r) - tail] + [-100] * tail for r in ids]
        batch["lm_labels"] = left_pad(labels, -100)["input_ids"]  # (B, T), -100 off the text
        for kind in target_kinds(self.variant):
            batch[f"{kind}_targets"] = pad_targets(self.targets(rows, kind))  # (B, K), -1 padded
        return batch


class AdaptTrainer(PartsLoggingTrainer):
    """Trainer whose only change is ``compute_loss``: bag-of-words parts + LM term, each logged."""

    def __init__(
        self, *args: Any, variant: str, prompter: Prompter, bow_scale: float, lm_weight: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.variant, self.bow_scale, self.lm_weight = variant, bow_scale, lm_weight
        self.n_slots = prompter.n_slots
        self.ebar_len = prompter.suffix_len("ebar")
        self.tail = sum(prompter.suffix_len(k) for k in target_kinds(variant))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        width = inputs["input_ids"].shape[1]
        text_end = width - self.tail
        slots = {
            kind: slot_positions(
                width, self.n_slots, self.ebar_len if (self.variant == "joint" and kind == "ebae") else 0
            )
            for kind in target_kinds(self.variant)
        }
        keep = ([torch.arange(text_end)] if self.lm_weight > 0 else []) + list(slots.values())
        keep_idx = torch.cat(keep).to(inputs["input_ids"].device)
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
            logits_to_keep=keep_idx,
        )
        logits = out.logits  # (B, len(keep_idx), V)
        # one slice for all slot columns: each slice of the big logits costs a full-size buffer in backward
        slot_block = logits[:, text_end if self.lm_weight > 0 else 0 :].float()  # (B, n_kinds * S, V)
        bows: dict[str, torch.Tensor] = {}
        for i, kind in enumerate(slots):
            slot_logits = slot_block[:, i * self.n_slots : (i + 1) * self.n_slots]  # (B, S, V)
            bows[kind], _ = bow_loss(slot_logits, inputs[f"{kind}_targets"], self.bow_scale)
        lm = (
            lm_loss(logits[:, :text_end].float(), inputs["lm_labels"][:, :text_end])
            if self.lm_weight > 0
            else None
        )
        parts = combine_adaptation_losses(bows.get("ebae"), bows.get("ebar"), lm, self.lm_weight)
        self.record_parts({k: v for k, v in parts.items() if k != "loss"})
        return (parts["loss"], out) if return_outputs else parts["loss"]


def drop_rows_without_targets(ds, collator: AdaptCollator, variant: str):
    """Rows whose target text has no token left (after stop words) are skipped and counted."""

    def keep(batch: dict[str, list[str]]) -> list[bool]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        per_kind = [collator.targets(rows, kind) for kind in target_kinds(variant)]
        return [all(len(t[i]) > 0 for t in per_kind) for i in range(len(rows))]

    kept = ds.filter(keep, batched=True, batch_size=1000)
    return kept, len(ds) - len(kept)


def run_adapt(args: AdaptArguments, training_args: TrainingArguments) -> Path:
    """Adapt ``args.model_name_or_path`` and write the model + tokenizer + config to ``output_dir``."""
    output = Path(training_args.output_dir)
    training_args = resolve_precision(training_args, args.precision)
    config = training_config("adapt", args, training_args)
    rows = (
        load_rows(args.train_file, needed_fields(args.variant), args.max_rows)
        if args.variant != "none"
        else None
    )
    checkpoints = prepare_output(output, config)
    dtype = torch.bfloat16 if training_args.bf16 else None
    if training_args.deepspeed:
        # ZeRO-3 partitions the weights inside from_pretrained (deepspeed.zero.Init), which reads the
        # world size from DeepSpeed's comm layer; with --use_cpu nothing has set it up yet.
        import deepspeed

        deepspeed.init_distributed()
    set_seed(training_args.seed)  # the new slot-token rows are drawn when the embeddings are resized
    model, tokenizer = load_causal_lm(
        args.model_name_or_path, args.prompt_style, args.attn_implementation, dtype
    )
    final = work_dir(output) / "final"
    if args.variant == "none":
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        finalize_output(output, final, {**config, "rows_used": 0})
        return output

    prompter = Prompter(tokenizer, args.prompt_style)
    collator = AdaptCollator(
        prompter, args.variant, args.max_length, args.target_max_length, args.remove_stop_words
    )
    rows, skipped = drop_rows_without_targets(rows, collator, args.variant)
    log.info("%d training rows; %d skipped because a target had no tokens left", len(rows), skipped)
    if len(rows) == 0:
        raise ValueError(
            f"{args.train_file}: no row has target tokens left; check the file and --remove_stop_words"
        )
    if args.use_lora:
        model = wrap_lora(
            model,
            tokenizer,
            "CAUSAL_LM",
            args.lora_r,
            args.lora_alpha,
            args.lora_dropout,
            args.lora_target_modules,
        )
    training_args = dataclasses.replace(
        training_args, output_dir=str(checkpoints), remove_unused_columns=False
    )
    trainer = AdaptTrainer(
        model=model,
        args=training_args,
        train_dataset=rows,
        data_collator=collator,
        processing_class=tokenizer,
        variant=args.variant,
        prompter=prompter,
        bow_scale=args.bow_scale,
        lm_weight=args.lm_weight,
    )
    result = trainer.train(resume_from_checkpoint=last_checkpoint(checkpoints))
    if args.use_lora:
        trainer.model = trainer.model.merge_and_unload()  # downstream stages read a plain HF model
    save_trained(
        trainer,
        tokenizer,
        output,
        config,
        rows_used=len(rows),
        rows_skipped_no_targets=skipped,
        train_loss=result.training_loss,
    )
    return output


def main(argv: list[str] | None = None) -> int:
    run_adapt(*parse_stage_args(AdaptArguments, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
