"""The grid's configuration: the schema (its enums and defaults taken from :mod:`llara.grid`), validation
with errors of one line that name the config file, the key path and what is allowed, and the cross-field
checks a schema cannot express.

Plain functions: the workflow (``workflow/rules/common.smk``) calls them at parse time and the tests call
them directly. :class:`ConfigError` messages name the key and the fix.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

from llara import grid

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
SYNTHETIC_PRETRAIN = (
    "synthetic-pretrain"  # the fine-tuning set's BEIR folder (searched to mine, never scored)
)
MINED_SOURCES = ("beir_train", "synthetic")  # training sets whose negatives are mined from a BEIR corpus
MOVED_KEYS = {  # keys that moved: an error naming the new place beats the schema's "unknown key"
    ("finetune", "query_prompt"): "is gone: the prompts are set per variant in grid.prompts.<variant>.query",
    (
        "finetune",
        "passage_prompt",
    ): "is gone: the prompts are set per variant in grid.prompts.<variant>.passage",
    ("finetune", "data", "seed"): "is gone: negatives are sampled with each grid seed (grid.seeds), as "
    "adaptation and fine-tuning are; remove it",
}


class ConfigError(ValueError):
    """A config the grid cannot run; the message names the key and the fix."""


# ---- the schema ---------------------------------------------------------------------------------------
def _vocabulary() -> dict[str, tuple]:
    return {
        "variants": grid.variants(),
        "prompt_styles": grid.PROMPT_STYLES,
        "kinds": grid.KINDS,
        "stages": grid.STAGES,
        "negatives": grid.NEGATIVES,
    }


def _defaults() -> dict[str, Any]:
    return {
        "query_max_length": grid.QUERY_MAX_LENGTH,
        "passage_max_length": grid.PASSAGE_MAX_LENGTH,
        "adapt_max_length": grid.ADAPT_MAX_LENGTH,
        "bow_scale": grid.BOW_SCALE,
    }


def _prompt_properties() -> dict[str, Any]:
    """grid.prompts.<variant>: {query, passage}, one object per registered variant."""
    return {
        name: {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                role: {"enum": list(grid.KINDS), "default": kind} for role, kind in variant.prompts.items()
            },
        }
        for name, variant in grid.VARIANT_REGISTRY.items()
    }


def _retriever_properties() -> dict[str, Any]:
    """grid.retrievers.<name>: its encoding, one object per registered retriever (defaults: its recipe)."""
    return {
        name: {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "pooling": {"enum": ["last", "mean"], "default": r.pooling},
                "query_prefix": {"type": "string", "default": r.query_prefix},
                "passage_prefix": {"type": "string", "default": r.passage_prefix},
                "append_eos": {"type": "boolean", "default": r.append_eos},
            },
        }
        for name, r in grid.RETRIEVERS.items()
    }


def _fill(node: Any, vocabulary: dict[str, tuple], defaults: dict[str, Any]) -> None:
    """Replace ``x-vocabulary: NAME`` by ``enum`` from llara.grid, ``x-default: NAME`` by ``default``,
    ``x-vocabulary: prompts`` by one property per variant."""
    if isinstance(node, list):
        for item in node:
            _fill(item, vocabulary, defaults)
        return
    if not isinstance(node, dict):
        return
    name = node.pop("x-vocabulary", None)
    if name == "prompts":
        node["properties"] = _prompt_properties()
    elif name == "retrievers":
        node["properties"] = _retriever_properties()
    elif name is not None:
        node["enum"] = list(vocabulary[name])
    if "x-default" in node:
        node["default"] = defaults[node.pop("x-default")]
    for value in node.values():
        _fill(value, vocabulary, defaults)


def load_schema(path: str | Path = SCHEMA) -> dict[str, Any]:
    """The config schema with the vocabulary of llara.grid filled in (variants registered at run time
    included)."""
    schema = copy.deepcopy(_schema_file(str(path)))
    _fill(schema, _vocabulary(), _defaults())
    return schema


@functools.cache
def _schema_file(path: str) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


# ---- validation ---------------------------------------------------------------------------------------
def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _one_line(error: Any, source: str) -> str:
    """A jsonschema error as ``<file>: <key path>: <what is wrong>; <what is allowed>``."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        extra_paths = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in extra)
        hint = f"; allowed keys there: {', '.join(allowed)}" if allowed else ""
        return f"{source}: unknown key {extra_paths}{hint} (a misspelt key?)"
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"{source}: {where} is {error.instance!r}; allowed: {allowed}"
    if error.validator == "not":
        return f"{source}: {where} is {error.instance!r}; {error.schema.get('description', 'not allowed')}"
    return f"{source}: {where}: {error.message}"


def validate(config: dict[str, Any], source: str = "the config") -> dict[str, Any]:
    """Validate ``config`` in place against :func:`load_schema`, filling in defaults; ConfigError with
    one line naming ``source`` (the config file), the key path and what is allowed."""
    from jsonschema import Draft202012Validator, validators

    _reject_moved_keys(config, source)
    schema = load_schema()
    base = Draft202012Validator
    set_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for key, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(key, copy.deepcopy(prop["default"]))
        yield from set_properties(validator, properties, instance, subschema)

    filler = validators.extend(base, {"properties": properties_with_defaults})
    errors = sorted(filler(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    while errors and _coerce_strings(config, errors):  # --config gives numbers as strings
        errors = sorted(filler(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        from jsonschema.exceptions import best_match

        raise ConfigError(_one_line(best_match(errors), source))
    return config


_BOOLEANS = {"true": True, "false": False}


def _as_type(text: str, types: Any) -> Any:
    """``text`` as the first of ``types`` (integer, number, boolean) it spells exactly; None if none."""
    for kind in [types] if isinstance(types, str) else list(types):
        if kind == "integer" and re.fullmatch(r"[+-]?\d+", text.strip()):
            return int(text)
        if kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text.strip()):
            return float(text) if re.search(r"[.eE]", text) else int(text)
        if kind == "boolean" and text.strip().lower() in _BOOLEANS:
            return _BOOLEANS[text.strip().lower()]
    return None


def _coerce_strings(config: dict[str, Any], errors: list) -> bool:
    """Snakemake's ``--config "finetune={'max_steps': 150}"`` passes 150 as the string '150': a string
    where the schema wants a number or a boolean, and that spells one exactly, becomes that value.
    True when something changed (validation runs again)."""
    changed = False
    for error in errors:
        path = list(error.absolute_path)
        if error.validator != "type" or not isinstance(error.instance, str) or not path:
            continue
        value = _as_type(error.instance, error.validator_value)
        if value is None:
            continue
        node: Any = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        changed = True
    return changed


def _reject_moved_keys(config: dict[str, Any], source: str) -> None:
    for path, why in MOVED_KEYS.items():
        node: Any = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            raise ConfigError(
                f"{source}: {'.'.join(path)} {why} (defaults: {grid.default_prompts()}); an adapted variant "
                "may only use the prompt kinds its adaptation trained"
            )


# ---- cross-field checks -------------------------------------------------------------------------------
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def check_config(config: dict[str, Any], repo: Path | None = None) -> list[str]:
    """Checks across keys (after :func:`validate`); returns the negatives axis. ConfigError names the
    key and the fix."""
    ev = config["evaluate"]
    datasets = ev["datasets"]
    hf = ev.get("baselines", {}).get("hf", {})
    baselines = (["bm25"] if ev.get("baselines", {}).get("bm25", True) else []) + list(hf)
    checkpoints = config.get("checkpoints", {})
    gridc = config.get("grid", {"variants": []})
    variants = gridc.get("variants", [])
    for name, ds in datasets.items():
        if ds["source"] == "path" and not ds.get("path"):
            raise ConfigError(f"evaluate.datasets.{name}: source is path but no path is given")
        if name in grid.STAGES:
            raise ConfigError(
                f"evaluate.datasets.{name}: the name is a stage's path segment; rename the dataset"
            )
        if ds["source"] == "path" and repo is not None and not _exists(ds["path"], repo):
            raise ConfigError(f"evaluate.datasets.{name}.path: no such folder {ds['path']!r}; fix the path")
    if "bm25" in hf:
        raise ConfigError(
            "evaluate.baselines.hf.bm25: the name bm25 is the BM25 baseline's; rename this encoder"
        )
    clash = set(checkpoints) & (set(baselines) | set(grid.variants()) | set(grid.RETRIEVERS))
    if clash:
        raise ConfigError(
            f"checkpoints.{sorted(clash)[0]}: the name is a variant's or a baseline's; rename it"
        )
    if not (variants or checkpoints or baselines):
        raise ConfigError("nothing to score: grid.variants, checkpoints and evaluate.baselines are all empty")
    _check_checkpoints(checkpoints)
    if not variants:
        return []
    missing = [s for s in ("pretrain", "base_model", "adapt", "finetune") if s not in config]
    if missing:
        raise ConfigError(
            f"grid.variants is {variants}, but the config has no {', '.join(missing)} section: a grid "
            "trains its models (or set grid.variants: [] to score only checkpoints and baselines)"
        )
    if not gridc.get("prompt_styles") or not gridc.get("seeds") or not gridc.get("stages"):
        raise ConfigError("grid.prompt_styles, grid.seeds and grid.stages need at least one value each")
    source = config["base_model"]["source"]
    if repo is not None and source != "tiny" and not _exists(source, repo) and not _HUB_ID.fullmatch(source):
        raise ConfigError(
            f"base_model.source: {source!r} is neither a folder that exists nor a hub id (org/name); fix "
            "the path, or use tiny for the model the grid builds"
        )
    negatives = _check_finetune_data(config["finetune"]["data"], datasets, hf, ev["top_k"])
    _check_prompts(gridc.get("prompts", {}))
    return negatives


PLAIN_KEYS = ("query_prefix", "passage_prefix", "append_eos", "base_model", "base_revision")


def _check_checkpoints(checkpoints: dict[str, Any]) -> None:
    """A checkpoint's plain-retriever keys (prefixes, EOS, an adapter's base model) need pooling last
    or mean: a LLaRA checkpoint (pooling slots) frames its texts with the prompts and slot tokens."""
    for name, ckpt in checkpoints.items():
        given = [k for k in PLAIN_KEYS if k in ckpt]
        if ckpt.get("pooling", "slots") == "slots" and given:
            raise ConfigError(
                f"checkpoints.{name}.{given[0]} is for a plain decoder retriever (pooling last or mean, "
                "encoded by llara.encode --encoder hf); with pooling slots (the default: a LLaRA "
                "checkpoint) the prompts frame the text: set pooling, or remove the key"
            )
        if "base_revision" in ckpt and "base_model" not in ckpt:
            raise ConfigError(
                f"checkpoints.{name}.base_revision is given without base_model; add base_model (the "
                "adapter's base model) or remove base_revision"
            )


def _exists(path: str, repo: Path) -> bool:
    return Path(path).exists() or (not Path(path).is_absolute() and (repo / path).exists())


def _check_finetune_data(data: dict[str, Any], datasets: dict, hf: dict, top_k: int) -> list[str]:
    src = data["source"]
    if src == "beir_train" and data.get("dataset") not in datasets:
        raise ConfigError(
            f"finetune.data.dataset {data.get('dataset')!r} is not a key of evaluate.datasets "
            f"({', '.join(datasets)}); add it there or use finetune.data.source: jsonl"
        )
    if src == "jsonl" and not data.get("path"):
        raise ConfigError("finetune.data.source is jsonl but finetune.data.path is missing")
    if src != "beir_train" and data.get("dataset"):
        raise ConfigError(
            f"finetune.data.dataset is for source beir_train (an evaluated dataset's train split); source "
            f"{src} does not use it: remove the key, or set source: beir_train"
        )
    if src == "synthetic" and data.get("split", "train") != "train":
        raise ConfigError(
            f"finetune.data.split is {data['split']!r}, but the synthetic fine-tuning set has a train split "
            "only: remove the key (or use source: beir_train for another dataset's split)"
        )
    if src == "synthetic" and SYNTHETIC_PRETRAIN in datasets:
        raise ConfigError(
            f"evaluate.datasets.{SYNTHETIC_PRETRAIN}: the name is the synthetic fine-tuning set's; rename it"
        )
    negatives = data.get("negatives", "bm25" if src in MINED_SOURCES else "file")
    negatives = [negatives] if isinstance(negatives, str) else list(negatives)
    for kind in negatives:
        if src in MINED_SOURCES and kind == "file":
            raise ConfigError(
                "finetune.data.negatives: file means the negatives a training file brings (source jsonl "
                f"or hf); source {src} brings none: use bm25, dense or none"
            )
        if src not in MINED_SOURCES and kind == "dense":
            raise ConfigError(
                f"finetune.data.negatives: dense mining searches a BEIR corpus with the train split's "
                f"query ids; finetune.data.source is {src}: use file, bm25 or none (or "
                "source: beir_train or synthetic)"
            )
    if "dense" in negatives and data.get("depth", 100) > top_k:
        raise ConfigError(
            f"finetune.data.depth ({data['depth']}) is deeper than evaluate.top_k ({top_k}), the "
            "length of the dense run negatives are sampled from; lower the depth or raise top_k"
        )
    encoder = data.get("dense_encoder")
    if encoder is not None and encoder not in hf:
        raise ConfigError(
            f"finetune.data.dense_encoder {encoder!r} is not a key of evaluate.baselines.hf "
            f"({', '.join(hf) or 'none defined'}); leave it out to mine with each adapted model"
        )
    return negatives


def _check_prompts(prompts: dict[str, dict[str, str]]) -> None:
    """No variant's retriever uses slot tokens its adaptation never trained."""
    for name, roles in prompts.items():
        allowed = grid.variant(name).allowed_prompts()
        for role, kind in roles.items():
            if kind not in allowed:
                raise ConfigError(
                    f"grid.prompts.{name}.{role} is {kind!r}, but the {name} variant's adaptation "
                    f"never trains the {kind.upper()} slot tokens (only {', '.join(allowed)}): its retriever "
                    f"would fine-tune and encode with untrained slots. Use {' or '.join(allowed)} here "
                    f"(default: {grid.variant(name).prompts[role]})."
                )


# ---- the launcher: one stage's job -------------------------------------------------------------------
LAUNCH_STAGES = (  # launcher.resources.<stage>: every step whose cost grows with the data or the model
    "basemodel", "adapt", "passthrough", "finetune", "encode", "search", "bm25", "mine", "pairs", "convert",
)  # fmt: skip
JOB_DEFAULTS = {
    "nodes": 1, "tasks": 1, "gpus": 0, "cpus": 2, "mem_gb": 8, "time_min": 60, "signal_delay_s": 120,
    "stop_grace_s": 30,
}  # fmt: skip
SLURM_STAGE_DEFAULTS = {"search": {"gpus": 1}}  # exact search over 4096-d shards: faiss-gpu on one GPU


def stage_resources(launcher: dict[str, Any], stage: str) -> dict[str, Any]:
    """What one stage's job asks for, every key filled in: :data:`JOB_DEFAULTS` (on SLURM also
    :data:`SLURM_STAGE_DEFAULTS`), the site's ``launcher.slurm`` (partition, account, qos, extra sbatch
    options, setup lines), then the stage's own ``launcher.resources.<stage>``: its values win, its
    ``extra`` adds to the site's, its ``setup`` lines run after the site's."""
    if stage not in LAUNCH_STAGES:
        raise ValueError(f"unknown launcher stage {stage!r}; valid: {', '.join(LAUNCH_STAGES)}")
    site = launcher.get("slurm", {})
    own = launcher.get("resources", {}).get(stage, {})
    slurm_defaults = SLURM_STAGE_DEFAULTS.get(stage, {}) if launcher.get("cluster") == "slurm" else {}
    job = {**JOB_DEFAULTS, **slurm_defaults}
    job |= {key: site.get(key, "") for key in ("partition", "account", "qos")}
    job |= {k: v for k, v in own.items() if k not in ("extra", "setup")}
    job["gpu_request"] = site.get("gpu_request", "gpus")
    job["extra"] = {**site.get("extra", {}), **own.get("extra", {})}
    job["setup"] = [*site.get("setup", []), *own.get("setup", [])]
    return job
