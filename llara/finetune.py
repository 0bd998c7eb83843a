"""Stage: contrastive fine-tuning of an (adapted) decoder into a retriever (docs/method.md §1, §6).

``python -m llara.finetune --model_name_or_path ADAPTED --train_file train.jsonl --output_dir OUT``

RepLLaMA-style, as the released code: LoRA (r=64, alpha=16, dropout 0.1 on q,k,v,o,gate,up,down; the
slot-token embeddings train only with ``--train_slot_embeddings``), InfoNCE with temperature 0.01 over
in-batch and hard negatives (``--cross_device_negatives`` shares them across processes and needs a
process group, e.g. torchrun), groups of 16 passages (1 positive + 15 negatives), query/passage max
length 64/160. The prompt style, prompts and lengths come from the adapted checkpoint's
``llara_prompt.json`` (written by adaptation: the prompts the grid gave the variant), so the grid
passes none of them here; ``--prompt_style``/``--query_prompt``/``--passage_prompt`` and the lengths
override them (with a warning where they disagree), and a prompt whose slots adaptation never trained
is refused unless ``--allow_untrained_slots``. The layout used is copied into the output. Rows are
``{query, pos: [...], neg: [...]}``. No LM head is loaded (the released code computes logits it never
uses, docs/method.md §8).

RepLLaMA (Ma et al. 2023, arXiv 2310.08319) is the same recipe on a plain base model with another
layout: ``--layout_preset repllama`` (``"query: "`` / ``"passage: "`` + text + EOS, the final hidden state at
the EOS; :data:`llara.layout.PRESETS`), or the fields one by one (``--pooling last --query_prefix
"query: " --passage_prefix "passage: " --append_eos true``, each also over the preset). They apply
over the input's ``llara_prompt.json`` when it has one (with a warning for each value they change),
else over the defaults; no slot token is added to a base model. The output's ``llara_prompt.json``
records the layout, so encoding and the sentence-transformers export need no flag.
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
from transformers import TrainerCallback, TrainingArguments

from llara.adapt import LORA_TARGETS
from llara.grid import KINDS, PROMPT_STYLES, check_choice
from llara.io import cli_main, cli_warnings
from llara.layout import LAYOUT_POOLINGS, PRESETS, layout_flags
from llara.model import LlaraModel
from llara.rows import FINETUNE_FIELDS, RowError, load_rows
from llara.training import PRECISIONS, StagePlan, lora_wrapper, parse_stage_args, run_stage

log = logging.getLogger("llara.finetune")


@dataclass
class FinetuneArguments:
    model_name_or_path: str = field(metadata={"help": "adapted model folder (or any HF decoder)"})
    train_file: str = field(metadata={"help": "JSONL {query, pos: [...], neg: [...]}"})
    prompt_style: str | None = field(
        default=None, metadata={"help": f"one of {', '.join(PROMPT_STYLES)}; default: the checkpoint's"}
    )
    query_prompt: str | None = field(
        default=None, metadata={"help": f"prompt for queries ({', '.join(KINDS)}); default: the checkpoint's"}
    )
    passage_prompt: str | None = field(
        default=None,
        metadata={"help": f"prompt for passages ({', '.join(KINDS)}); default: the checkpoint's"},
    )
    query_max_length: int | None = field(default=None, metadata={"help": "default: the checkpoint's (64)"})
    passage_max_length: int | None = field(default=None, metadata={"help": "default: the checkpoint's (160)"})
    layout_preset: str | None = field(
        default=None,
        metadata={
            "help": f"preset of the pooling fields ({', '.join(PRESETS)}; repllama: 'query: ' / 'passage: ' "
            "+ text + EOS, last-token pooling); default: the checkpoint's"
        },
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": f"{', '.join(LAYOUT_POOLINGS)} (RepLLaMA: last); default: the checkpoint's (slots)"
        },
    )
    query_prefix: str | None = field(
        default=None,
        metadata={"help": "text before every query (RepLLaMA: 'query: '); default: the checkpoint's"},
    )
    passage_prefix: str | None = field(
        default=None,
        metadata={"help": "text before every passage (RepLLaMA: 'passage: '); default: the checkpoint's"},
    )
    append_eos: bool | None = field(
        default=None,
        metadata={"help": "end every row with the EOS token (RepLLaMA); default: the checkpoint's"},
    )
    allow_untrained_slots: bool = field(
        default=False, metadata={"help": "accept prompts whose slot tokens adaptation never trained"}
    )
    group_size: int = field(
        default=16, metadata={"help": "passages per query: 1 positive + group_size-1 negatives"}
    )
    temperature: float = 0.01
    cross_device_negatives: bool = field(
        default=False, metadata={"help": "share queries and passages across processes (needs torchrun)"}
    )
    use_lora: bool = True
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    train_slot_embeddings: bool = field(
        default=False, metadata={"help": "with LoRA, also train the slot-token embeddings (official: no)"}
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "save a merged full model instead of an adapter"}
    )
    max_rows: int | None = None
    precision: str = field(default="auto", metadata={"help": f"one of {', '.join(PRECISIONS)}"})
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if self.prompt_style is not None:
            check_choice(self.prompt_style, PROMPT_STYLES, "prompt style")
        for name in ("query_prompt", "passage_prompt"):
            if getattr(self, name) is not None:
                check_choice(getattr(self, name), KINDS, name)
        if self.layout_preset is not None:
            check_choice(self.layout_preset, tuple(PRESETS), "--layout_preset")
        if self.pooling is not None:
            check_choice(self.pooling, LAYOUT_POOLINGS, "--pooling")
        flags = layout_flags(self)
        extras = [f"--{k}" for k in ("query_prefix", "passage_prefix", "append_eos") if flags.get(k)]
        if extras and flags.get("pooling") == "slots":
            raise ValueError(
                f"{', '.join(extras)} need --pooling last or mean: with slots the LLaRA prompt frames the "
                "text and the slot tokens end the row"
            )
        for name in ("query_max_length", "passage_max_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
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
        if want == 0:
            negs = []  # in-batch negatives only: the group is the positive alone
        elif len(negs) >= want:
            negs = rng.sample(negs, want)
        else:
            negs = [rng.choice(negs) for _ in range(want)]  # too few: with replacement (as Tevatron)
        return {"query": row["query"], "passages": [rng.choice(row["pos"]), *negs]}


class EpochCallback(TrainerCallback):
    def __init__(self, dataset: GroupDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(state.epoch or 0)


class PairCollator:
    def __init__(self, llara: LlaraModel) -> None:
        self.llara = llara

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        m, layout = self.llara, self.llara.layout
        queries = m.prompt_batch(
            [x["query"] for x in items], layout.prompt_for("query"), layout.query_max_length
        )
        texts = [p for x in items for p in x["passages"]]  # (B * G) in groups, positive first
        passages = m.prompt_batch(texts, layout.prompt_for("passage"), layout.passage_max_length)
        return {"queries": queries, "passages": passages}


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
    """Fine-tune and write the retriever (LoRA adapter or merged model) + tokenizer + layout + config."""
    rows = load_rows(args.train_file, FINETUNE_FIELDS, args.max_rows)
    check_rows(rows, args.train_file, args.group_size)
    if args.cross_device_negatives and not torch.distributed.is_initialized():
        raise ValueError(
            "--cross_device_negatives needs a process group: launch with torchrun (or srun with the "
            "launcher's environment), or drop the flag for this-process negatives only"
        )

    def load(targs: TrainingArguments) -> LlaraModel:
        return LlaraModel.from_pretrained(
            args.model_name_or_path,
            head=False,
            dtype=torch.bfloat16 if targs.bf16 else None,
            attn_implementation=args.attn_implementation,
            allow_untrained_slots=args.allow_untrained_slots,
            **layout_flags(args),
        )

    def plan(llara: LlaraModel, targs: TrainingArguments) -> StagePlan:
        dataset = GroupDataset(rows, args.group_size, targs.seed)

        def loss_fn(net, batch):
            return llara.contrastive_loss(
                batch["queries"],
                batch["passages"],
                temperature=args.temperature,
                group_size=args.group_size,
                cross_device=args.cross_device_negatives,
                net=net,
            )

        return StagePlan(
            dataset,
            PairCollator(llara),
            loss_fn,
            callbacks=[EpochCallback(dataset)],
            record={"layout": dataclasses.asdict(llara.layout)},
        )

    lora = lora_wrapper(
        "FEATURE_EXTRACTION",
        r=args.lora_r,
        alpha=args.lora_alpha,
        dropout=args.lora_dropout,
        targets=args.lora_target_modules,
        train_slot_embeddings=args.train_slot_embeddings,
    )
    return run_stage(
        "finetune",
        args,
        training_args,
        load=load,
        plan=plan,
        lora=lora if args.use_lora else None,
        merge_lora=args.merge_lora,
    )


@cli_main
def main(argv: list[str] | None = None) -> int:
    with cli_warnings():
        run_finetune(*parse_stage_args(FinetuneArguments, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
