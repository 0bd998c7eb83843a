"""Bag-of-words targets for the EBAE / EBAR losses (llara-method.md section 4, step 3).

Targets are the *unique* token ids of the target text, special ids (pad/BOS/EOS, the slot tokens)
excluded; optionally English stop words and ``! , . ?`` are removed from the text before tokenizing,
as the released code does. The stop-word list is NLTK's English list, written here because NLTK
downloads it at run time (stack-notes.md).
"""

from __future__ import annotations

import re

import torch

STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves
    he him his himself she she's her hers herself it it's its itself they them their theirs themselves what
    which who whom this that that'll these those am is are was were be been being have has had having do
    does did doing a an the and but if or because as until while of at by for with about against between
    into through during before after above below to from up down in out on off over under again further
    then once here there when where why how all any both each few more most other some such no nor not
    only own same so than too very s t can will just don don't should should've now d ll m o re ve y ain
    aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't
    ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't
    won won't wouldn wouldn't""".split()
)
_PUNCT = re.compile(r"[!,.?]")


def strip_stop_words(text: str) -> str:
    """Drop English stop words and ``! , . ?`` from ``text`` (released-code option)."""
    words = _PUNCT.sub(" ", text).split()
    return " ".join(w for w in words if w.lower() not in STOP_WORDS)


def bow_targets(
    tokenizer, texts: list[str], exclude_ids: frozenset[int], max_length: int, remove_stop_words: bool = False
) -> list[list[int]]:
    """Unique target token ids per text (first-occurrence order), ``exclude_ids`` removed."""
    if remove_stop_words:
        texts = [strip_stop_words(t) for t in texts]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    return [[i for i in dict.fromkeys(ids) if i not in exclude_ids] for ids in encoded]


def pad_targets(targets: list[list[int]]) -> torch.Tensor:
    """Ragged target lists -> (B, K) int64 padded with -1 (K >= 1)."""
    width = max(1, max(len(t) for t in targets))
    out = torch.full((len(targets), width), -1, dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return out
