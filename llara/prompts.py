"""The one place where LLaRA prompts and embedding-slot tokens are defined.

Two prompt styles (docs/method.md §2), a grid axis:

``released``  what the BAAI checkpoints were trained with (FlagEmbedding ``research/LLARA``):
    16 added special tokens ``<s1>``..``<s16>``;
    passage / EBAE: ``"`` + T + ``", summarize the above passage within eight words: <s1>..<s8>``;
    query / EBAR:   ``"`` + T + ``", predict the following passage within eight words: <s9>..<s16>``.
    Ids are built by concatenating separately tokenized pieces (BOS + ``"``, then the text, then the
    suffix), the text is truncated *before* the suffix is appended, so the slots are never cut off.
``paper``     one embedding slot, the last token (arXiv 2312.15503 v1 wording, unverified):
    ``{T} The original sentence: </s>`` (EBAE) and ``{T} The next sentence: </s>`` (EBAR).

Token ids are always looked up from the tokenizer at run time (never hard-coded), so any Hugging Face
decoder tokenizer works (Llama-style with BOS, Qwen2-style without BOS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from llara.grid import KINDS, N_SLOTS, PROMPT_STYLES

SLOT_TOKENS = tuple(f"<s{i}>" for i in range(1, 17))  # released style: <s1>..<s8> EBAE, <s9>..<s16> EBAR


@dataclass(frozen=True)
class PromptTemplate:
    """Text pieces of one prompt style; ``{eos}`` in a suffix stands for the tokenizer's EOS token."""

    prefix: str
    suffix: dict[str, str]  # kind -> suffix text, ending with the slot tokens
    n_slots: int


TEMPLATES: dict[str, PromptTemplate] = {
    "released": PromptTemplate(
        prefix='"',
        suffix={
            "ebae": '", summarize the above passage within eight words: ' + "".join(SLOT_TOKENS[:8]),
            "ebar": '", predict the following passage within eight words: ' + "".join(SLOT_TOKENS[8:]),
        },
        n_slots=N_SLOTS["released"],
    ),
    "paper": PromptTemplate(
        prefix="",
        suffix={"ebae": " The original sentence: {eos}", "ebar": " The next sentence: {eos}"},
        n_slots=N_SLOTS["paper"],
    ),
}


def check_style(style: str) -> PromptTemplate:
    if style not in TEMPLATES:
        raise ValueError(f"unknown prompt style {style!r}; valid styles: {', '.join(PROMPT_STYLES)}")
    return TEMPLATES[style]


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, style: str) -> int:
    """Make ``tokenizer`` ready for ``style``: slot tokens added (released), a pad token, left padding.

    Returns the number of tokens added to the vocabulary (resize the model's embeddings if > 0,
    see :func:`llara.model.resize_for_tokenizer`). Idempotent: a tokenizer that already holds the
    slot tokens (a released BAAI checkpoint) gets nothing added.
    """
    check_style(style)
    added = 0
    if style == "released":
        missing = [t for t in SLOT_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            added = tokenizer.add_special_tokens(
                {"additional_special_tokens": list(SLOT_TOKENS)}, replace_extra_special_tokens=False
            )
    if tokenizer.pad_token is None:
        # Llama-style tokenizers have no pad token; padded positions are masked out anyway.
        fallback = tokenizer.unk_token or tokenizer.eos_token
        if fallback is None:
            raise ValueError("tokenizer has no pad, unk or eos token to pad with; set tokenizer.pad_token")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "left"  # slots must sit at the end of every row (docs/method.md §2)
    return added


class Prompter:
    """Builds prompt token ids for one tokenizer and prompt style (the only prompt builder we have)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, style: str = "released") -> None:
        self.template = check_style(style)
        self.style = style
        self.tokenizer = tokenizer
        self.n_slots = self.template.n_slots
        bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
        self.prefix_ids: list[int] = bos + self._tokens(self.template.prefix)
        self.suffix_ids: dict[str, list[int]] = {k: self._suffix(k) for k in KINDS}

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _suffix(self, kind: str) -> list[int]:
        text = self.template.suffix[kind]
        if "{eos}" in text:
            if self.tokenizer.eos_token is None:
                raise ValueError("the paper prompt style needs a tokenizer with an EOS token")
            ids = self._tokens(text.replace("{eos}", "")) + [self.tokenizer.eos_token_id]
            return ids
        ids = self._tokens(text)
        slots = SLOT_TOKENS[:8] if kind == "ebae" else SLOT_TOKENS[8:]
        want = self.tokenizer.convert_tokens_to_ids(list(slots))
        if ids[-len(want) :] != want or self.tokenizer.unk_token_id in want:
            raise ValueError(
                "the tokenizer does not hold the slot tokens <s1>..<s16> as single tokens; "
                "call llara.prompts.prepare_tokenizer(tokenizer, 'released') first"
            )
        return ids

    def suffix_len(self, kind: str) -> int:
        return len(self.suffix_ids[check_kind(kind)])

    def text_ids(self, text: str, budget: int) -> list[int]:
        """Tokens of ``text`` alone, truncated to ``budget`` tokens (truncation before the suffix)."""
        if budget < 1:
            raise ValueError(f"max_length leaves no room for text (budget {budget}); raise max_length")
        return self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]

    def build(self, text: str, kind: str, max_length: int) -> list[int]:
        """``prefix + text + suffix(kind)`` ids, at most ``max_length`` long; slots are the last ``n_slots``."""
        suffix = self.suffix_ids[check_kind(kind)]
        budget = max_length - len(self.prefix_ids) - len(suffix)
        return self.prefix_ids + self.text_ids(text, budget) + suffix

    def build_joint(self, text: str, max_length: int) -> list[int]:
        """``prefix + text + EBAE suffix + EBAR suffix`` ids for the joint pass (see llara.masks)."""
        budget = max_length - len(self.prefix_ids) - self.suffix_len("ebae") - self.suffix_len("ebar")
        return (
            self.prefix_ids + self.text_ids(text, budget) + self.suffix_ids["ebae"] + self.suffix_ids["ebar"]
        )


def left_pad(
    rows: list[list[int]], pad_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Left-pad id lists into ``input_ids`` / ``attention_mask`` tensors (B, T)."""
    if not rows:
        raise ValueError("cannot build an empty batch")
    width = max(len(r) for r in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer puts BOS in front of a text (Llama) rather than having none (Qwen2)."""
    if tokenizer.bos_token_id is None:
        return False
    return tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
