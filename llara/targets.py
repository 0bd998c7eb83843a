"""Bag-of-words targets for the EBAE / EBAR losses (docs/method.md §4, step 3).

As the official code (``pretrain/data.py`` and ``PreLlamaModel.forward``, commit 7ed43d6):

* with ``remove_stop_words`` the target text is cleaned first: every run of non-word characters
  becomes a space (``re.sub(r'[\\W_]+', ' ', text)``), then the words whose lower case is in NLTK's
  English stop-word list (179 words, shipped in ``llara/resources/``) or ``! , . ?`` are dropped;
* the text is tokenized *with* the tokenizer's special tokens (BOS for Llama) and truncated to
  ``max_length`` tokens, BOS included, so a Llama target keeps ``max_length - 1`` text tokens;
* the targets are the *unique* ids left after removing the special ids (pad/unk, BOS, EOS; the
  official code drops ids <= 2, which are exactly those for Llama-2).

A row whose target ends up empty is kept: the loss of that half leaves it out of its mean
(:func:`llara.losses.bow_loss`) and the other half and the LM term still train on it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import torch

_NON_WORD = re.compile(r"[\W_]+")
EXTRA_STOP_WORDS = ("!", ",", ".", "?")  # added by the official code; they cannot survive the regex


@cache
def stop_words() -> frozenset[str]:
    """NLTK's English list (package data) plus ``! , . ?``."""
    text = resources.files("llara").joinpath("resources/nltk_english_stopwords.txt").read_text("utf-8")
    words = [w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#")]
    return frozenset(words) | frozenset(EXTRA_STOP_WORDS)


def strip_stop_words(text: str) -> str:
    """The official clean-up: non-word runs -> space, stop words (case-insensitive) dropped."""
    words = _NON_WORD.sub(" ", text).split()
    stops = stop_words()
    return " ".join(w for w in words if w.lower() not in stops)


def bow_targets(
    tokenizer, texts: list[str], exclude_ids: frozenset[int], max_length: int, remove_stop_words: bool = False
) -> list[list[int]]:
    """Unique target token ids per text (first-occurrence order), ``exclude_ids`` removed."""
    if remove_stop_words:
        texts = [strip_stop_words(t) for t in texts]
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    return [[i for i in dict.fromkeys(ids) if i not in exclude_ids] for ids in encoded]


def pad_targets(targets: list[list[int]]) -> torch.Tensor:
    """Ragged target lists -> (B, K) int64 padded with -1 (K >= 1)."""
    width = max(1, max(len(t) for t in targets))
    out = torch.full((len(targets), width), -1, dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return out
