"""llara.plan: the budget read off the real DAG. The paper config's plan is checked against an
independent ``snakemake -n`` (its Job stats) and a hand computation of the GPU-hours; the sizes it
uses are checked against what the generator writes and what a local folder holds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_bad_input, run_cli, shared_path

from llara import plan

REPO = plan.REPO
PAPER = REPO / "config" / "paper.yaml"
WRITTEN = (".snakemake", "results", "logs", "resources/beir", "resources/synthetic", "resources/finetune")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Three processes at once (each a few seconds, mostly Snakemake building its DAG): the paper
    plan (markdown), the default plan (--json) and an independent ``snakemake -n`` of the paper config.
    Also records which of the paths a run would write existed before, for the nothing-written test."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmds = {
        "paper": [sys.executable, "-m", "llara.plan", "--configfile", "config/paper.yaml"],
        "default": [sys.executable, "-m", "llara.plan", "--json"],
        "stats": [
            plan.snakemake_executable(),
            "-s", str(plan.SNAKEFILE),
            "--configfile", str(PAPER),
            "--directory", str(tmp_path_factory.mktemp("snakemake-n")),
            "-n", "--quiet", "rules",
        ],
    }  # fmt: skip
    before = {name: (REPO / name).exists() for name in WRITTEN}
    procs = {
        key: subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for key, cmd in cmds.items()
    }
    done = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[key] = subprocess.CompletedProcess(cmds[key], proc.returncode, out, err)
    done["before"] = before  # type: ignore[assignment]
    return done


def table(markdown: str, section: str) -> list[list[str]]:
    """The rows (cells) of the first table under ``## <section>``."""
    lines = markdown.split(f"## {section}\n", 1)[1].splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    rows = [line for line in lines[:end] if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in rows[1:]]  # past the header


def job_stats(text: str) -> dict[str, int]:
    """snakemake's own Job stats table, read here without llara.plan."""
    block = text.split("Job stats:\n", 1)[1].split("\n\n", 1)[0]
    return {
        parts[0]: int(parts[1])
        for parts in (line.split() for line in block.splitlines())
        if len(parts) == 2 and parts[1].isdigit()
    }


# ---- the paper config -----------------------------------------------------------------------------
@pytest.mark.extended
def test_paper_plan_counts_equal_snakemakes_job_stats(runs):
    assert runs["paper"].returncode == 0, runs["paper"].stderr[-3000:]
    assert runs["stats"].returncode == 0, runs["stats"].stderr[-3000:]
    stats = job_stats(runs["stats"].stdout + runs["stats"].stderr)
    jobs = {
        row[0]: int(row[1]) for row in table(runs["paper"].stdout, "Jobs per stage") if row[0] != "**total**"
    }
    for rule in ("encode_corpus", "adapt", "finetune", "search"):
        assert jobs[rule] == stats[rule], rule
    assert jobs == {k: v for k, v in stats.items() if k != "total"}
    total = next(row for row in table(runs["paper"].stdout, "Jobs per stage") if row[0] == "**total**")
    assert int(total[1]) == stats["total"]


def test_paper_gpu_hours_are_the_hand_computation(runs):
    config = yaml.safe_load(PAPER.read_text())
    resources = config["launcher"]["resources"]
    stats = job_stats(runs["stats"].stdout + runs["stats"].stderr)
    rows = {row[0]: row for row in table(runs["paper"].stdout, "Jobs per stage")}

    def by_hand(stage: str, jobs: int) -> float:
        r = resources[stage]
        return jobs * r.get("nodes", 1) * r["gpus"] * r["time_min"] / 60

    # the three variants that train request launcher.resources.adapt, none's pass-through the
    # passthrough stage (no GPU): 3 x 1 x 8 x 2880 / 60
    trains = stats["adapt"] - 1
    adapt = by_hand("adapt", trains) + by_hand("passthrough", 1)
    assert adapt == 1152.0
    assert rows["adapt"][7] == f"{adapt:,.1f}"
    assert rows["finetune"][7] == f"{by_hand('finetune', stats['finetune']):,.1f}"
    encode = by_hand("encode", stats["encode_corpus"] + stats["encode_queries"])
    search = by_hand("search", stats["search"])  # a job per system and dataset, one GPU each
    assert rows["search"][7] == f"{search:,.1f}"
    # RepLLaMA: one fine-tuning job, the finetune stage's request
    total = adapt + by_hand("finetune", stats["finetune"] + stats["finetune_retriever"]) + encode + search
    assert rows["**total**"][7] == f"**{total:,.1f}**"


def test_paper_plan_sizes(runs):
    out = runs["paper"].stdout
    embeddings = {row[0]: row for row in table(out, "Disk: embeddings")}
    assert embeddings["msmarco"][1] == "8,841,823" and embeddings["msmarco"][2] == "6,980 dev"
    assert embeddings["msmarco"][3] == "10" and embeddings["msmarco"][4] == "4096"
    # 8 systems x 8,841,823 passages x 4096 x the stored dtype's bytes
    stored = re.search(r"Vectors only .*, stored as (\w+) ", out).group(1)
    assert embeddings["msmarco"][5] == plan.human(10 * 8_841_823 * 4096 * plan.DTYPE_BYTES[stored])
    folders = {row[0]: row for row in table(out, "Disk: model folders")}
    assert folders["adapted models (adapt)"][1:4] == ["4", "6,738,415,616", "bfloat16"]
    assert "LoRA adapters only" in folders["fine-tuned models (finetune)"][6]
    assert "fetched by rule fetch_model" in folders["base model"][6]  # the hub id, fetched once
    memory = {row[0]: row for row in table(out, "Peak memory per job class")}
    assert memory["encode_corpus"][2] == "64" and "(over the request)" not in memory["encode_corpus"][3]


def test_a_dry_run_writes_nothing_in_the_repository(runs):
    assert {name: (REPO / name).exists() for name in WRITTEN} == runs["before"]


# ---- the default config ---------------------------------------------------------------------------
def test_default_plan_json(runs):
    assert runs["default"].returncode == 0, runs["default"].stderr[-3000:]
    result = json.loads(runs["default"].stdout)
    assert result["config_files"] == [str(plan.DEFAULT_CONFIG)]
    stages = {s["rule"]: s for s in result["stages"]}
    assert stages["adapt"]["jobs"] == 8 and stages["adapt"]["launched"] == 8  # 4 variants x 2 seeds
    assert result["gpu_hours_requested"] == 0
    config = yaml.safe_load(plan.DEFAULT_CONFIG.read_text())
    (synthetic,) = result["embeddings"]
    assert synthetic["passages"] == 4 * config["synthetic"]["n_corpus_articles"]
    assert synthetic["queries"] == {"test": config["synthetic"]["n_test_queries"]}
    assert synthetic["dims"] == [config["base_model"]["tiny"]["hidden_size"], 384]  # the tiny Llama, MiniLM
    assert synthetic["jobs_of_unknown_size"] == 0
    assert result["notes"] == []
    assert plan.render(result).startswith("# Plan: ")


# ---- pieces -----------------------------------------------------------------------------------------
DRY_RUN = """Building DAG of jobs...
Job stats:
job         count
--------  -------
adapt           1
tables          1
total           2

[Wed Dec  2 18:56:23 2026]
rule adapt:
    output: results/adapt/released/joint/seed0/model, results/benchmarks/adapt/x.job.json
    log: logs/adapt/released/joint/seed0.log
    jobid: 5
    wildcards: style=released, variant=joint, seed=0
    resources: tmpdir=/tmp, launch=python -m llara.launch ...
Shell command: OMP_NUM_THREADS=1 python -m llara.launch --cluster slurm --name adapt-x --folder logs/jobs/x --poll-s 30 --nodes 2 --tasks 8 --gpus 8 --cpus 8 --mem-gb 480 --time-min 90 --exclusive --record r.json -- python -m llara.adapt --model_name_or_path 'my model' --variant joint > logs/adapt.log 2>&1

[Wed Dec  2 18:56:23 2026]
localrule tables:
    input: a, b
    output: results/tables/ndcg10.md
    jobid: 1
Shell command: python -m llara.tables --a 1
    --b 2
This was a dry-run (flag -n). The order of jobs does not reflect the order of execution.
"""


def test_parse_dry_run_reads_jobs_and_launch_requests():
    adapt, tables = plan.parse_dry_run(DRY_RUN)
    assert adapt.rule == "adapt" and adapt.wildcards == {"style": "released", "variant": "joint", "seed": "0"}
    assert adapt.output[0] == "results/adapt/released/joint/seed0/model"
    # --nodes and --exclusive are unknown to llara.launch's parser here: read by the regex fallback
    assert adapt.request == plan.Request(nodes=2, tasks=8, gpus=8, cpus=8, mem_gb=480.0, time_min=90)
    assert adapt.request.gpu_hours == 2 * 8 * 90 / 60
    assert adapt.command[:3] == ["python", "-m", "llara.adapt"] and adapt.command[-1] == "joint"
    assert adapt.option("--model_name_or_path") == "my model"
    assert tables.rule == "tables" and tables.request is None
    assert tables.shell == "python -m llara.tables --a 1\n    --b 2"
    assert plan.parse_job_stats(DRY_RUN) == {"adapt": 1, "tables": 1, "total": 2}


def test_launch_request_with_the_launchers_own_parser():
    shell = (
        "python -m llara.launch --cluster slurm --name e --folder f --poll-s 30 --tasks 1 --gpus 1 --cpus 8 "
        "--mem-gb 64 --time-min 600 --partition gpu --gpu-request gpus --record r -- python -m llara.encode "
        "--model m --output $(dirname x.npy) > log 2>&1"
    )
    request, command = plan.launch_request(shell)
    assert request == plan.Request(tasks=1, gpus=1, cpus=8, mem_gb=64.0, time_min=600, partition="gpu")
    assert command == ["python", "-m", "llara.encode", "--model", "m", "--output", "$(dirname", "x.npy)"]
    assert plan.launch_request("python -m llara.search --k 10") == (None, [])


def test_synthetic_sizes_match_what_the_generator_writes(tmp_path):
    from llara.synthetic import generate

    syn = {
        "n_articles": 30,
        "n_corpus_articles": 12,
        "n_train_queries": 5,
        "n_test_queries": 6,
        "n_pretrain_queries": 7,
    }
    generate(0, None, tmp_path / "beir", pretrain_beir_out=tmp_path / "pre", **syn)
    config = {"synthetic": syn, "evaluate": {"datasets": {"synthetic": {"source": "synthetic"}}}}
    size = plan.dataset_size("synthetic", "resources/synthetic/beir", ["test", "train"], config)
    counted = plan.dataset_size(
        "x", str(tmp_path / "beir"), ["test", "train"], {"evaluate": {"datasets": {}}}
    )
    assert (
        (size.passages, size.queries) == (counted.passages, counted.queries) == (48, {"test": 6, "train": 5})
    )
    pre = plan.dataset_size("synthetic-pretrain", "resources/synthetic/pretrain-beir", ["train"], config)
    pre_counted = plan.dataset_size("x", str(tmp_path / "pre"), ["train"], {"evaluate": {"datasets": {}}})
    assert (pre.passages, pre.queries) == (pre_counted.passages, pre_counted.queries) == (120, {"train": 7})


def test_a_local_beir_folder_is_counted(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a"}\n{"_id": "b"}\n\n{"_id": "c"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq1\tb\t1\nq2\tc\t1\n")
    config = {"evaluate": {"datasets": {"mine": {"source": "path", "path": str(tmp_path)}}}}
    size = plan.dataset_size("mine", str(tmp_path), ["test", "dev"], config)
    assert (size.passages, size.queries) == (3, {"dev": None, "test": 2})
    assert size.source == f"counted in {tmp_path}"


def test_the_published_scifact_counts_match_the_local_copy():
    folder = shared_path("data", "beir", "scifact")
    known = plan.known_sizes()["datasets"]["sizes"]["scifact"]
    counted = plan.dataset_size("x", str(folder), ["test"], {"evaluate": {"datasets": {}}})
    assert (counted.passages, counted.queries) == (known["passages"], known["queries"])


def test_model_shapes_from_a_folder_and_from_the_table(tmp_path):
    from safetensors.numpy import save_file

    shape = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "torch_dtype": "bfloat16", **shape})
    )
    save_file(
        {"a": np.zeros((3, 8), np.float32), "b": np.zeros(5, np.float32)}, str(tmp_path / "model.safetensors")
    )
    info = plan.model_info(str(tmp_path), {})
    assert (info.hidden_size, info.parameters, info.dtype) == (8, 29, "bfloat16")
    llama = plan.model_info("meta-llama/Llama-2-7b-hf", {})
    assert plan.llama_parameters(llama.shape) == llama.parameters == 6_738_415_616
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # r x (in + out) per projection: 4 x (4096 + 4096) + 3 x (4096 + 11008), 32 layers, r = 64
    assert plan.lora_parameters(llama.shape, 64, targets) == 32 * 64 * (4 * 8192 + 3 * 15104)
    assert plan.model_info("someone/unknown-model", {}).parameters is None


# ---- bad input ------------------------------------------------------------------------------------
def test_a_missing_config_file_is_one_error_line(tmp_path):
    done = run_cli("plan", "--configfile", tmp_path / "nope.yaml")
    assert_bad_input(done, "nope.yaml", "no such config file")


def test_an_unknown_key_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["evaluate"]["bogus"] = 1
    bad.write_text(yaml.safe_dump(config))
    assert plan.main(["--configfile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "unknown key evaluate.bogus" in err and str(bad) in err


def test_a_failing_dry_run_is_one_error_line(monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "SNAKEFILE", Path(tempfile.gettempdir()) / "no-such-Snakefile")
    with pytest.raises(plan.DataError, match=r"snakemake --dry-run failed \(exit status 1\): .*snakemake -n"):
        plan.dry_run([plan.DEFAULT_CONFIG])


def test_a_model_the_dag_fetches_is_known_by_its_hub_id():
    config = {
        "grid": {"variants": ["joint"]},
        "base_model": {"source": "resources/models/llama-2-7b"},
        "evaluate": {"datasets": {}},
    }
    fetch = plan.Job(
        "fetch_model",
        shell="python -m llara.fetch --repo-id meta-llama/Llama-2-7b-hf --revision abc "
        "--output resources/models/llama-2-7b > logs/fetch_model.log 2>&1",
    )
    grid = plan.Grid(config, [fetch])
    assert grid.base.parameters == 6_738_415_616 and grid.base.hidden_size == 4096
    (base,) = plan.folder_rows(grid)
    assert base["note"].startswith("fetched by rule fetch_model") and base["bytes_each"] == 2 * 6_738_415_616
    assert plan.plan_notes(grid, {}, []) == []


def test_the_stored_dtype_comes_from_the_job_then_the_config_then_llara_encode():
    job = plan.Job("encode_corpus", command=["python", "-m", "llara.encode", "--store-dtype", "float32"])
    config = {"evaluate": {"embedding_dtype": "float32"}}
    assert plan.store_dtype(job, config)[0] == "float32"
    assert plan.store_dtype(plan.Job("encode_corpus"), config)[0] == "float32"
    assert plan.store_dtype(plan.Job("encode_corpus"), {"evaluate": {}})[0] == plan.ENCODE_STORE_DTYPE
