"""The one source of the grid's enums and defaults (variants, prompt styles, prompt kinds, lengths).

The stages' argparse/dataclasses import these; the workflow's schema and wildcards are checked against
them by ``tests/test_choices.py`` (a change here that the schema does not follow fails there).
"""

from __future__ import annotations

VARIANTS = ("none", "ebae", "ebar", "joint")  # adaptation variants (method notes section 1)
PROMPT_STYLES = ("paper", "released")  # method notes section 2
KINDS = ("ebae", "ebar")  # prompt kinds: EBAE (summarize the passage) / EBAR (predict the next one)

# Which prompt a variant's retriever uses for queries and passages (issue: no variant may fine-tune or
# encode with slot tokens that its adaptation never trained). ``joint`` and ``none`` follow the
# released code ("N2S": EBAR queries, EBAE passages, method notes section 1).
DEFAULT_PROMPTS: dict[str, dict[str, str]] = {
    "none": {"query": "ebar", "passage": "ebae"},
    "ebae": {"query": "ebae", "passage": "ebae"},
    "ebar": {"query": "ebar", "passage": "ebar"},
    "joint": {"query": "ebar", "passage": "ebae"},
}

# Lengths of the released code (method notes section 6): fine-tuning / encoding of queries and passages.
QUERY_MAX_LENGTH = 64
PASSAGE_MAX_LENGTH = 160
ADAPT_MAX_LENGTH = 1024  # paper: adaptation length 1024


def check_choice(value: str, valid: tuple[str, ...], what: str) -> str:
    """``value`` when it is one of ``valid``; otherwise a ValueError naming the valid ones."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value
