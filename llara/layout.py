"""The prompt layout of a checkpoint: ``llara_prompt.json``, born once, read by every later stage.

Adaptation writes it into the checkpoint it makes (the style, the prompts the config gave the variant,
the slots the variant trained); fine-tuning copies it into its own output; encoding, the
sentence-transformers export and scoring read it back. :meth:`PromptLayout.resolve` is the one place
where a checkpoint's file, the defaults and explicit overrides are merged: an override that disagrees
with the checkpoint is honoured with a warning.

Light (no torch): the format is read by stages that never load a model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llara.grid import KINDS, N_SLOTS, PASSAGE_MAX_LENGTH, PROMPT_STYLES, QUERY_MAX_LENGTH, check_choice
from llara.io import DataError

log = logging.getLogger("llara.layout")
LAYOUT_FILE = "llara_prompt.json"


@dataclass(frozen=True)
class PromptLayout:
    style: str = "released"
    query_prompt: str = "ebar"  # released code: EBAR for queries, EBAE for passages (docs/method.md §1)
    passage_prompt: str = "ebae"
    query_max_length: int = QUERY_MAX_LENGTH
    passage_max_length: int = PASSAGE_MAX_LENGTH
    trained_prompts: tuple[str, ...] | None = None  # slots adaptation trained (None: unknown, e.g. BAAI)

    def __post_init__(self) -> None:
        check_choice(self.style, PROMPT_STYLES, "prompt style")
        check_choice(self.query_prompt, KINDS, "query prompt")
        check_choice(self.passage_prompt, KINDS, "passage prompt")
        for name in ("query_max_length", "passage_max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.trained_prompts is not None:
            object.__setattr__(self, "trained_prompts", tuple(self.trained_prompts))
            for kind in self.trained_prompts:
                check_choice(kind, KINDS, "trained prompt")

    @property
    def n_slots(self) -> int:
        return N_SLOTS[self.style]

    def prompt_for(self, role: str) -> str:
        """``query`` / ``passage`` -> the prompt kind used for it."""
        return {"query": self.query_prompt, "passage": self.passage_prompt}[role]

    def max_length_for(self, role: str) -> int:
        return {"query": self.query_max_length, "passage": self.passage_max_length}[role]

    def check_trained(self, where: str | Path, allow_untrained_slots: bool = False) -> None:
        """No retriever uses slots its adaptation never trained (an ``ebae`` model has untrained EBAR
        slots). ``none`` (nothing trained) and checkpoints of unknown history pass."""
        if not self.trained_prompts or allow_untrained_slots:
            return
        for role in ("query", "passage"):
            kind = self.prompt_for(role)
            if kind not in self.trained_prompts:
                raise DataError(
                    f"{where}: {role} prompt {kind!r} uses slots this model's adaptation never trained "
                    f"(it trained {', '.join(self.trained_prompts)}); use --{role}_prompt "
                    f"{self.trained_prompts[0]} or pass --allow_untrained_slots"
                )

    # ---- the file -------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        Path(folder, LAYOUT_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: str | Path) -> PromptLayout | None:
        """The layout ``folder`` records, or None when it has no ``llara_prompt.json``."""
        path = Path(folder, LAYOUT_FILE)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not valid JSON ({err}); fix it or delete it (defaults apply)") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object; fix it or delete it (defaults apply)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"{path}: unknown keys {unknown}; valid keys: {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: {err}; fix the value or delete the file (defaults apply)") from None

    # ---- merging --------------------------------------------------------------------------------------
    def override(self, warn_from: str | Path | None = None, **changes: Any) -> PromptLayout:
        """A copy with the non-None ``changes``; with ``warn_from`` (the file this layout was read from)
        each value that differs is logged as a warning."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "trained_prompts" in changes:
            changes["trained_prompts"] = tuple(changes["trained_prompts"])
        for key, value in changes.items():
            if warn_from is not None and getattr(self, key) != value:
                log.warning("%s says %s=%r; overridden with %r", warn_from, key, getattr(self, key), value)
        return PromptLayout(**{**asdict(self), **changes})

    @classmethod
    def resolve(
        cls,
        path: str | Path | None,
        base: PromptLayout | None = None,
        *,
        allow_untrained_slots: bool = True,
        **overrides: Any,
    ) -> PromptLayout:
        """The layout a stage uses for the checkpoint at ``path``: its ``llara_prompt.json`` (else
        ``base``, else the defaults), then ``overrides`` (None: keep), each value that disagrees with the
        checkpoint's file logged as a warning; then :meth:`check_trained` unless
        ``allow_untrained_slots``."""
        saved = cls.read(path) if path is not None else None
        warn = Path(path, LAYOUT_FILE) if saved is not None else None
        layout = (saved or base or cls()).override(warn, **overrides)
        layout.check_trained(path or "the model", allow_untrained_slots)
        return layout


def layout_flags(args: Any) -> dict[str, Any]:
    """The prompt-layout overrides a stage's command line carries (``--prompt_style``, the prompts and
    their lengths), as keyword arguments for :meth:`PromptLayout.resolve` (None: the checkpoint's)."""
    return {
        "style": getattr(args, "prompt_style", None),
        "query_prompt": getattr(args, "query_prompt", None),
        "passage_prompt": getattr(args, "passage_prompt", None),
        "query_max_length": getattr(args, "query_max_length", None),
        "passage_max_length": getattr(args, "passage_max_length", None),
    }
