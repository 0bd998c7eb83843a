"""The grid's vocabulary: every name a config, a rule, a path or a table row can hold, in one place.

- prompt styles and prompt kinds (docs/method.md §2), the lengths of the released code (§6);
- the adaptation variants (§1): which halves each one trains and which prompts its retriever uses by
  default. Registering a variant here (:func:`register_variant`) is all a variant without new math
  needs: the schema, the wildcards, the rules and the tables take their names from this module;
- the evaluation stages (``zeroshot``: the adapted checkpoint as it is, ``finetuned``) and the kinds of
  fine-tuning negatives;
- the retrievers the grid trains beside the variants, without adaptation (RepLLaMA: :data:`RETRIEVERS`):
  the base decoder fine-tuned with the same recipe, encoding with its own prefixes and pooling;
- :class:`System`: what one row of a table is (a LLaRA model at a stage, a trained retriever, a released
  checkpoint, a baseline), with :meth:`System.to_path` / :meth:`System.from_path` for the grid's path
  segment.

Light on purpose (no torch, no pandas): the workflow imports it at parse time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

PROMPT_STYLES = ("paper", "released")  # docs/method.md §2
KINDS = ("ebae", "ebar")  # prompt kinds: EBAE (summarize the passage) / EBAR (predict the next one)
N_SLOTS = {"released": 8, "paper": 1}  # embedding slots per prompt style (docs/method.md §2)
ROLES = ("query", "passage")
STAGES = ("zeroshot", "finetuned")  # evaluation stages: the adapted checkpoint, or after fine-tuning
NEGATIVES = ("bm25", "dense", "none", "file")  # where fine-tuning's hard negatives come from

# lengths of the released code (docs/method.md §6): fine-tuning / encoding of queries and passages
QUERY_MAX_LENGTH = 64
PASSAGE_MAX_LENGTH = 160
ADAPT_MAX_LENGTH = 1024  # paper: adaptation length 1024
BOW_SCALE = 0.1  # the released code divides the bag-of-words loss by 10 (docs/method.md §4)


def check_choice(value: str, valid: tuple[str, ...], what: str) -> str:
    """``value`` when it is one of ``valid``; otherwise a ValueError naming the valid ones."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


@dataclass(frozen=True)
class Variant:
    """An adaptation variant: the prompt kinds whose halves (and slot tokens) it trains, and the prompts
    its retriever uses for queries and passages unless ``grid.prompts`` says otherwise."""

    name: str
    trains: tuple[str, ...]
    prompts: dict[str, str] = field(hash=False)

    def allowed_prompts(self) -> tuple[str, ...]:
        """Prompt kinds a retriever of this variant may use: those it trained; a variant that trains
        nothing (``none``) leaves every kind as (un)trained as the other, so any."""
        return self.trains or KINDS


VARIANT_REGISTRY: dict[str, Variant] = {}


def register_variant(name: str, trains: tuple[str, ...], query: str, passage: str) -> Variant:
    """Add a variant to the vocabulary (the model trains the halves ``trains`` names)."""
    for kind in (*trains, query, passage):
        check_choice(kind, KINDS, f"prompt kind of variant {name!r}")
    variant = Variant(name, tuple(trains), {"query": query, "passage": passage})
    if variant.trains and not set(variant.prompts.values()) <= set(variant.trains):
        raise ValueError(f"variant {name!r}: its default prompts use slots it does not train")
    VARIANT_REGISTRY[name] = variant
    return variant


def unregister_variant(name: str) -> None:
    VARIANT_REGISTRY.pop(name, None)


# ``joint`` and ``none`` follow the released code ("N2S": EBAR queries, EBAE passages, docs/method.md §1)
register_variant("none", (), query="ebar", passage="ebae")
register_variant("ebae", ("ebae",), query="ebae", passage="ebae")
register_variant("ebar", ("ebar",), query="ebar", passage="ebar")
register_variant("joint", ("ebae", "ebar"), query="ebar", passage="ebae")
CORE_VARIANTS = ("none", "ebae", "ebar", "joint")  # the paper's four, in table order


def variants() -> tuple[str, ...]:
    return tuple(VARIANT_REGISTRY)


def variant(name: str) -> Variant:
    check_choice(name, variants(), "variant")
    return VARIANT_REGISTRY[name]


def default_prompts() -> dict[str, dict[str, str]]:
    """variant -> {query: kind, passage: kind}, the defaults ``grid.prompts`` starts from."""
    return {name: dict(v.prompts) for name, v in VARIANT_REGISTRY.items()}


# ---- retrievers trained beside the variants (no adaptation) --------------------------------------------
@dataclass(frozen=True)
class Retriever:
    """An LLM retriever the grid fine-tunes from the base model exactly as it fine-tunes the variants
    (data, negatives, seeds, steps), encoding ``query_prefix + query`` and ``passage_prefix + title +
    text`` (EOS appended when ``append_eos``) pooled by ``pooling`` (llara.pooling.pool_hidden)."""

    name: str
    pooling: str
    query_prefix: str
    passage_prefix: str
    append_eos: bool


# RepLLaMA (Ma et al. 2023, "Fine-Tuning LLaMA for Multi-Stage Text Retrieval", arXiv 2310.08319; Tevatron):
# "query: " / "passage: " prefixes, EOS appended, the L2-normalised last hidden state at the EOS
RETRIEVERS = {
    "repllama": Retriever("repllama", pooling="last", query_prefix="query: ", passage_prefix="passage: ", append_eos=True),
}  # fmt: skip
REFERENCE = "repllama"  # the paper's own baseline: deltas.md compares each variant with it too


# ---- systems: what a row of a table is ---------------------------------------------------------------
LLARA, RETRIEVER, CHECKPOINT, BASELINE = "llara", "retriever", "checkpoint", "baseline"
_SEED = re.compile(r"seed(\d+)")


@dataclass(frozen=True)
class System:
    """One system of the grid and its path segment:

    - ``llara/<style>/<variant>/seed<N>/zeroshot`` or ``.../finetuned/<negatives>``: a model the grid
      adapted (and fine-tuned);
    - ``retriever/<name>/seed<N>/zeroshot`` or ``.../finetuned/<negatives>``: a retriever the grid
      fine-tunes from the base model (RepLLaMA; zero-shot: the base model encoding its way);
    - ``checkpoint/<name>/zeroshot`` or ``checkpoint/<name>/finetuned/<negatives>``: a released
      checkpoint scored as it is;
    - ``baseline/<name>``: BM25 or a plain encoder.
    """

    family: str
    name: str  # the variant, the retriever's, the checkpoint's or the baseline's name
    style: str | None = None
    seed: int | None = None
    stage: str | None = None
    negatives: str | None = None

    def __post_init__(self) -> None:
        check_choice(self.family, (LLARA, RETRIEVER, CHECKPOINT, BASELINE), "system family")
        if self.family == BASELINE:
            if any(v is not None for v in (self.style, self.seed, self.stage, self.negatives)):
                raise ValueError(f"baseline {self.name!r} has no style, seed, stage or negatives")
            return
        check_choice(str(self.stage), STAGES, "stage")
        if self.stage == "finetuned":
            check_choice(str(self.negatives), NEGATIVES, "negatives")
        elif self.negatives is not None:
            raise ValueError("a zero-shot system has no negatives")
        if self.family == LLARA:
            check_choice(str(self.style), PROMPT_STYLES, "prompt style")
        if self.family == RETRIEVER and self.style is not None:
            raise ValueError(f"retriever {self.name!r} has no prompt style")
        if self.family in (LLARA, RETRIEVER) and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"a {self.family} system needs a seed >= 0, got {self.seed!r}")

    @property
    def stage_segment(self) -> str:
        return "zeroshot" if self.stage == "zeroshot" else f"finetuned/{self.negatives}"

    @property
    def model_segment(self) -> str:
        """``<style>/<variant>/seed<N>`` (LLaRA: the adapted model's path below results/adapt) or
        ``retriever/<name>/seed<N>``: the trained model's path below results/finetune, before negatives."""
        if self.family == RETRIEVER:
            return f"{RETRIEVER}/{self.name}/seed{self.seed}"
        return f"{self.style}/{self.name}/seed{self.seed}"

    def to_path(self) -> str:
        if self.family == BASELINE:
            return f"baseline/{self.name}"
        if self.family == CHECKPOINT:
            return f"checkpoint/{self.name}/{self.stage_segment}"
        if self.family == RETRIEVER:
            return f"{self.model_segment}/{self.stage_segment}"
        return f"llara/{self.model_segment}/{self.stage_segment}"

    @classmethod
    def from_path(cls, path: str) -> System:
        """The system a path names: the path may hold more before (``results/metrics/``) and after it
        (``<dataset>/<split>.json``); the last system segment in it counts. ValueError when none."""
        parts = PurePosixPath(str(path).replace("\\", "/")).parts
        for i in range(len(parts) - 1, -1, -1):
            found = _parse_at(parts, i)
            if found is not None:
                return found
        raise ValueError(
            f"{path}: no llara/<style>/<variant>/seed<N>/<stage>, retriever/<name>/seed<N>/<stage>, "
            "checkpoint/<name>/<stage> or baseline/<name> in the path"
        )

    def labels(self) -> dict[str, str | int]:
        """The table labels of this system: variant, prompt_style, seed, stage, negatives ("-" / -1
        where a family has none)."""
        return {
            "variant": self.name,
            "prompt_style": self.style or "-",
            "seed": -1 if self.seed is None else self.seed,
            "stage": self.stage or "-",
            "negatives": self.negatives or "-",
        }


def model_labels(path: str) -> dict[str, str | int] | None:
    """The labels of the adapted model a path names without a stage (``.../llara/<style>/<variant>/
    seed<N>[.tsv]``, an adaptation's benchmark), stage and negatives "-"; None when it names none."""
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    for i in range(len(parts) - 4, -1, -1):
        seed = _SEED.fullmatch(_stem(parts[i + 3]))
        if parts[i] == LLARA and parts[i + 1] in PROMPT_STYLES and seed:
            return {
                "variant": parts[i + 2],
                "prompt_style": parts[i + 1],
                "seed": int(seed[1]),
                "stage": "-",
                "negatives": "-",
            }
    return None


def _stage_at(parts: tuple[str, ...], i: int) -> tuple[str, str | None] | None:
    if i < len(parts) and _stem(parts[i]) == "zeroshot":
        return "zeroshot", None
    if i + 1 < len(parts) and parts[i] == "finetuned" and _stem(parts[i + 1]) in NEGATIVES:
        return "finetuned", _stem(parts[i + 1])
    return None


def _parse_at(parts: tuple[str, ...], i: int) -> System | None:
    head = parts[i]
    if head == BASELINE and i + 1 < len(parts):
        return System(BASELINE, _stem(parts[i + 1]))
    if head == CHECKPOINT and i + 2 < len(parts):
        stage = _stage_at(parts, i + 2)
        return System(CHECKPOINT, parts[i + 1], stage=stage[0], negatives=stage[1]) if stage else None
    if head == RETRIEVER and i + 3 < len(parts):
        seed, stage = _SEED.fullmatch(parts[i + 2]), _stage_at(parts, i + 3)
        if seed and stage:
            return System(RETRIEVER, parts[i + 1], None, int(seed[1]), stage[0], stage[1])
    if head == LLARA and i + 4 < len(parts) and parts[i + 1] in PROMPT_STYLES:
        seed = _SEED.fullmatch(parts[i + 3])
        stage = _stage_at(parts, i + 4)
        if seed and stage:
            return System(LLARA, parts[i + 2], parts[i + 1], int(seed[1]), stage[0], stage[1])
    return None


def _stem(part: str) -> str:
    """A baseline's name from its path part (``bm25`` of ``bm25.tsv`` in a benchmark path)."""
    return part.split(".", 1)[0]
