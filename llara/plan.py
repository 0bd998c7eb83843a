"""A budget before the run: jobs per stage, GPU-hours requested, disk, and peak memory per job class.

The numbers come from the grid's real DAG: ``snakemake --dry-run --printshellcmds`` is run on the
config (in a temporary working directory, so nothing is written in the repository) and every job it
prints is read: its rule, its wildcards and its shell command. A heavy job's command starts with
``python -m llara.launch ... --`` and its options (nodes, tasks, GPUs, CPUs, memory, time limit)
are what the job asks SLURM for (read with :func:`llara.launch.parse`, or a small regex where the
launcher's parser does not know an option yet). Sizes come from what is on disk where it is there
(a local BEIR folder is counted, a model folder's ``config.json`` and safetensors headers read), else
from ``llara/resources/plan_sizes.yaml`` (the published BEIR counts, the shapes of known hub models);
the synthetic set's sizes follow from the config (``synthetic.*``: four paragraphs per article).

* **GPU-hours requested** = nodes x GPUs per node x time limit, summed over a rule's jobs: an upper
  bound, the time limit (a job that ends early is billed less; a requeued one may cost more).
* **Embeddings**: passages (and the split's queries) x dimension x bytes per value (the encoding
  jobs' ``--store-dtype``, else ``evaluate.embedding_dtype``, else llara.encode's default, float16).
* **Model folders**: adapted and fine-tuned checkpoints x parameters x bytes (a LoRA fine-tune
  without ``merge_lora`` writes only its adapter), and the training checkpoints a job keeps while it
  runs (weights and optimizer state, at most ``save_total_limit`` of them plus one being written).
* **Peak memory**: the memory each job class requests; for encoding, what one job holds (its
  shard's vectors in float32 and their stored copy, the model's weights), for search the largest shard.

CLI::

    python -m llara.plan --configfile config/paper.yaml [more.yaml ...] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llara.io import DataError, cli_main

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
SIZES_FILE = Path(__file__).resolve().parent / "resources" / "plan_sizes.yaml"
DTYPE_BYTES = {
    "float32": 4, "fp32": 4, "float": 4,
    "float16": 2, "fp16": 2, "half": 2,
    "bfloat16": 2, "bf16": 2,
    "int8": 1, "uint8": 1,
}  # fmt: skip
LAUNCH_OPTIONS = ("nodes", "tasks", "gpus", "cpus", "mem-gb", "time-min")
ADAM_BYTES = 8  # Adam's two moments in float32, per trainable parameter
MASTER_BYTES = 4  # DeepSpeed's float32 master copy of 16-bit weights
ENCODE_STORE_DTYPE = "float16"  # llara.encode --store-dtype's default (vectors computed in float32)
NOT_LAUNCHED = "where Snakemake runs (the login node with --profile slurm)"


# ---- config -------------------------------------------------------------------------------------
def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's merge of config files: nested mappings merged key by key, the later file wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(files: Sequence[Path]) -> dict[str, Any]:
    """The merged, validated config of ``files`` (defaults filled in, as the workflow sees it)."""
    from llara import gridconfig

    config: dict[str, Any] = {}
    for path in files:
        if not path.is_file():
            raise DataError(f"{path}: no such config file; pass --configfile with a YAML file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise DataError(
                f"{path}: not valid YAML{where} ({getattr(exc, 'problem', exc)}); fix the file"
            ) from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DataError(
                f"{path}: the top level must be a mapping (key: value), got {type(data).__name__}"
            )
        config = merge(config, data)
    source = ", ".join(map(str, files))
    try:
        gridconfig.validate(config, source)
        gridconfig.check_config(config, REPO)
    except gridconfig.ConfigError as exc:
        raise DataError(str(exc)) from None
    return config


# ---- the DAG ------------------------------------------------------------------------------------
@dataclass
class Request:
    """What a heavy job asks for (llara.launch's options). ``mem_gb`` is per node."""

    nodes: int = 1
    tasks: int = 1
    gpus: int = 0
    cpus: int = 0
    mem_gb: float = 0.0
    time_min: int = 60
    partition: str = ""

    @property
    def gpu_hours(self) -> float:
        return self.nodes * self.gpus * self.time_min / 60

    @property
    def cpu_hours(self) -> float:
        return self.nodes * self.tasks * max(self.cpus, 1) * self.time_min / 60


@dataclass
class Job:
    """One job of the dry run: its rule, wildcards, outputs and shell command."""

    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    shell: str = ""
    request: Request | None = None  # set for a job run through llara.launch
    command: list[str] = field(default_factory=list)  # the stage command (after llara.launch's --)

    def option(self, *names: str) -> str | None:
        """The value of the first of ``names`` in the stage command (``--model X``), or in the shell
        command of a job not run through llara.launch."""
        tokens = self.command or split_shell(self.shell)
        for name in names:
            if name in tokens[:-1]:
                return tokens[tokens.index(name) + 1]
        return None


def split_shell(shell: str) -> list[str]:
    try:
        return shlex.split(shell)
    except ValueError:
        return shell.split()


def snakemake_executable() -> str:
    beside = Path(sys.executable).parent / "snakemake"
    found = str(beside) if beside.is_file() else shutil.which("snakemake")
    if not found:
        raise DataError("snakemake not found beside this Python or on PATH; pip install 'llara[workflow]'")
    return found


def dry_run_command(files: Sequence[Path], workdir: Path) -> list[str]:
    """Every job with its shell command; no reasons, no host banner (``--quiet host reason``)."""
    return [
        snakemake_executable(),
        "-s", str(SNAKEFILE),
        "--configfile", *map(str, files),
        "--directory", str(workdir),
        "--dry-run", "--printshellcmds",
        "--quiet", "host", "reason",
    ]  # fmt: skip


def dry_run(files: Sequence[Path], timeout_s: float = 600) -> tuple[str, float]:
    """The dry run's output and how long it took. It runs in a temporary working directory (its
    ``.snakemake`` goes there and is deleted), from the repository, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="llara-plan-") as workdir:
        cmd = dry_run_command(files, Path(workdir))
        try:
            done = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise DataError(
                f"snakemake --dry-run took longer than {timeout_s:.0f} s; run it by hand to see why"
            ) from None
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise DataError(
            f"snakemake --dry-run failed (exit status {done.returncode}): {dry_run_error(text)}; see the "
            f"whole output with: {shlex.join(['snakemake', '-n', '--configfile', *map(str, files)])}"
        )
    return text, time.time() - start


def dry_run_error(text: str) -> str:
    """The line that says what went wrong (the one after ``...Error in file ...``, or the error line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if re.match(r"^\w*(Error|Exception)\b", line):
            if re.search(r" in (file|rule|line) ", line) and i + 1 < len(lines):
                return f"{line.rstrip(':')}: {lines[i + 1]}"
            return line
    return lines[-1] if lines else "no output"


RULE_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
ATTR_LINE = re.compile(r"^    (\w+): (.*)$")
WILDCARD = re.compile(r"(\w+)=(.*?)(?=, \w+=|$)")


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of ``snakemake --dry-run --printshellcmds`` output (one block per job: ``rule NAME:``,
    indented ``key: value`` lines, then ``Shell command: ...``, which may run over several lines)."""
    jobs: list[Job] = []
    job: Job | None = None
    in_shell = False
    for line in text.splitlines():
        match = RULE_LINE.match(line)
        if match:
            job, in_shell = Job(match.group(1)), False
            jobs.append(job)
            continue
        if job is None:
            continue
        if line.startswith("Shell command: "):
            job.shell, in_shell = line.removeprefix("Shell command: "), True
            continue
        if in_shell:
            if not line.strip() or line.startswith(("[", "Job stats:", "Reasons:", "This was a dry-run")):
                in_shell = False
                job = None
            else:
                job.shell += "\n" + line
            continue
        attr = ATTR_LINE.match(line)
        if attr and attr.group(1) == "wildcards":
            job.wildcards = dict(WILDCARD.findall(attr.group(2)))
        elif attr and attr.group(1) == "output":
            job.output = [p.strip() for p in attr.group(2).split(", ")]
    for job in jobs:
        if job.shell == "None":
            job.shell = ""
        job.request, job.command = launch_request(job.shell)
    return jobs


def parse_job_stats(text: str) -> dict[str, int]:
    """Snakemake's ``Job stats`` table (rule -> count, ``total`` included), in its order."""
    lines = text.splitlines()
    if "Job stats:" not in lines:
        return {}
    stats: dict[str, int] = {}
    for line in lines[lines.index("Job stats:") + 1 :]:
        if not line.strip():
            break
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    return stats


SHELL_END = {">", ">>", "|", "||", "&&", ";", "2>&1", "&>"}


def launch_request(shell: str) -> tuple[Request | None, list[str]]:
    """(what the job requests, the stage command) of a command run through ``llara.launch``; (None, [])
    for any other command."""
    if "llara.launch" not in shell:
        return None, []
    tokens = split_shell(shell)
    try:
        start = tokens.index("llara.launch") + 1
    except ValueError:
        return None, []
    end = tokens.index("--", start) if "--" in tokens[start:] else len(tokens)
    options = tokens[start:end]
    command: list[str] = []
    for token in tokens[end + 1 :]:
        if token in SHELL_END or token.startswith((">", "2>")):
            break
        command.append(token)
    return parse_request(options), command


def parse_request(options: list[str]) -> Request:
    """llara.launch's options as a :class:`Request`: its own parser, or (an option it does not know
    yet) a regex over the resource options."""
    from llara import launch

    try:
        args = launch.parse([*options, "--", "true"])  # its parser raises DataError, prints nothing
        return Request(
            nodes=int(getattr(args, "nodes", 1) or 1),
            tasks=args.tasks,
            gpus=args.gpus,
            cpus=args.cpus,
            mem_gb=float(args.mem_gb),
            time_min=args.time_min,
            partition=args.partition or "",
        )
    except DataError:
        pass
    text = " ".join(options)
    found = {
        name: m.group(1)
        for name in (*LAUNCH_OPTIONS, "partition")
        if (m := re.search(rf"--{name}[ =](\S+)", text))
    }
    try:
        return Request(
            nodes=int(found.get("nodes", 1)),
            tasks=int(found.get("tasks", 1)),
            gpus=int(found.get("gpus", 0)),
            cpus=int(found.get("cpus", 0)),
            mem_gb=float(found.get("mem-gb", 0)),
            time_min=int(found.get("time-min", 60)),
            partition=found.get("partition", ""),
        )
    except ValueError as exc:
        raise DataError(
            f"cannot read the resources of a job's llara.launch options ({exc}): {text}"
        ) from None


# ---- sizes: datasets ----------------------------------------------------------------------------
@dataclass
class DatasetSize:
    name: str
    passages: int | None
    queries: dict[str, int | None]
    source: str  # how the numbers are known
    corpus_file_bytes: int | None = None  # corpus.jsonl's size where it is on disk


_SIZES: dict[str, Any] | None = None


def known_sizes() -> dict[str, Any]:
    """llara/resources/plan_sizes.yaml: the published BEIR counts and the known hub models."""
    global _SIZES
    if _SIZES is None:
        if not SIZES_FILE.is_file():
            raise DataError(f"{SIZES_FILE}: missing; reinstall llara (the file ships with the package)")
        _SIZES = yaml.safe_load(SIZES_FILE.read_text(encoding="utf-8"))
    return _SIZES


def local_path(path: str) -> Path | None:
    """``path`` as the real run would see it (absolute, or from the repository), when it exists."""
    if not path:
        return None
    for candidate in (Path(path), REPO / path):
        if candidate.is_absolute() and candidate.exists():
            return candidate
    return None


def count_lines(path: Path) -> int:
    """Non-blank lines of a text file (``.gz`` read decompressed)."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def count_split_queries(folder: Path, split: str) -> int | None:
    """Queries with qrels in ``qrels/<split>.tsv`` (those llara.encode encodes); None without the file."""
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        return None
    ids = set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2 and not (i == 0 and parts[0] == "query-id"):
                ids.add(parts[0])
    return len(ids)


def dataset_size(name: str, beir_dir: str, splits: Iterable[str], config: dict[str, Any]) -> DatasetSize:
    """Passages and split queries of one BEIR dataset: counted where its folder exists, computed from
    ``synthetic.*`` for the generated sets, else the published counts, else unknown (None)."""
    from llara import gridconfig

    splits = sorted(set(splits))
    source = config["evaluate"]["datasets"].get(name, {}).get("source")
    if name == gridconfig.SYNTHETIC_PRETRAIN and name not in config["evaluate"]["datasets"]:
        source = "synthetic_pretrain"
    if source in ("synthetic", "synthetic_pretrain"):
        syn = config.get("synthetic", {})
        pretrain = source == "synthetic_pretrain"
        articles = syn["n_articles"] if pretrain else syn["n_corpus_articles"]
        per_split = (
            {"train": syn["n_pretrain_queries"]}
            if pretrain
            else {"train": syn["n_train_queries"], "test": syn["n_test_queries"]}
        )
        key = "n_articles" if pretrain else "n_corpus_articles"
        return DatasetSize(
            name,
            4 * articles,  # llara.synthetic: a lead paragraph and three sections per article, each a passage
            {s: per_split.get(s) for s in splits},
            f"from the config: 4 x synthetic.{key}, synthetic.n_*_queries",
        )
    folder = local_path(beir_dir)
    corpus = None
    if folder is not None:
        corpus = next(
            (folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).is_file()), None
        )
    corpus_bytes = corpus.stat().st_size if corpus is not None else None
    table = known_sizes()["datasets"]
    known = table["sizes"].get(name)
    if known is not None and source == "download":  # the official archive: its published counts
        queries = {s: known["queries"].get(s) for s in splits}
        if folder is not None:  # a split the table lacks is counted when the download is there
            queries = {s: n if n is not None else count_split_queries(folder, s) for s, n in queries.items()}
        return DatasetSize(name, known["passages"], queries, table["source"], corpus_bytes)
    if corpus is not None and folder is not None:
        return DatasetSize(
            name,
            count_lines(corpus),
            {s: count_split_queries(folder, s) for s in splits},
            f"counted in {folder}",
            corpus_bytes,
        )
    return DatasetSize(name, None, dict.fromkeys(splits), f"unknown: {beir_dir} is not on disk")


# ---- sizes: models ------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    ref: str
    hidden_size: int | None = None
    parameters: int | None = None
    dtype: str | None = None  # how the weights are stored
    shape: dict[str, Any] = field(default_factory=dict)  # Llama-like shapes, for LoRA sizes
    source: str = "unknown"


SHAPE_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "tie_word_embeddings",
)  # fmt: skip


def llama_parameters(shape: dict[str, Any]) -> int | None:
    """Parameters of a Llama-style decoder from its shapes (embeddings, attention with grouped KV
    heads, gated MLP, RMS norms, and an output layer unless tied)."""
    try:
        h, inter = shape["hidden_size"], shape["intermediate_size"]
        layers, heads, vocab = shape["num_hidden_layers"], shape["num_attention_heads"], shape["vocab_size"]
    except KeyError:
        return None
    kv = shape.get("num_key_value_heads") or heads
    kv_dim = h // heads * kv
    per_layer = 2 * h * h + 2 * h * kv_dim + 3 * h * inter + 2 * h
    return vocab * h * (1 if shape.get("tie_word_embeddings") else 2) + layers * per_layer + h


def safetensors_parameters(folder: Path) -> int | None:
    """The parameters in a folder's safetensors files, from their headers (no weights are read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        try:
            with open(path, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for key, entry in header.items():
            if key != "__metadata__":
                total += math.prod(entry["shape"])
    return total


def folder_model(ref: str, folder: Path) -> ModelInfo:
    config_file = folder / "config.json"
    if not config_file.is_file():
        marker = folder / "llara_fetch.json"
        if marker.is_file():
            return known_model(json.loads(marker.read_text()).get("repo_id", ""), ref)
        return ModelInfo(ref, source=f"unknown: {folder} has no config.json")
    cfg = json.loads(config_file.read_text(encoding="utf-8"))
    cfg = {**cfg.get("text_config", {}), **cfg}
    shape = {k: cfg[k] for k in SHAPE_KEYS if k in cfg}
    params = safetensors_parameters(folder)
    how = "safetensors headers" if params is not None else "estimated from config.json"
    if params is None and cfg.get("model_type") in ("llama", "mistral", "qwen2"):
        params = llama_parameters(shape)
    dtype = cfg.get("torch_dtype") or cfg.get("dtype")
    return ModelInfo(ref, cfg.get("hidden_size"), params, dtype, shape, f"{config_file} ({how})")


def known_model(repo_id: str, ref: str | None = None) -> ModelInfo:
    table = known_sizes()["models"]
    known = table["known"].get(repo_id)
    if known is None:
        return ModelInfo(
            ref or repo_id, source=f"unknown: {repo_id or ref} is not on disk nor in {SIZES_FILE.name}"
        )
    shape = {k: known[k] for k in SHAPE_KEYS if k in known}
    return ModelInfo(
        ref or repo_id, known["hidden_size"], known["parameters"], known.get("dtype"), shape, table["source"]
    )


def tiny_model(config: dict[str, Any]) -> ModelInfo:
    tiny = config["base_model"].get("tiny", {})
    shape = {
        "hidden_size": tiny.get("hidden_size"),
        "intermediate_size": tiny.get("intermediate_size"),
        "num_hidden_layers": tiny.get("layers"),
        "num_attention_heads": tiny.get("heads"),
        "num_key_value_heads": tiny.get("heads"),
        "vocab_size": tiny.get("vocab_size"),
        "tie_word_embeddings": tiny.get("tie_embeddings", False),
    }
    return ModelInfo(
        "tiny",
        shape["hidden_size"],
        llama_parameters(shape) if None not in shape.values() else None,
        "float32",
        shape,
        "base_model.tiny (estimate: the trained vocabulary is at most vocab_size)",
    )


def model_info(ref: str, config: dict[str, Any]) -> ModelInfo:
    """Shapes of a model named by a config or a command: ``tiny``, a folder, ``package:NAME``, a hub id."""
    if ref == "tiny":
        return tiny_model(config)
    if ref.startswith("package:"):
        import importlib

        try:
            ref = str(importlib.import_module(ref.split(":", 1)[1]).get_model_path())
        except (ImportError, AttributeError):
            return ModelInfo(ref, source=f"unknown: {ref} is not installed")
    folder = local_path(ref)
    if folder is not None and folder.is_dir():
        return folder_model(ref, folder)
    return known_model(ref)


def lora_parameters(shape: dict[str, Any], r: int, targets: Sequence[str]) -> int | None:
    """LoRA's A and B matrices (r x in + out x r) on the named Llama projections of every layer."""
    try:
        h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
        heads = shape["num_attention_heads"]
    except KeyError:
        return None
    kv_dim = h // heads * (shape.get("num_key_value_heads") or heads)
    dims = {
        "q_proj": (h, h), "k_proj": (h, kv_dim), "v_proj": (h, kv_dim), "o_proj": (h, h),
        "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h),
    }  # fmt: skip
    if any(t not in dims for t in targets):
        return None
    return layers * sum(r * (dims[t][0] + dims[t][1]) for t in targets)


# ---- the budget ---------------------------------------------------------------------------------
def human(n: float | None) -> str:
    """Bytes in decimal units (GB = 10^9 bytes)."""
    if n is None:
        return "unknown"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def store_dtype(job: Job, config: dict[str, Any]) -> tuple[str, str]:
    """(dtype, where it comes from) of the vectors an encoding job stores: the job's ``--store-dtype``,
    else ``evaluate.embedding_dtype``, else llara.encode's default."""
    if job.option("--store-dtype"):
        return str(job.option("--store-dtype")), "the jobs' --store-dtype"
    if config["evaluate"].get("embedding_dtype"):
        return str(config["evaluate"]["embedding_dtype"]), "evaluate.embedding_dtype"
    return ENCODE_STORE_DTYPE, "llara.encode's --store-dtype default: the jobs pass none"


def written_dtype(precision: str, gpus: int, loaded: str | None) -> str | None:
    """The dtype a training stage writes its model in: bf16 for precision bf16 (and auto on a GPU,
    assuming one with bf16), else the dtype the model was stored in (transformers loads "auto")."""
    if precision == "bf16" or (precision == "auto" and gpus > 0):
        return "bfloat16"
    return loaded


def is_hub_id(ref: str) -> bool:
    """``owner/name`` (a path of two parts may be a folder too: :func:`local_path` decides)."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", ref) is not None


def model_bytes(parameters: int | None, dtype: str | None) -> int | None:
    return None if parameters is None or dtype not in DTYPE_BYTES else parameters * DTYPE_BYTES[dtype]


class Grid:
    """What a budget is computed from: the config, the dry run's jobs, the datasets' sizes and the
    models' shapes (each looked up once)."""

    def __init__(self, config: dict[str, Any], jobs: list[Job]) -> None:
        self.config = config
        self.jobs = jobs
        self.by_rule: dict[str, list[Job]] = {}
        for job in jobs:
            self.by_rule.setdefault(job.rule, []).append(job)
        trains = bool(config.get("grid", {}).get("variants"))
        self.base_ref = str(config.get("base_model", {}).get("source", "")) if trains else ""
        self._models: dict[str, ModelInfo] = {}  # by reference and by system path
        # a model the DAG fetches (python -m llara.fetch --repo-id ID --output DIR) is known by its hub id
        # before the folder exists
        self.fetch_jobs = [j for j in jobs if "llara.fetch" in j.shell]
        self.fetched = {
            os.path.normpath(j.option("--output") or ""): j.option("--repo-id") or "" for j in self.fetch_jobs
        }
        self.base = self.model(self.base_ref) if self.base_ref else None
        splits: dict[str, set[str]] = {}
        beir_dirs: dict[str, str] = {}
        self.num_shards: dict[str, int] = {}
        for job in jobs:
            name = job.wildcards.get("dataset")
            if name is None:
                continue
            if job.option("--beir-dir"):
                beir_dirs.setdefault(name, job.option("--beir-dir") or "")
            if "split" in job.wildcards:
                splits.setdefault(name, set()).add(job.wildcards["split"])
            if job.rule == "encode_corpus":
                self.num_shards[name] = int(job.wildcards["num"])
        self.sizes = {
            name: dataset_size(name, d, splits.get(name, ()), config) for name, d in beir_dirs.items()
        }
        self.adapt_cfg = config.get("adapt", {})
        self.ft_cfg = config.get("finetune", {})

    def rule(self, name: str, launched: bool = False) -> list[Job]:
        return [j for j in self.by_rule.get(name, []) if j.request is not None or not launched]

    def encoder(self, job: Job) -> ModelInfo:
        """The model a job's system encodes with (LLaRA: the base model's shapes; search: the model its
        encoding jobs named)."""
        key = "system:" + job.wildcards.get("system", "")
        if key not in self._models:
            from llara.grid import System

            try:
                family = System.from_path(job.wildcards.get("system", "")).family
            except ValueError:
                family = None
            ref = job.option("--model")
            if family in ("llara", "retriever") and self.base is not None:  # the base model's shapes
                self._models[key] = self.base
            elif ref:
                self._models[key] = self.model(ref)
            else:
                return ModelInfo(job.wildcards.get("system", "?"))
        return self._models[key]

    def model(self, ref: str) -> ModelInfo:
        if ref not in self._models:
            info = model_info(ref, self.config)
            repo_id = self.fetched.get(os.path.normpath(ref))
            if info.parameters is None and repo_id:
                info = known_model(repo_id, ref)
                info.source = f"{info.source} (the DAG fetches {repo_id} into {ref})"
            self._models[ref] = info
        return self._models[ref]

    def rows(self, job: Job) -> int | None:
        """Vectors an encoding job writes: its shard of the corpus, or the split's queries."""
        size = self.sizes.get(job.wildcards.get("dataset", ""))
        if size is None:
            return None
        if job.rule == "encode_corpus":
            if size.passages is None:
                return None
            from llara.shards import shard_bounds

            lo, hi = shard_bounds(size.passages, int(job.wildcards["shard"]), int(job.wildcards["num"]))
            return hi - lo
        return size.queries.get(job.wildcards.get("split", ""))

    def largest_shard(self, dataset: str) -> int | None:
        rows = [self.rows(j) for j in self.rule("encode_corpus") if j.wildcards.get("dataset") == dataset]
        return max((r for r in rows if r is not None), default=None)

    def gpus(self, rule: str) -> int:
        return max((j.request.gpus for j in self.rule(rule, launched=True) if j.request), default=0)

    @property
    def parameters(self) -> int | None:
        return self.base.parameters if self.base else None

    @property
    def adapted_dtype(self) -> str | None:
        return written_dtype(
            self.adapt_cfg.get("precision", "auto"),
            self.gpus("adapt"),
            self.base.dtype if self.base else None,
        )

    @property
    def finetuned_dtype(self) -> str | None:
        return written_dtype(self.ft_cfg.get("precision", "auto"), self.gpus("finetune"), self.adapted_dtype)

    @property
    def ft_adapter(self) -> bool:
        """Whether fine-tuning writes a LoRA adapter only (use_lora without merge_lora)."""
        return bool(self.ft_cfg.get("use_lora", True)) and not self.ft_cfg.get("merge_lora", False)

    def lora(self, section: dict[str, Any]) -> int | None:
        if self.base is None:
            return None
        return lora_parameters(
            self.base.shape, section.get("lora_r", 64), section.get("lora_target_modules", [])
        )


def stage_rows(grid: Grid, stats: dict[str, int]) -> list[dict[str, Any]]:
    """Jobs per rule (counted from the printed jobs) and what the launched ones request."""
    order = [r for r in stats if r != "total"]
    rows = []
    for rule in order + [r for r in grid.by_rule if r not in order]:
        jobs = grid.rule(rule)
        reqs = [j.request for j in jobs if j.request is not None]
        rows.append(
            {
                "rule": rule,
                "jobs": len(jobs),
                "launched": len(reqs),
                "nodes": sorted({r.nodes for r in reqs}),
                "gpus_per_node": sorted({r.gpus for r in reqs}),
                "tasks_per_node": sorted({r.tasks for r in reqs}),
                "cpus_per_task": sorted({r.cpus for r in reqs}),
                "mem_gb": sorted({r.mem_gb for r in reqs}),
                "time_min": sorted({r.time_min for r in reqs}),
                "partitions": sorted({r.partition for r in reqs if r.partition}),
                "gpu_hours": round(sum(r.gpu_hours for r in reqs), 2),
                "cpu_hours": round(sum(r.cpu_hours for r in reqs), 2),
            }
        )
    return rows


def embedding_rows(grid: Grid) -> list[dict[str, Any]]:
    """Bytes of vectors per dataset, over every system that encodes it (corpus shards and queries)."""
    out: dict[str, dict[str, Any]] = {}
    for job in grid.rule("encode_corpus") + grid.rule("encode_queries"):
        name = job.wildcards.get("dataset", "?")
        size = grid.sizes.get(name)
        row = out.setdefault(
            name,
            {
                "dataset": name,
                "passages": size.passages if size else None,
                "queries": size.queries if size else {},
                "counts_from": size.source if size else "unknown",
                "systems": set(),
                "dims": set(),
                "store_dtypes": set(),
                "corpus_bytes": 0,
                "queries_bytes": 0,
                "jobs_of_unknown_size": 0,
            },
        )
        model, rows = grid.encoder(job), grid.rows(job)
        row["systems"].add(job.wildcards.get("system", "?"))
        if model.hidden_size is None or rows is None:
            row["jobs_of_unknown_size"] += 1
            continue
        dtype, source = store_dtype(job, grid.config)
        if dtype not in DTYPE_BYTES:
            raise DataError(f"{job.rule} job {job.wildcards}: unknown vector dtype {dtype!r} ({source})")
        row["dims"].add(model.hidden_size)
        row["store_dtypes"].add(f"{dtype} ({source})")
        row["corpus_bytes" if job.rule == "encode_corpus" else "queries_bytes"] += (
            rows * model.hidden_size * DTYPE_BYTES[dtype]
        )
    rows = sorted(out.values(), key=lambda r: -(r["corpus_bytes"] + r["queries_bytes"]))
    return [
        {
            **r,
            "systems": len(r["systems"]),
            "dims": sorted(r["dims"]),
            "store_dtypes": sorted(r["store_dtypes"]),
        }
        for r in rows
    ]


def folder_rows(grid: Grid) -> list[dict[str, Any]]:
    """The model folders the grid writes (and the base model it reads)."""
    base, params, ft = grid.base, grid.parameters, grid.ft_cfg
    rows = []
    if base is not None:
        fetch_rule = next((j.rule for j in grid.fetch_jobs), None)
        if "base_model" in grid.by_rule:
            where = "results/base/model (trained by the DAG)"
        elif fetch_rule:
            where = f"fetched by rule {fetch_rule}"
        elif local_path(grid.base_ref):
            where = f"not in the DAG: read from {grid.base_ref}"
        else:
            where = f"not in the DAG: loaded from the hub by every job that reads it ({grid.base_ref})"
        rows.append(
            {
                "kind": "base model",
                "folders": 1,
                "parameters": params,
                "dtype": base.dtype,
                "bytes_each": model_bytes(params, base.dtype),
                "note": f"{where}; sizes: {base.source}",
            }
        )
    if grid.rule("adapt"):
        rows.append(
            {
                "kind": "adapted models (adapt)",
                "folders": len(grid.rule("adapt")),
                "parameters": params,
                "dtype": grid.adapted_dtype,
                "bytes_each": model_bytes(params, grid.adapted_dtype),
                "note": "full models (a LoRA adaptation is merged before saving)"
                if grid.adapt_cfg.get("use_lora")
                else "full-parameter adaptation: full models",
            }
        )
    if grid.rule("finetune") and grid.ft_adapter:
        lora = grid.lora(ft)
        slots = (
            "; plus the slot-token embeddings (train_slot_embeddings)"
            if ft.get("train_slot_embeddings")
            else ""
        )
        rows.append(
            {
                "kind": "fine-tuned models (finetune)",
                "folders": len(grid.rule("finetune")),
                "parameters": lora,
                "dtype": "float32",
                "bytes_each": model_bytes(lora, "float32"),
                "note": f"LoRA adapters only (finetune.use_lora without merge_lora: r={ft.get('lora_r')} on "
                f"{len(ft.get('lora_target_modules', []))} projections per layer; float32 assumed, at most 4 B), "
                f"loaded on their adapted model{slots}",
            }
        )
    elif grid.rule("finetune"):
        rows.append(
            {
                "kind": "fine-tuned models (finetune)",
                "folders": len(grid.rule("finetune")),
                "parameters": params,
                "dtype": grid.finetuned_dtype,
                "bytes_each": model_bytes(params, grid.finetuned_dtype),
                "note": "full models" + (" (LoRA merged: finetune.merge_lora)" if ft.get("use_lora") else ""),
            }
        )
    for row in rows:
        row["bytes_total"] = None if row["bytes_each"] is None else row["bytes_each"] * row["folders"]
    return rows


def checkpoints_kept(section: dict[str, Any]) -> int:
    """Training checkpoints on disk at once: save_total_limit, plus the one being written before the
    oldest is deleted; fewer when max_steps allows fewer saves."""
    limit = section.get("save_total_limit", 2)
    steps, every = section.get("max_steps", -1), section.get("save_steps", 500)
    saves = steps // every if steps and steps > 0 else limit + 1
    return max(0, min(limit + 1, saves))


def checkpoint_bytes(trainable: int | None, weights_dtype: str | None, deepspeed: bool) -> int | None:
    """One training checkpoint: the trainable weights, Adam's moments, DeepSpeed's fp32 master copy."""
    if trainable is None or weights_dtype not in DTYPE_BYTES:
        return None
    weight = DTYPE_BYTES[weights_dtype]
    return trainable * (weight + ADAM_BYTES + (MASTER_BYTES if deepspeed and weight < 4 else 0))


def checkpoint_rows(grid: Grid) -> list[dict[str, Any]]:
    """What a training job keeps in ``<output>.partial/checkpoints`` while it runs."""
    from llara import grid as vocabulary

    rows = []
    training = [
        j for j in grid.rule("adapt") if vocabulary.variant(j.wildcards.get("variant", "none")).trains
    ]
    stages = (
        ("adapt", training, grid.adapt_cfg, bool(grid.adapt_cfg.get("use_lora")), grid.adapted_dtype),
        (
            "finetune",
            grid.rule("finetune"),
            grid.ft_cfg,
            bool(grid.ft_cfg.get("use_lora", True)),
            grid.finetuned_dtype,
        ),
    )
    for rule, jobs, section, lora, dtype in stages:
        if not jobs:
            continue
        trainable = grid.lora(section) if lora else grid.parameters
        each = checkpoint_bytes(trainable, "float32" if lora else dtype, bool(section.get("deepspeed")))
        kept = checkpoints_kept(section)
        rows.append(
            {
                "rule": rule,
                "jobs": len(jobs),
                "trainable_parameters": trainable,
                "checkpoints_per_job": kept,
                "bytes_per_checkpoint": each,
                "bytes_per_job": None if each is None else each * kept,
            }
        )
    return rows


def encode_memory(grid: Grid, rule: str) -> tuple[int | None, str]:
    """The largest encoding job's host memory: its vectors as computed (float32) and their copy in the
    store dtype, the weights (dtype auto: 16-bit on a GPU, fp32 on the CPU) and, for the corpus, the
    texts where the corpus is on disk (at most twice the file: a job that reads it all)."""
    worst, what = 0, "not estimated (sizes unknown)"
    for job in grid.rule(rule, launched=True):
        model, rows = grid.encoder(job), grid.rows(job)
        if model.hidden_size is None or model.parameters is None or rows is None or job.request is None:
            continue
        weights = model.parameters * (2 if job.request.gpus else 4)
        stored = DTYPE_BYTES.get(store_dtype(job, grid.config)[0], 4)
        vectors = rows * model.hidden_size * (4 + (stored if stored < 4 else 0))
        size = grid.sizes[job.wildcards["dataset"]]
        texts = 2 * size.corpus_file_bytes if rule == "encode_corpus" and size.corpus_file_bytes else 0
        if vectors + weights + texts > worst:
            worst = vectors + weights + texts
            copy = f" + its {stored} B copy to store" if stored < 4 else ""
            what = f"{size.name}: {rows:,} rows x {model.hidden_size} x 4 B (float32){copy} + weights {human(weights)}"
            if texts:
                what += f" + corpus texts, at most {human(texts)} (2 x corpus.jsonl)"
            elif rule == "encode_corpus":
                what += " (+ the corpus texts: not on disk yet)"
    return worst or None, what


def search_memory(grid: Grid) -> tuple[int | None, str]:
    """The largest search job: an exact search holds one corpus shard at a time (an ANN index the
    whole corpus), the queries, and every shard's top-k (scores float32, ids int64)."""
    ev = grid.config["evaluate"]
    top_k, exact = ev.get("top_k", 1000), ev.get("index", "exact") == "exact"
    worst, what = 0, "not estimated (sizes unknown)"
    for job in grid.rule("search"):
        name = job.wildcards.get("dataset", "")
        model, size, shard = grid.encoder(job), grid.sizes.get(name), grid.largest_shard(name)
        if size is None or model.hidden_size is None or shard is None:
            continue
        queries = size.queries.get(job.wildcards.get("split", "")) or 0
        shards = grid.num_shards.get(name, 1)
        held = shard if exact else (size.passages or 0)
        need = (held + queries) * model.hidden_size * 4 + queries * min(
            top_k, size.passages or top_k
        ) * 12 * shards
        if need > worst:
            worst = need
            what = (
                f"{name}: {'largest shard' if exact else 'whole corpus (+ the ANN index)'} {held:,} x "
                f"{model.hidden_size} x 4 B + {queries:,} queries + top-{top_k} lists of {shards} shard(s)"
            )
    return worst or None, what


def memory_rows(grid: Grid) -> list[dict[str, Any]]:
    """Per job class: the memory its jobs request and an estimate of what the largest one holds."""
    rows = []
    for rule in ("base_model", "adapt", "finetune", "encode_corpus", "encode_queries"):
        jobs = grid.rule(rule, launched=True)
        if not jobs:
            continue
        requested = max(j.request.mem_gb for j in jobs if j.request)
        estimate, counts = None, "not estimated"
        if rule in ("adapt", "finetune"):
            tasks = max(j.request.tasks for j in jobs if j.request)
            dtype = grid.adapted_dtype if rule == "adapt" else grid.finetuned_dtype
            weights = model_bytes(grid.parameters, dtype)
            if weights is not None:
                estimate = tasks * weights
                counts = (
                    f"{tasks} task(s) x the weights ({human(weights)}, {dtype}) while each loads its copy"
                )
        elif rule != "base_model":
            estimate, counts = encode_memory(grid, rule)
        rows.append(
            {
                "class": rule,
                "jobs": len(jobs),
                "requested_gb": requested,
                "estimate_bytes": estimate,
                "estimate_counts": counts,
                "over_request": estimate is not None and requested > 0 and estimate > requested * 1e9,
            }
        )
    if grid.rule("search"):
        estimate, counts = search_memory(grid)
        launched = [j for j in grid.rule("search", launched=True) if j.request]
        requested = max(j.request.mem_gb for j in launched) if launched else None
        rows.append(
            {
                "class": "search",
                "jobs": len(grid.rule("search")),
                "requested_gb": requested,
                "estimate_bytes": estimate,
                "estimate_counts": counts if launched else f"{counts}; not launched: runs {NOT_LAUNCHED}",
                "over_request": bool(requested) and estimate is not None and estimate > requested * 1e9,
            }
        )
    return rows


def plan_notes(grid: Grid, stats: dict[str, int], embeddings: list[dict[str, Any]]) -> list[str]:
    from llara import grid as vocabulary

    notes = []
    counted = {rule: len(jobs) for rule, jobs in grid.by_rule.items()}
    if stats and {k: v for k, v in stats.items() if k != "total"} != counted:
        notes.append(
            f"the jobs read from the dry run ({counted}) differ from its Job stats ({stats}): a parse problem"
        )
    unknown = sum(e["jobs_of_unknown_size"] for e in embeddings)
    if unknown:
        notes.append(
            f"{unknown} encoding jobs have an unknown size (dataset or model not on disk): not in the totals"
        )
    if grid.base is not None and grid.base.parameters is None:
        notes.append(f"base model {grid.base_ref}: {grid.base.source}; model sizes are unknown")
    fetched = set(grid.fetched.values())
    if is_hub_id(grid.base_ref) and not local_path(grid.base_ref) and grid.base_ref not in fetched:
        notes.append(
            f"base_model.source {grid.base_ref} is a hub id: every job loads it from the hub, and compute nodes "
            "usually have no network; fetch it once on the login node (python -m llara.fetch) and set "
            "base_model.source to the folder"
        )
    encoders = {
        j.option("--model") or ""
        for j in grid.rule("encode_corpus", launched=True) + grid.rule("encode_queries", launched=True)
        if j.request and not j.wildcards.get("system", "").startswith("llara/")
    }
    hub = sorted(m for m in encoders if is_hub_id(m) and not local_path(m) and m not in fetched)
    if hub:
        notes.append(
            f"encoding jobs load {', '.join(hub)} from the hub (checkpoints.*.model / evaluate.baselines.hf): "
            "compute nodes usually have no network; fetch each once on the login node (python -m llara.fetch) "
            "and name the folder instead"
        )
    idle = [
        j
        for j in grid.rule("adapt", launched=True)
        if not vocabulary.variant(j.wildcards.get("variant", "none")).trains and j.request and j.request.gpus
    ]
    if idle:
        names = ", ".join(sorted({j.wildcards["variant"] for j in idle}))
        notes.append(
            f"{len(idle)} adapt job(s) of a variant that trains nothing ({names}) request the adapt resources "
            "in full (their GPU-hours are counted above): they only add the slot tokens and save the model"
        )
    return notes


def build_plan(
    files: Sequence[Path], dry_run_text: str | None = None, dry_run_s: float = 0.0
) -> dict[str, Any]:
    """The budget of the grid ``files`` configure, as a JSON-able dict (:func:`render` prints it)."""
    config = load_config(files)
    if dry_run_text is None:
        dry_run_text, dry_run_s = dry_run(files)
    jobs, stats = parse_dry_run(dry_run_text), parse_job_stats(dry_run_text)
    grid = Grid(config, jobs)
    stages = stage_rows(grid, stats)
    embeddings = embedding_rows(grid)
    folders = folder_rows(grid)
    return {
        "config_files": [str(f) for f in files],
        "dry_run": {"jobs": len(jobs), "seconds": round(dry_run_s, 1)},
        "job_stats": stats,  # snakemake's own table, as it printed it
        "stages": stages,
        "gpu_hours_requested": round(sum(s["gpu_hours"] for s in stages), 2),
        "embedding_dtypes": sorted({d for e in embeddings for d in e["store_dtypes"]}),
        "embeddings": embeddings,
        "embeddings_bytes": sum(e["corpus_bytes"] + e["queries_bytes"] for e in embeddings),
        "model_folders": folders,
        "model_folders_bytes": sum(f["bytes_total"] or 0 for f in folders),
        "training_checkpoints": checkpoint_rows(grid),
        "memory": memory_rows(grid),
        "datasets": [asdict(s) for s in grid.sizes.values()],
        "notes": plan_notes(grid, stats, embeddings),
    }


# ---- output -------------------------------------------------------------------------------------
def _values(values: Sequence[Any]) -> str:
    if not values:
        return "-"
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render(plan: dict[str, Any]) -> str:
    """The plan as markdown: one table per section."""
    out = [
        f"# Plan: {', '.join(plan['config_files'])}",
        "",
        f"The DAG of a fresh run: {plan['dry_run']['jobs']} jobs (snakemake --dry-run, {plan['dry_run']['seconds']} s). "
        "Sizes in decimal units (GB = 10^9 bytes).",
        "",
        "## Jobs per stage",
        "",
    ]
    rows = []
    for s in plan["stages"]:
        launched = s["launched"] > 0
        rows.append(
            [
                s["rule"],
                s["jobs"],
                s["launched"] if launched else "-",
                f"{_values(s['nodes'])} x {_values(s['gpus_per_node'])}" if launched else "-",
                f"{_values(s['tasks_per_node'])} x {_values(s['cpus_per_task'])}" if launched else "-",
                _values(s["mem_gb"]) if launched else "-",
                _values(s["time_min"]) if launched else "-",
                f"{s['gpu_hours']:,.1f}" if launched else "-",
                f"{s['cpu_hours']:,.1f}" if launched else "-",
            ]
        )
    rows.append(
        [
            "**total**",
            plan["dry_run"]["jobs"],
            sum(s["launched"] for s in plan["stages"]),
            "",
            "",
            "",
            "",
            f"**{plan['gpu_hours_requested']:,.1f}**",
            f"{sum(s['cpu_hours'] for s in plan['stages']):,.1f}",
        ]
    )
    out += _table(
        [
            "rule",
            "jobs",
            "via llara.launch",
            "nodes x GPUs per node",
            "tasks x CPUs per task",
            "memory per node (GB)",
            "time limit (min)",
            "GPU-hours requested",
            "CPU-hours requested",
        ],
        rows,
    )
    out += [
        "",
        "GPU-hours requested: nodes x GPUs x time limit, summed over the rule's jobs; an upper bound, the "
        "time limit (a job that ends early is billed less; one requeued at its time limit or by preemption "
        f"may cost more). Rules not run through llara.launch run {NOT_LAUNCHED}.",
        "",
        "## Disk: embeddings",
        "",
        f"Vectors only (the .ids.json files are small), stored as {'; '.join(plan['embedding_dtypes']) or '-'}.",
        "",
    ]
    rows = []
    for e in plan["embeddings"]:
        queries = (
            ", ".join(f"{v:,} {k}" if v is not None else f"? {k}" for k, v in e["queries"].items()) or "-"
        )
        rows.append(
            [
                e["dataset"],
                f"{e['passages']:,}" if e["passages"] is not None else "unknown",
                queries,
                e["systems"],
                _values(e["dims"]),
                human(e["corpus_bytes"]),
                human(e["queries_bytes"]),
                e["counts_from"],
            ]
        )
    corpus = sum(e["corpus_bytes"] for e in plan["embeddings"])
    rows.append(
        ["**total**", "", "", "", "", f"**{human(corpus)}**", human(plan["embeddings_bytes"] - corpus), ""]
    )
    out += _table(
        ["dataset", "passages", "queries", "systems", "dim", "corpus", "queries", "counts from"], rows
    )
    out += ["", f"Embeddings in all: **{human(plan['embeddings_bytes'])}**."]
    if plan["model_folders"]:
        out += ["", "## Disk: model folders", ""]
    rows = [
        [
            f["kind"],
            f["folders"],
            f"{f['parameters']:,}" if f["parameters"] is not None else "unknown",
            f["dtype"] or "unknown",
            human(f["bytes_each"]),
            human(f["bytes_total"]),
            f["note"],
        ]
        for f in plan["model_folders"]
    ]
    if rows:
        rows.append(["**total**", "", "", "", "", f"**{human(plan['model_folders_bytes'])}**", ""])
        out += _table(["folders", "count", "parameters", "dtype", "each", "total", "note"], rows)
    if plan["training_checkpoints"]:
        out += [
            "",
            "Training checkpoints, while a job runs (in `<output>.partial/checkpoints`, deleted when it "
            "finishes): save_total_limit of them plus one being written, each the trainable weights and "
            f"Adam's two moments in float32 ({ADAM_BYTES} B per trainable parameter; with DeepSpeed and 16-bit "
            f"weights also the float32 master copy, {MASTER_BYTES} B).",
            "",
        ]
        rows = [
            [
                t["rule"],
                t["jobs"],
                t["checkpoints_per_job"],
                human(t["bytes_per_checkpoint"]),
                human(t["bytes_per_job"]),
                human(None if t["bytes_per_job"] is None else t["bytes_per_job"] * t["jobs"]),
            ]
            for t in plan["training_checkpoints"]
        ]
        out += _table(
            ["rule", "jobs that train", "checkpoints kept", "each", "per running job", "all jobs at once"],
            rows,
        )
    out += ["", "## Peak memory per job class", ""]
    rows = [
        [
            m["class"],
            m["jobs"],
            _values([m["requested_gb"]]) if m["requested_gb"] is not None else "-",
            human(m["estimate_bytes"]) + (" **(over the request)**" if m["over_request"] else ""),
            m["estimate_counts"],
        ]
        for m in plan["memory"]
    ]
    out += _table(
        ["job class", "jobs", "requested per node (GB)", "estimate (largest job)", "the estimate counts"],
        rows,
    )
    if plan["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in plan["notes"]]
    return "\n".join(out) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise DataError(f"{message}; usage: python -m llara.plan [--configfile FILE ...] [--json]")


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m llara.plan", description=__doc__.split("\n")[0])
    p.add_argument(
        "--configfile",
        nargs="+",
        type=Path,
        default=[DEFAULT_CONFIG],
        help="config files, merged in order as snakemake --configfile does (default: config/config.yaml)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of markdown")
    args = p.parse_args(argv)
    files = [f.resolve() for f in args.configfile]
    plan = build_plan(files)
    print(
        json.dumps(plan, indent=2, default=list) if args.json else render(plan),
        end="" if not args.json else "\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
