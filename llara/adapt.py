"""Stage: adapt a decoder LLM with EBAE, EBAR or both (docs/method.md §1, §3, §4, §6).

``python -m llara.adapt --model_name_or_path BASE --train_file pairs.jsonl --output_dir OUT --variant joint``

The variants are those of :mod:`llara.grid`: ``ebae`` (the embedding of T predicts the tokens of T),
``ebar`` (it predicts the tokens of the next chunk), ``joint`` (both in one forward pass), ``none``
(the base model passed through with the tokenizer prepared, so the grid's fine-tuning starts from it
unchanged), and any variant registered there with the halves it trains. The loss is
:meth:`llara.model.LlaraModel.adaptation_loss`. Any ``transformers.TrainingArguments`` flag is
accepted (``--max_steps``, ``--bf16``, ``--gradient_checkpointing``, ``--deepspeed config/deepspeed/zero1.json`` ...).

The prompt layout is born here: the output's ``llara_prompt.json`` records the style
(``--prompt_style``), the prompts of queries and passages (``--query_prompt`` / ``--passage_prompt``,
by default the variant's; a prompt whose slots the variant does not train is refused), their lengths
(``--query_max_length`` / ``--passage_max_length``, by default the released code's 64 / 160) and the
prompts whose slots this variant trained. Fine-tuning, encoding and scoring read it back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from llara import grid
from llara.grid import (
    ADAPT_MAX_LENGTH,
    KINDS,
    PASSAGE_MAX_LENGTH,
    PROMPT_STYLES,
    QUERY_MAX_LENGTH,
    check_choice,
)
from llara.io import cli_main, cli_warnings
from llara.model import TARGET_FIELD, LlaraModel, target_kinds
from llara.rows import PRETRAIN_FIELDS, load_rows
from llara.training import PRECISIONS, StagePlan, lora_wrapper, parse_stage_args, run_stage

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class AdaptArguments:
    model_name_or_path: str = field(metadata={"help": "base decoder: local folder or hub id"})
    train_file: str | None = field(
        default=None, metadata={"help": "JSONL {input, output_summarize, output_predict}"}
    )
    variant: str = field(
        default="joint", metadata={"help": "a variant of llara.grid (none, ebae, ebar, joint)"}
    )
    prompt_style: str = field(default="released", metadata={"help": f"one of {', '.join(PROMPT_STYLES)}"})
    query_prompt: str | None = field(
        default=None,
        metadata={
            "help": f"prompt of queries ({', '.join(KINDS)}), recorded in the checkpoint; default: the variant's"
        },
    )
    passage_prompt: str | None = field(
        default=None,
        metadata={
            "help": f"prompt of passages ({', '.join(KINDS)}), recorded in the checkpoint; default: the variant's"
        },
    )
    query_max_length: int = field(
        default=QUERY_MAX_LENGTH,
        metadata={"help": "query length of the retriever, recorded in the checkpoint"},
    )
    passage_max_length: int = field(
        default=PASSAGE_MAX_LENGTH,
        metadata={"help": "passage length of the retriever, recorded in the checkpoint"},
    )
    max_length: int = field(
        default=ADAPT_MAX_LENGTH, metadata={"help": "prompt length in tokens (text is cut, slots kept)"}
    )
    target_max_length: int = field(
        default=ADAPT_MAX_LENGTH, metadata={"help": "tokens of a target text considered (BOS included)"}
    )
    bow_scale: float = field(
        default=grid.BOW_SCALE, metadata={"help": "bag-of-words scale (released code divides by 10)"}
    )
    lm_weight: float = field(default=1.0, metadata={"help": "weight of the next-token loss on T (0 = off)"})
    lm_chunk_size: int = field(
        default=256, metadata={"help": "LM loss in slices of this many tokens (0 = logits from the model)"}
    )
    remove_stop_words: bool = field(
        default=False,
        metadata={"help": "official target clean-up: non-word runs and NLTK stop words removed"},
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "pad batches to a multiple (official: 8)"}
    )
    max_rows: int | None = field(default=None, metadata={"help": "use only the first N rows"})
    precision: str = field(default="auto", metadata={"help": f"one of {', '.join(PRECISIONS)}"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager (needs a 4-D mask)"})
    use_lora: bool = field(default=False, metadata={"help": "LoRA instead of full-parameter training"})
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def __post_init__(self) -> None:
        variant = grid.variant(self.variant)  # ValueError listing the registered variants
        check_choice(self.prompt_style, PROMPT_STYLES, "prompt style")
        for role in grid.ROLES:
            name = f"{role}_prompt"
            kind = check_choice(getattr(self, name) or variant.prompts[role], KINDS, name)
            allowed = variant.allowed_prompts()
            if kind not in allowed:
                raise ValueError(
                    f"--{name} {kind!r}: variant {self.variant!r} does not train its slots; allowed: "
                    f"{', '.join(allowed)}"
                )
            setattr(self, name, kind)
            length = getattr(self, f"{role}_max_length")
            if length < 1:
                raise ValueError(f"--{role}_max_length must be at least 1, got {length}")
        if variant.trains and not self.train_file:
            raise ValueError(f"variant {self.variant!r} needs --train_file (pre-training pairs JSONL)")


class AdaptCollator:
    """Raw rows -> :meth:`LlaraModel.adaptation_batch` (runs in the data loader)."""

    def __init__(self, llara: LlaraModel, args: AdaptArguments) -> None:
        self.llara, self.args = llara, args

    def __call__(self, rows: list[dict[str, str]]) -> dict[str, torch.Tensor]:
        a = self.args
        return self.llara.adaptation_batch(
            rows,
            a.variant,
            max_length=a.max_length,
            target_max_length=a.target_max_length,
            remove_stop_words=a.remove_stop_words,
            pad_to_multiple_of=a.pad_to_multiple_of,
        )


def run_adapt(args: AdaptArguments, training_args: TrainingArguments):
    """Adapt ``args.model_name_or_path`` and write model + tokenizer + prompt layout + config."""
    kinds = target_kinds(args.variant)
    fields = {"input", *(TARGET_FIELD[k] for k in kinds)}
    rows = (
        load_rows(args.train_file, {k: PRETRAIN_FIELDS[k] for k in fields}, args.max_rows) if kinds else None
    )

    def load(targs: TrainingArguments) -> LlaraModel:
        if targs.deepspeed and kinds:  # none trains nothing: no process group (a single process
            # without a launcher would make DeepSpeed look for MPI)
            # ZeRO-3 partitions the weights inside from_pretrained (deepspeed.zero.Init), which reads the
            # world size from DeepSpeed's comm layer; with --use_cpu nothing has set it up yet.
            import deepspeed

            deepspeed.init_distributed()
        return LlaraModel.from_pretrained(
            args.model_name_or_path,
            head=True,
            dtype=torch.bfloat16 if targs.bf16 else None,
            attn_implementation=args.attn_implementation,
            allow_untrained_slots=True,  # adaptation is what trains them
            style=args.prompt_style,
            query_prompt=args.query_prompt,
            passage_prompt=args.passage_prompt,
            query_max_length=args.query_max_length,
            passage_max_length=args.passage_max_length,
            trained_prompts=kinds,
        )

    def plan(llara: LlaraModel, targs: TrainingArguments) -> StagePlan | None:
        if not kinds:
            return None

        def loss_fn(net, batch):
            return llara.adaptation_loss(
                batch,
                bow_scale=args.bow_scale,
                lm_weight=args.lm_weight,
                lm_chunk_size=args.lm_chunk_size or None,
                net=net,
            )

        return StagePlan(rows, AdaptCollator(llara, args), loss_fn)

    # new slot tokens must train: their embedding rows are trainable beside the adapters
    lora = lora_wrapper(
        "CAUSAL_LM",
        r=args.lora_r,
        alpha=args.lora_alpha,
        dropout=args.lora_dropout,
        targets=args.lora_target_modules,
        train_slot_embeddings=True,
    )
    return run_stage(
        "adapt",
        args,
        training_args,
        load=load,
        plan=plan,
        lora=lora if args.use_lora and kinds else None,
        merge_lora=True,
    )


@cli_main
def main(argv: list[str] | None = None) -> int:
    with cli_warnings():
        run_adapt(*parse_stage_args(AdaptArguments, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
