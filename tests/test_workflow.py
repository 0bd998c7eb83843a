"""The Snakemake grid: config validation, dry runs of every shipped config, a real micro grid, reruns."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "HF_HUB_OFFLINE": "1",
}
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def snakemake(
    workdir: Path, config: dict | Path, *args: str, snakefile: Path = REPO / "Snakefile", timeout=600
):
    if isinstance(config, dict):
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        config = path
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_every_shipped_config_plans(tmp_path, name):
    r = snakemake(tmp_path, REPO / "config" / name, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout)
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    n_systems = len(cfg["grid"]["variants"]) * len(cfg["grid"]["prompt_styles"]) * len(cfg["grid"]["seeds"])
    baselines = cfg["evaluate"].get("baselines", {})
    n_baselines = int(baselines.get("bm25", True)) + len(baselines.get("hf", {}))
    assert counts["adapt"] == counts["finetune"] == n_systems
    assert counts["score"] == n_systems * len(cfg["evaluate"]["datasets"])
    assert counts.get("score_baseline", 0) == n_baselines * len(cfg["evaluate"]["datasets"])
    assert counts["tables"] == 1


def test_default_grid_job_counts(tmp_path):
    counts = job_counts(snakemake(tmp_path, DEFAULT, "-n").stdout)
    # 4 variants + bm25 + minilm on 1 dataset; 4 LLaRA + 1 plain encoder are encoded; baselines have
    # their own rules (paths results/<stage>/baseline/<name>/...), LLaRA systems llara/<style>/...
    assert counts == {
        "synthetic": 1,
        "pretrain_pairs": 1,
        "base_model": 1,
        "mine_negatives": 1,
        "adapt": 4,
        "finetune": 4,
        "encode_corpus": 4,
        "encode_corpus_baseline": 1,
        "encode_queries": 4,
        "encode_queries_baseline": 1,
        "search": 4,
        "search_baseline": 1,
        "bm25": 1,
        "score": 4,
        "score_baseline": 2,
        "tables": 1,
        "all": 1,
        "total": 36,
    }


def test_no_ruleorder_and_every_heavy_rule_is_benchmarked():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert "ruleorder:" not in rules + (REPO / "Snakefile").read_text()
    for rule in ("base_model", "adapt", "finetune", "encode_corpus", "encode_queries", "bm25", "search"):
        body = rules.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0].split("\nuse rule ", 1)[0]
        assert "    benchmark:" in body, rule
        if rule not in ("bm25", "search"):  # the heavy stages run through the launcher: a cost record
            assert "--record {output.job}" in body, rule


@pytest.mark.parametrize(
    "path, bad, message",
    [
        ((), {"adapt_steps": 3}, "adapt_steps"),
        (("adapt",), {"lerning_rate": 1e-3}, "lerning_rate"),
        (("evaluate", "datasets", "synthetic"), {"sorce": "x"}, "sorce"),
        (("launcher", "resources", "adapt"), {"gpu": 1}, "gpu"),
        (("grid",), {"variants": ["none", "both"]}, "both"),
        (("grid", "prompts"), {"joint": {"query": "ebar", "pasage": "ebae"}}, "pasage"),
        (("grid", "prompts", "none"), {"query": "summary"}, "summary"),
        (
            ("grid", "prompts", "ebae"),
            {"query": "ebar"},
            "grid.prompts.ebae.query is 'ebar', but the ebae variant's adaptation never trains the EBAR "
            "slot tokens (only ebae)",
        ),
        (
            ("grid", "prompts", "ebar"),
            {"passage": "ebae"},
            "grid.prompts.ebar.passage is 'ebae', but the ebar variant's adaptation never trains the EBAE",
        ),
        (
            ("finetune",),
            {"query_prompt": "ebar"},
            "finetune.query_prompt is gone: the prompts are set per variant in grid.prompts.<variant>.query",
        ),  # fmt: skip
        (("finetune",), {"passage_prompt": "ebae"}, "grid.prompts.<variant>.passage"),
        (("evaluate", "baselines", "hf"), {"bm25": {"model": "x"}}, "the name bm25 is the BM25 baseline's"),
    ],
)
def test_config_errors_name_the_key(tmp_path, path, bad, message):
    cfg = copy.deepcopy(DEFAULT)
    node = cfg
    for key in path:
        node = node[key]
    node.update(bad)
    r = snakemake(tmp_path, cfg, "-n")
    assert r.returncode != 0
    assert message in r.stderr + r.stdout


def test_untrained_prompts_are_allowed_for_none_and_reach_every_stage(tmp_path):
    """`none` trains no slots, so any prompt kind may be set there; the assignment goes to
    fine-tuning, encoding and scoring (provenance)."""
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"]["prompts"]["none"] = {"query": "ebae", "passage": "ebar"}
    r = snakemake(tmp_path, cfg, "-n", "-p")
    shown = r.stdout + r.stderr
    assert r.returncode == 0, shown[-3000:]
    commands = [line for line in shown.splitlines() if line.startswith("Shell command:")]

    def command(stage: str, variant: str) -> str:
        (found,) = [c for c in commands if f"llara.{stage} " in c and f"/{variant}/seed0" in c]
        return found

    assert "--query_prompt ebae --passage_prompt ebar" in command("finetune", "none")
    assert "--query_prompt ebae --passage_prompt ebae" in command("finetune", "ebae")
    assert "--query_prompt ebar --passage_prompt ebar" in command("finetune", "ebar")
    assert "--query-prompt ebar --passage-prompt ebae" in command("score", "joint")
    assert "--query-prompt ebae --passage-prompt ebar" in command("score", "none")
    encodes = [c for c in commands if "llara.encode " in c and "/none/seed0/" in c]
    assert len(encodes) == 2 and all("--query-prompt ebae --passage-prompt ebar" in c for c in encodes)
    assert not any("--query-prompt" in c for c in commands if "baseline/" in c)  # baselines have none


def test_finetune_dataset_must_be_evaluated(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["finetune"]["data"]["dataset"] = "scifact"
    r = snakemake(tmp_path, cfg, "-n")
    assert r.returncode != 0
    assert "finetune.data.dataset 'scifact' is not a key of evaluate.datasets" in r.stdout + r.stderr


def micro_config() -> dict:
    """The default grid shrunk to seconds per job (same DAG, tiny sizes)."""
    cfg = copy.deepcopy(DEFAULT)
    cfg["synthetic"] = {
        "seed": 0,
        "n_articles": 60,
        "n_corpus_articles": 12,
        "n_train_queries": 12,
        "n_test_queries": 8,
    }
    cfg["pretrain"].update(chunk_words=32, max_rows=40)
    cfg["base_model"]["tiny"] = {
        "vocab_size": 400,
        "hidden_size": 32,
        "layers": 1,
        "heads": 2,
        "intermediate_size": 64,
        "block_size": 32,
        "batch_size": 4,
        "max_steps": 3,
    }
    cfg["adapt"].update(
        max_steps=2, per_device_train_batch_size=4, max_length=160, target_max_length=64, save_steps=1
    )
    cfg["finetune"]["data"].update(num_negs=2, depth=10)
    cfg["finetune"].update(
        max_steps=2, per_device_train_batch_size=2, group_size=2, lora_r=2, lora_alpha=4, save_steps=1
    )
    cfg["evaluate"].update(batch_size=16, top_k=20)
    cfg["evaluate"]["baselines"] = {"bm25": True}
    cfg["launcher"]["poll_s"] = 0.2
    return cfg


@pytest.fixture(scope="module")
def micro_grid(tmp_path_factory):
    """A private copy of the workflow (so a test may edit a stage's code) run once for real."""
    root = tmp_path_factory.mktemp("grid")
    repo = root / "repo"
    repo.mkdir()
    shutil.copy(REPO / "Snakefile", repo / "Snakefile")
    shutil.copytree(REPO / "workflow", repo / "workflow")
    shutil.copytree(REPO / "llara", repo / "llara", ignore=shutil.ignore_patterns("__pycache__"))
    work = root / "work"
    work.mkdir()
    r = snakemake(work, micro_config(), "--cores", "2", snakefile=repo / "Snakefile", timeout=900)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
    return repo, work


@pytest.mark.slow
def test_micro_grid_runs_end_to_end_and_reruns_what_changed(micro_grid):
    repo, work = micro_grid
    long = pd.read_parquet(work / "results" / "tables" / "long.parquet")
    assert set(long["variant"]) == {"none", "ebae", "ebar", "joint", "bm25"}
    prompts = long.drop_duplicates("variant").set_index("variant")[["query_prompt", "passage_prompt"]]
    assert prompts.loc["ebae"].tolist() == ["ebae", "ebae"] and prompts.loc["bm25"].tolist() == ["-", "-"]
    assert (work / "results" / "tables" / "ndcg10.md").read_text().count("|") > 10
    # cost: CPU-hours on this CPU-only machine, said in the header; every LLaRA system has its hours
    cost_md = (work / "results" / "tables" / "cost.md").read_text()
    assert "adaptation CPU-h / wall-h (no GPU: CPU-hours)" in cost_md and "GPU-h" not in cost_md
    cost = pd.read_csv(work / "results" / "tables" / "cost.csv").set_index("variant")
    llara = cost.loc[["none", "ebae", "ebar", "joint"]]
    assert (llara["adapt_wall_hours"] > 0).all() and (llara["finetune_wall_hours"] > 0).all()
    assert (llara["encode_passages_per_s"] > 0).all() and (llara["adapt_gpus"] == 0).all()
    job = work / "results" / "benchmarks" / "adapt" / "llara" / "released" / "joint" / "seed0.job.json"
    assert '"source": "launcher"' in job.read_text()
    run = lambda cfg, *a: job_counts(snakemake(work, cfg, "-n", *a, snakefile=repo / "Snakefile").stdout)  # noqa: E731

    assert run(micro_config()) == {}  # nothing to do

    # a fine-tuning value reruns fine-tuning and what follows it, not adaptation
    cfg = micro_config()
    cfg["finetune"]["learning_rate"] = 5e-4
    counts = run(cfg)
    assert counts["finetune"] == 4 and "adapt" not in counts and "base_model" not in counts
    assert counts["encode_corpus"] == 4 and counts["score"] == 4 and counts["tables"] == 1

    # switching the launcher (local -> debug) reruns nothing: launch options are resources, not params
    cfg = micro_config()
    cfg["launcher"]["cluster"] = "debug"
    assert run(cfg) == {}

    # the code of a stage changes: that stage and what follows rerun (tables: imported by no other stage)
    with open(repo / "llara" / "tables.py", "a") as fh:
        fh.write("\n# a change to the tables stage\n")
    assert run(micro_config()) == {"tables": 1, "all": 1, "total": 2}
    # search is imported by mining, BM25 and scoring too: all of them and what follows rerun
    with open(repo / "llara" / "search.py", "a") as fh:
        fh.write("\n# a change to the search stage\n")
    counts = run(micro_config())
    assert counts["search"] == 4 and counts["mine_negatives"] == 1 and counts["bm25"] == 1
    assert "adapt" not in counts and "base_model" not in counts

    # -R and --until behave as Snakemake users expect
    counts = run(micro_config(), "--until", "adapt", "-R", "adapt")
    assert counts["adapt"] == 4 and "finetune" not in counts
