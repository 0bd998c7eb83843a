"""The prompt layout of a checkpoint: ``llara_prompt.json``, born once, read by every later stage.

Adaptation writes it into the checkpoint it makes (the style, the prompts the config gave the variant,
the slots the variant trained); fine-tuning copies it into its own output; encoding, the
sentence-transformers export and scoring read it back. :meth:`PromptLayout.resolve` is the one place
where a checkpoint's file, the defaults and explicit overrides are merged: an override that disagrees
with the checkpoint is honoured with a warning.

``pooling`` says how a text becomes a vector (:func:`llara.pooling.pool_hidden`):

- ``slots`` (LLaRA, the default): the LLaRA prompt of ``style`` around the text, the mean of the final
  hidden states at its slot tokens;
- ``last`` (RepLLaMA, Ma et al. 2023, arXiv 2310.08319, as Tevatron runs it): ``query_prefix`` /
  ``passage_prefix`` + text tokenized as the tokenizer does (BOS for Llama), the text cut so that the
  EOS still fits, EOS appended (``append_eos``), the final hidden state of that last token;
- ``mean``: prefix + text (EOS with ``append_eos``), the mean over its tokens.

Every pooling L2-normalises. With ``last`` or ``mean`` the style, the prompt kinds and
``trained_prompts`` are not used (no slot tokens, no LLaRA suffix). :meth:`PromptLayout.repllama` and
the preset ``--layout_preset repllama`` (:data:`PRESETS`) give RepLLaMA's layout. A file written before these
keys existed reads as it always did (``slots``, no prefixes, no EOS).

Light (no torch): the format is read by stages that never load a model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llara.grid import KINDS, N_SLOTS, PASSAGE_MAX_LENGTH, PROMPT_STYLES, QUERY_MAX_LENGTH, check_choice
from llara.io import DataError, read_json_object

log = logging.getLogger("llara.layout")
LAYOUT_FILE = "llara_prompt.json"
LAYOUT_POOLINGS = ("slots", "last", "mean")  # of llara.pooling.POOLINGS: cls is no decoder's pooling
ROLES = ("query", "passage")
REPLLAMA_PREFIXES = {"query": "query: ", "passage": "passage: "}  # Ma et al. 2023; Tevatron's examples
# --layout_preset NAME: the pooling fields of a known method, applied over the checkpoint's layout
PRESETS: dict[str, dict[str, Any]] = {
    "llara": {"pooling": "slots", "query_prefix": "", "passage_prefix": "", "append_eos": False},
    "repllama": {
        "pooling": "last",
        "query_prefix": REPLLAMA_PREFIXES["query"],
        "passage_prefix": REPLLAMA_PREFIXES["passage"],
        "append_eos": True,
    },
}


@dataclass(frozen=True)
class PromptLayout:
    style: str = "released"
    query_prompt: str = "ebar"  # released code: EBAR for queries, EBAE for passages (docs/method.md §1)
    passage_prompt: str = "ebae"
    query_max_length: int = QUERY_MAX_LENGTH
    passage_max_length: int = PASSAGE_MAX_LENGTH
    trained_prompts: tuple[str, ...] | None = None  # slots adaptation trained (None: unknown, e.g. BAAI)
    pooling: str = "slots"  # slots (LLaRA) | last (RepLLaMA) | mean; see the module docstring
    query_prefix: str = ""  # text put before every query (RepLLaMA: "query: "); never with slots
    passage_prefix: str = ""  # text put before every passage (RepLLaMA: "passage: "); never with slots
    append_eos: bool = False  # the tokenizer's EOS ends every row (RepLLaMA); never with slots

    def __post_init__(self) -> None:
        check_choice(self.pooling, LAYOUT_POOLINGS, "pooling")
        for name in ("query_prefix", "passage_prefix"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.append_eos, bool):
            raise ValueError(f"append_eos must be true or false, got {self.append_eos!r}")
        if self.uses_slots and (self.append_eos or self.query_prefix or self.passage_prefix):
            raise ValueError(
                "query_prefix, passage_prefix and append_eos need pooling last or mean: with slots the "
                "LLaRA prompt is the text's frame and the slot tokens end the row"
            )
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

    @classmethod
    def repllama(
        cls,
        query_prefix: str = REPLLAMA_PREFIXES["query"],
        passage_prefix: str = REPLLAMA_PREFIXES["passage"],
        query_max_length: int = QUERY_MAX_LENGTH,
        passage_max_length: int = PASSAGE_MAX_LENGTH,
    ) -> PromptLayout:
        """RepLLaMA: prefix + text + EOS, the final hidden state at the EOS (no slots, no LLaRA suffix)."""
        return cls(
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            pooling="last",
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            append_eos=True,
        )

    @property
    def uses_slots(self) -> bool:
        """True for LLaRA's layouts (a prompt style with slot tokens), False for RepLLaMA's and ``mean``."""
        return self.pooling == "slots"

    @property
    def n_slots(self) -> int:
        """Slots per prompt of the style (used only when :attr:`uses_slots`)."""
        return N_SLOTS[self.style]

    def prompt_for(self, role: str) -> str:
        """``query`` / ``passage`` -> what ``LlaraModel.prompt_batch`` takes for it: the prompt kind
        (``ebae`` / ``ebar``) of a slots layout, the role itself otherwise (its prefix is applied)."""
        check_choice(role, ROLES, "role")
        if not self.uses_slots:
            return role
        return {"query": self.query_prompt, "passage": self.passage_prompt}[role]

    def prefix_for(self, role: str) -> str:
        return {"query": self.query_prefix, "passage": self.passage_prefix}[check_choice(role, ROLES, "role")]

    def max_length_for(self, role: str) -> int:
        return {"query": self.query_max_length, "passage": self.passage_max_length}[role]

    def encoder_settings(self) -> dict[str, Any]:
        """What vectors encoded under this layout depend on, for an encoder's ``settings`` (shard
        metas): a slots layout names its style and prompt kinds; any other names its pooling, prefixes
        and EOS, with the style and prompts None (it has none, as a plain encoder)."""
        lengths = {"query_max_length": self.query_max_length, "passage_max_length": self.passage_max_length}
        if self.uses_slots:
            prompts = {
                "prompt_style": self.style,
                "query_prompt": self.query_prompt,
                "passage_prompt": self.passage_prompt,
            }
        else:
            prompts = {"prompt_style": None, "query_prompt": None, "passage_prompt": None}
        return {
            **prompts,
            **lengths,
            "pooling": self.pooling,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "append_eos": self.append_eos,
        }

    def check_trained(self, where: str | Path, allow_untrained_slots: bool = False) -> None:
        """No retriever uses slots its adaptation never trained (an ``ebae`` model has untrained EBAR
        slots). ``none`` (nothing trained), checkpoints of unknown history and layouts without slots
        pass."""
        if not self.uses_slots or not self.trained_prompts or allow_untrained_slots:
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
        data = read_json_object(path, "fix it or delete it (defaults apply)")
        if data is None:
            return None
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


def preset(name: str | None) -> dict[str, Any]:
    """The fields of ``--layout_preset NAME`` (:data:`PRESETS`); None: none."""
    return {} if name is None else dict(PRESETS[check_choice(name, tuple(PRESETS), "layout preset")])


def layout_flags(args: Any) -> dict[str, Any]:
    """The prompt-layout overrides a stage's command line carries, as keyword arguments for
    :meth:`PromptLayout.resolve` (None: the checkpoint's): ``--prompt_style``, the prompts and their
    lengths, and the pooling fields: those of the preset ``--layout_preset NAME`` first, then each of
    ``--pooling``, ``--query_prefix``, ``--passage_prefix``, ``--append_eos`` given over them."""
    pooling = preset(getattr(args, "layout_preset", None))
    for name in ("pooling", "query_prefix", "passage_prefix", "append_eos"):
        if getattr(args, name, None) is not None:
            pooling[name] = getattr(args, name)
    return {
        "style": getattr(args, "prompt_style", None),
        "query_prompt": getattr(args, "query_prompt", None),
        "passage_prompt": getattr(args, "passage_prompt", None),
        "query_max_length": getattr(args, "query_max_length", None),
        "passage_max_length": getattr(args, "passage_max_length", None),
        **pooling,
    }
