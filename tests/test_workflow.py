"""The Snakemake grid: config validation, dry runs of every shipped config, a real micro grid, reruns."""

from __future__ import annotations

import copy
import json
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
    workdir: Path,
    config: dict | Path,
    *args: str,
    snakefile: Path = REPO / "Snakefile",
    timeout=600,
    merge: bool = False,
):
    """Run Snakemake in ``workdir``; ``merge``: stderr into stdout, in the order a terminal shows them."""
    workdir.mkdir(parents=True, exist_ok=True)
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
    if merge:
        return subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, timeout=timeout
        )
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


def expected_counts(cfg: dict) -> dict[str, int]:
    """Jobs a config plans per rule, from its axes: models = variants x prompt styles x seeds, each
    scored zero-shot and fine-tuned once per negatives kind; checkpoints and baselines beside them."""
    grid = cfg.get("grid", {"variants": []})
    models = (
        len(grid["variants"]) * len(grid.get("prompt_styles", ["released"])) * len(grid.get("seeds", [0]))
    )
    stages = grid.get("stages", ["zeroshot", "finetuned"])
    data = cfg.get("finetune", {}).get("data", {})
    negatives = data.get("negatives", "bm25" if data.get("source") in ("beir_train", "synthetic") else "file")
    n_neg = 1 if isinstance(negatives, str) else len(negatives)
    finetuned = models * n_neg if "finetuned" in stages else 0
    # retrievers (RepLLaMA): one model per seed, fine-tuned like the variants, no adaptation
    retrievers = len(grid.get("retrievers", {})) * len(grid.get("seeds", [0])) if grid["variants"] else 0
    retrievers_tuned = retrievers * n_neg if "finetuned" in stages else 0
    systems = (models + retrievers) * ("zeroshot" in stages) + finetuned + retrievers_tuned
    datasets = len(cfg["evaluate"]["datasets"])
    baselines = cfg["evaluate"].get("baselines", {})
    n_baselines = int(baselines.get("bm25", True)) + len(baselines.get("hf", {}))
    return {
        "adapt": models,
        "finetune": finetuned,
        "finetune_retriever": retrievers_tuned,
        "export_st": finetuned + retrievers_tuned,
        # one score rule for every system: LLaRA systems, released checkpoints, baselines
        "score": (systems + len(cfg.get("checkpoints", {})) + n_baselines) * datasets,
        "tables": 1,
    }


RECIPES = sorted(p.name for p in (REPO / "config").glob("*.yaml") if not p.name.startswith("site."))


@pytest.mark.extended  # a Snakemake dry run per config, 2-6 s each
@pytest.mark.parametrize("name", RECIPES)
def test_every_shipped_config_plans(tmp_path, name):
    r = snakemake(tmp_path, REPO / "config" / name, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout)
    want = expected_counts(yaml.safe_load((REPO / "config" / name).read_text()))
    assert {rule: counts.get(rule, 0) for rule in want} == want


def test_default_grid_job_counts(tmp_path):
    counts = job_counts(snakemake(tmp_path, DEFAULT, "-n").stdout)
    # 4 variants x 2 seeds, each scored zero-shot (its adapted checkpoint) and fine-tuned (BM25 negatives
    # mined per seed), + bm25 and minilm on 1 dataset; a sentence-transformers folder beside each
    # fine-tuned checkpoint; RepLLaMA per seed, zero-shot (the base model) and fine-tuned from the base
    assert DEFAULT["grid"]["seeds"] == [0, 1] and list(DEFAULT["grid"]["retrievers"]) == ["repllama"]
    assert counts == {
        "synthetic": 1,
        "synthetic_pretrain": 1,  # the fine-tuning set: queries about the pre-training articles
        "pretrain_pairs": 1,
        "base_model": 1,
        "mine_bm25": 2,
        "adapt": 8,
        "finetune": 8,
        "finetune_retriever": 2,
        "export_st": 10,
        "encode_corpus": 21,  # 16 LLaRA systems + 4 RepLLaMA + minilm: one rule over {system}
        "encode_queries": 21,
        "search": 21,
        "bm25": 1,
        "score": 22,
        "tables": 1,
        "all": 1,
        "total": 122,
    }


def shell_commands(r: subprocess.CompletedProcess) -> list[str]:
    shown = r.stdout + r.stderr
    assert r.returncode == 0, shown[-3000:]
    return [line for line in shown.splitlines() if line.startswith("Shell command:")]


def test_zero_shot_encodes_the_adapted_checkpoint_with_the_variant_prompts(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"]["seeds"] = [0]
    commands = shell_commands(snakemake(tmp_path, cfg, "-n", "-p"))
    encodes = [c for c in commands if "llara.encode " in c and "/ebae/seed0/" in c]
    zeroshot = [c for c in encodes if "/zeroshot/" in c]
    finetuned = [c for c in encodes if "/finetuned/bm25/" in c]
    assert len(zeroshot) == len(finetuned) == 2  # corpus and queries
    assert all("--model results/adapt/released/ebae/seed0/model " in c for c in zeroshot)
    assert all("--model results/finetune/released/ebae/seed0/bm25/model " in c for c in finetuned)
    # the prompts are the checkpoint's (llara_prompt.json, written by adaptation): never repeated
    assert not any("--prompt-style" in c or "--query-prompt" in c or "--passage-prompt" in c for c in encodes)
    (adapt,) = [c for c in commands if "llara.adapt " in c and "--variant ebae " in c]
    assert "--prompt_style released --query_prompt ebae --passage_prompt ebae " in adapt
    (finetune,) = [c for c in commands if "llara.finetune " in c and "/ebae/seed0/" in c]
    assert "--prompt_style" not in finetune and "--query_prompt" not in finetune
    (score,) = [c for c in commands if "llara.score " in c and "/ebae/seed0/zeroshot/" in c]
    assert "--output results/metrics/llara/released/ebae/seed0/zeroshot/synthetic/test.json" in score
    assert "--encoding results/encode/llara/released/ebae/seed0/zeroshot/synthetic/queries-test " in score
    assert not any(f in score for f in ("--variant", "--prompt-style", "--query-prompt", "--seed"))
    (st,) = [c for c in commands if "llara.st " in c and "/ebae/" in c]
    assert st.endswith(
        "python -m llara.st --model results/finetune/released/ebae/seed0/bm25/model --output "
        "results/finetune/released/ebae/seed0/bm25/model-st --reference --overwrite > "
        "logs/export_st/released/ebae/seed0/bm25.log 2>&1"
    )


def test_seeds_reach_adaptation_fine_tuning_and_mining(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"].update(variants=["none", "ebae"], seeds=[3, 7], stages=["finetuned"])
    commands = shell_commands(snakemake(tmp_path, cfg, "-n", "-p"))
    for seed in (3, 7):
        (adapt,) = [c for c in commands if "llara.adapt " in c and f"/ebae/seed{seed}/" in c]
        assert f"--seed {seed} " in adapt
        (finetune,) = [c for c in commands if "llara.finetune " in c and f"/ebae/seed{seed}/" in c]
        assert f"--seed {seed} " in finetune
        assert (
            f"--train_file results/finetune_data/bm25/seed{seed}/synthetic-pretrain-train.jsonl " in finetune
        )
        (mine,) = [c for c in commands if "llara.mine " in c and f"/seed{seed}/" in c]
        assert f"--negatives bm25 --num-negs 7 --depth 50 --seed {seed} " in mine


@pytest.mark.extended
def test_negatives_axis_crosses_the_variants(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"].update(variants=["none", "joint"], seeds=[0])
    cfg["finetune"]["data"]["negatives"] = ["bm25", "dense", "none"]
    r = snakemake(tmp_path, cfg, "-n", "-p")
    commands = shell_commands(r)
    counts = job_counts(r.stdout)
    assert counts["finetune"] == 2 * 3 and counts["finetune_retriever"] == 3 and counts["export_st"] == 9
    # dense: none, joint and RepLLaMA each mine with their own zero-shot run
    assert counts["mine_bm25"] == 1 and counts["no_negatives"] == 1 and counts["mine_dense"] == 3
    # zero-shot scores (2 + RepLLaMA) + fine-tuned scores (3 x 3); the train split is searched for dense
    # mining only (+ bm25 and minilm: one score rule for every system, one search rule for every encoder)
    assert counts["score"] == 12 + 2 and counts["search"] == 12 + 3 + 1
    (rep_dense,) = [c for c in commands if "llara.finetune " in c and "retriever/repllama/seed0/dense" in c]
    assert "--train_file results/finetune_data/dense/retriever/repllama/seed0/" in rep_dense
    (rep_mine,) = [c for c in commands if "llara.mine " in c and "--run results/runs/retriever/" in c]
    assert "--run results/runs/retriever/repllama/seed0/zeroshot/synthetic-pretrain/train.trec " in rep_mine
    finetunes = {
        c.split("--name finetune-released-")[1].split()[0]: c
        for c in commands
        if "--name finetune-released-" in c
    }
    assert "--group_size 2 " in finetunes["joint-0-bm25"] and "--group_size 2 " in finetunes["joint-0-dense"]
    assert "--group_size 1 " in finetunes["joint-0-none"]  # in-batch negatives only
    assert (
        "--train_file results/finetune_data/none/synthetic-pretrain-train.jsonl " in finetunes["joint-0-none"]
    )
    dense = "results/finetune_data/dense/llara/released/joint/seed0/synthetic-pretrain-train.jsonl"
    assert f"--train_file {dense} " in finetunes["joint-0-dense"]
    (mine,) = [c for c in commands if f"--output {dense} " in c]
    assert (
        "--negatives run --run results/runs/llara/released/joint/seed0/zeroshot/synthetic-pretrain/train.trec"
        in mine
    )
    (none,) = [c for c in commands if "--negatives none" in c]
    assert "--seed" not in none  # nothing is sampled
    (queries,) = [
        c
        for c in commands
        if "llara.encode " in c and "/joint/seed0/zeroshot/synthetic-pretrain/queries-train" in c
    ]
    assert "--model results/adapt/released/joint/seed0/model " in queries and "--split train " in queries
    # a named encoder instead of each adapted model
    cfg["finetune"]["data"]["dense_encoder"] = "minilm"
    r = snakemake(tmp_path, cfg, "-n", "-p")
    commands, counts = shell_commands(r), job_counts(r.stdout)
    assert counts["mine_dense"] == 1  # one rule: the encoder's run, sampled with the seed (one here)
    (mine,) = [c for c in commands if "llara.mine " in c and "--negatives run" in c]
    assert "--run results/runs/baseline/minilm/synthetic-pretrain/train.trec " in mine and "--seed 0 " in mine


@pytest.mark.extended
def test_finetuning_sources_synthetic_and_beir_train(tmp_path):
    """source synthetic: the pre-training group's queries (resources/synthetic/pretrain-beir), whose corpus
    is searched for dense mining but never scored; beir_train: the evaluated dataset's own train split."""
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"].update(variants=["joint"], seeds=[0], retrievers={})
    cfg["finetune"]["data"]["negatives"] = ["bm25", "dense"]
    r = snakemake(tmp_path, cfg, "-n", "-p")
    commands = shell_commands(r)
    (pretrain,) = [c for c in commands if "llara.synthetic " in c and "--pretrain-beir-out" in c]
    assert "--pretrain-beir-out resources/synthetic/pretrain-beir " in pretrain
    assert "--n-pretrain-queries 3000 " in pretrain and "--beir-out" not in pretrain
    mines = [c for c in commands if "llara.mine " in c]
    assert mines and all("--beir-dir resources/synthetic/pretrain-beir --split train " in c for c in mines)
    assert not [c for c in commands if "llara.score " in c and "synthetic-pretrain" in c]
    assert [c for c in commands if "llara.search " in c and "/synthetic-pretrain/" in c]  # dense mining only
    cfg["finetune"]["data"] = {"source": "beir_train", "dataset": "synthetic", "negatives": ["bm25"]}
    commands = shell_commands(snakemake(tmp_path, cfg, "-n", "-p"))
    (mine,) = [c for c in commands if "llara.mine " in c]
    assert "--beir-dir resources/synthetic/beir --split train " in mine
    (finetune,) = [c for c in commands if "llara.finetune " in c]
    assert "--train_file results/finetune_data/bm25/seed0/synthetic-train.jsonl " in finetune
    # the synthetic set has a train split only
    cfg["finetune"]["data"] = {"source": "synthetic", "split": "dev"}
    r = snakemake(tmp_path, cfg, "-n")
    assert r.returncode != 0 and "finetune.data.split is 'dev'" in r.stderr + r.stdout
    # the fine-tuning set's name is reserved
    cfg["finetune"]["data"] = {"source": "synthetic"}
    cfg["evaluate"]["datasets"]["synthetic-pretrain"] = {"source": "synthetic"}
    r = snakemake(tmp_path, cfg, "-n")
    assert r.returncode != 0 and "evaluate.datasets.synthetic-pretrain" in r.stderr + r.stdout


@pytest.mark.extended
def test_paper_config_plans_msmarco_dev_sharded(tmp_path):
    r = snakemake(tmp_path, REPO / "config" / "paper.yaml", "-n", "-p", "results/tables/ndcg10.md")
    commands = shell_commands(r)
    marco = [c for c in commands if "llara.encode " in c and "/msmarco/" in c and "--what corpus" in c]
    assert len(marco) == 16 * 5 * 2  # 16 shards x (4 variants + RepLLaMA) x (zero-shot, fine-tuned)
    assert all("--num-shards 0016 " in c for c in marco)
    scores = [c for c in commands if "llara.score " in c and "/msmarco/" in c]
    assert all(
        "--qrels resources/beir/msmarco/qrels/dev.tsv --dataset msmarco --split dev " in c for c in scores
    )
    small = [c for c in commands if "llara.encode " in c and "/scifact/" in c and "--what corpus" in c]
    assert small and all("--num-shards 0001 " in c for c in small)


@pytest.mark.extended
def test_released_checkpoints_config_plans_no_training(tmp_path):
    """config/released.yaml: the BAAI checkpoints through our encoder, prompts and lengths of their
    cards, LLARA-pretrain as a zero-shot row; nothing is trained."""
    r = snakemake(tmp_path, REPO / "config" / "released.yaml", "-n", "-p")
    commands, counts = shell_commands(r), job_counts(r.stdout)
    assert not {"adapt", "finetune", "base_model", "pretrain_pairs", "export_st"} & set(counts)
    assert counts["score"] == 4 * 13 + 13  # 3 BAAI checkpoints, the released RepLLaMA, BM25
    # the BAAI checkpoints (repllama-released: tests/test_released_repllama.py)
    encodes = [c for c in commands if "llara.encode " in c and "/scifact/" in c and "repllama" not in c]
    by = {
        name: [c for c in encodes if f"--model resources/models/BAAI--{name}/main " in c]  # fetched once
        for name in ("LLARA-pretrain", "LLARA-passage", "LLARA-beir")
    }
    assert all(len(v) == 2 for v in by.values())  # corpus and queries
    assert all(
        "--encoder llara " in c and "--prompt-style released --query-prompt ebar --passage-prompt ebae" in c
        for c in encodes
    )
    assert all("--max-length 160 --query-max-length 64" in c for c in by["LLARA-passage"])
    assert all(
        "results/encode/checkpoint/LLARA-pretrain/zeroshot/scifact/" in c for c in by["LLARA-pretrain"]
    )
    assert all("results/encode/checkpoint/LLARA-passage/finetuned/dense/" in c for c in by["LLARA-passage"])
    assert all("results/encode/checkpoint/LLARA-beir/finetuned/bm25/" in c for c in by["LLARA-beir"])
    (score,) = [c for c in commands if "llara.score " in c and "LLARA-beir/finetuned/bm25/scifact" in c]
    assert (
        "--model BAAI/LLARA-beir --encoding results/encode/checkpoint/LLARA-beir/finetuned/bm25/scifact/"
        in score
    )


def test_no_ruleorder_and_every_heavy_rule_is_benchmarked():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert "ruleorder:" not in rules + (REPO / "Snakefile").read_text()
    for rule in ("base_model", "adapt", "finetune", "encode_corpus", "encode_queries", "bm25", "search"):
        body = rules.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0].split("\nuse rule ", 1)[0]
        assert "    benchmark:" in body, rule
        if rule not in ("bm25", "search"):  # the heavy stages run through the launcher: a cost record
            assert "--record {output.job}" in body, rule


@pytest.mark.extended  # a Snakemake dry run per case, ~2 s each
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
        (("grid",), {"stages": ["zeroshot", "pretrained"]}, "pretrained"),
        (("finetune", "data"), {"negatives": ["bm25", "ance"]}, "ance"),
        (
            ("finetune", "data"),
            {"seed": 1},
            "finetune.data.seed is gone: negatives are sampled with each grid seed (grid.seeds)",
        ),
        (
            ("finetune", "data"),
            {"negatives": "file"},
            "finetune.data.negatives: file means the negatives a training file brings",
        ),
        (
            ("finetune", "data"),
            {"source": "jsonl", "path": "x.jsonl", "negatives": ["dense"]},
            "finetune.data.negatives: dense mining searches a BEIR corpus",
        ),
        (
            ("finetune", "data"),
            {"negatives": ["dense"], "depth": 500},
            "finetune.data.depth (500) is deeper than evaluate.top_k (100)",
        ),
        (
            ("finetune", "data"),
            {"negatives": ["dense"], "dense_encoder": "bge"},
            "finetune.data.dense_encoder 'bge' is not a key of evaluate.baselines.hf (minilm)",
        ),
        (
            ("evaluate", "datasets"),
            {"zeroshot": {"source": "synthetic"}},
            "evaluate.datasets.zeroshot: the name is a stage's",
        ),
        (
            (),
            {"checkpoints": {"ebae": {"model": "x", "stage": "zeroshot"}}},
            "checkpoints.ebae: the name is a variant's",
        ),
        ((), {"checkpoints": {"x": {"model": "x", "stage": "adapted"}}}, "adapted"),
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
        (found,) = [
            c
            for c in commands
            if f"llara.{stage} " in c and f"/{variant}/seed0" in c and "/zeroshot/" not in c
        ]
        return found

    # the prompts are born in adaptation (llara_prompt.json) and read from the checkpoint after it
    assert "--query_prompt ebae --passage_prompt ebar" in command("adapt", "none")
    assert "--query_prompt ebae --passage_prompt ebae" in command("adapt", "ebae")
    assert "--query_prompt ebar --passage_prompt ebar" in command("adapt", "ebar")
    assert "--query_prompt ebar --passage_prompt ebae" in command("adapt", "joint")
    later = [c for c in commands if any(f"llara.{s} " in c for s in ("finetune", "encode", "score"))]
    assert later and not any(f in c for c in later for f in ("--prompt", "--query-prompt", "--query_prompt"))
    # score records the prompts the encoding's .meta.json names
    assert (
        "--encoding results/encode/llara/released/none/seed0/finetuned/bm25/synthetic/queries-test"
        in command("score", "none")
    )


def test_a_grid_needs_its_training_sections(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "released.yaml").read_text())
    cfg["grid"] = {"variants": ["none"]}
    r = snakemake(tmp_path, cfg, "-n")
    assert r.returncode != 0
    assert (
        "grid.variants is ['none'], but the config has no pretrain, base_model, adapt, finetune section"
        in r.stderr + r.stdout
    )


def test_finetune_dataset_must_be_evaluated(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["finetune"]["data"]["dataset"] = "scifact"
    r = snakemake(tmp_path, cfg, "-n")  # a dataset with source synthetic would be ignored: refused
    assert r.returncode != 0
    assert "finetune.data.dataset is for source beir_train" in r.stdout + r.stderr
    cfg["finetune"]["data"]["source"] = "beir_train"
    r = snakemake(tmp_path, cfg, "-n")
    assert r.returncode != 0
    assert "finetune.data.dataset 'scifact' is not a key of evaluate.datasets" in r.stdout + r.stderr


def micro_config() -> dict:
    """The default grid shrunk to seconds per job (same DAG, tiny sizes)."""
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"]["seeds"] = [0]
    cfg["synthetic"] = {
        "seed": 0,
        "n_articles": 60,
        "n_corpus_articles": 12,
        "n_train_queries": 12,
        "n_test_queries": 8,
        "n_pretrain_queries": 40,
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
    r = snakemake(work, micro_config(), "--cores", "2", snakefile=repo / "Snakefile", timeout=1200)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
    return repo, work, r


@pytest.mark.slow
def test_micro_grid_runs_end_to_end_and_reruns_what_changed(micro_grid):
    repo, work, done = micro_grid
    long = pd.read_parquet(work / "results" / "tables" / "long.parquet")
    assert set(long["variant"]) == {"none", "ebae", "ebar", "joint", "repllama", "bm25"}
    stages = long[long.variant != "bm25"].groupby("stage")["variant"].nunique()
    assert stages.to_dict() == {"finetuned": 5, "zeroshot": 5}  # both stages of every system
    assert set(long.loc[long.stage == "finetuned", "negatives"]) == {"bm25"}
    prompts = long.drop_duplicates("variant").set_index("variant")[["query_prompt", "passage_prompt"]]
    assert prompts.loc["ebae"].tolist() == ["ebae", "ebae"] and prompts.loc["bm25"].tolist() == ["-", "-"]
    main_table = (work / "results" / "tables" / "ndcg10.md").read_text()
    assert (
        "| ebae | zero-shot | ebae/ebae | 1 |" in main_table
        and "| ebae | fine-tuned | ebae/ebae | 1 |" in main_table
    )
    # the last lines of the run: the main table and where the files are (after Snakemake's own lines)
    tail = done.stdout.rstrip().splitlines()
    start = max(
        i for i, line in enumerate(tail) if line.startswith("Done. The main table (results/tables/ndcg10.md)")
    )
    assert main_table.strip() in "\n".join(tail[start:])
    assert any(line.startswith(f"Tables: {work / 'results' / 'tables'}/") for line in tail[start:])
    assert tail[-1] == "=" * 78
    st = work / "results" / "finetune" / "released" / "joint" / "seed0" / "bm25" / "model-st"
    assert (st / "README.md").exists() and not list(st.glob("*.safetensors"))  # a reference, no weights
    # cost: CPU-hours on this CPU-only machine, said in the header; every LLaRA system has its hours
    cost_md = (work / "results" / "tables" / "cost.md").read_text()
    assert "adaptation CPU-h / wall-h (no GPU: CPU-hours)" in cost_md and "GPU-h" not in cost_md
    cost = pd.read_csv(work / "results" / "tables" / "cost.csv")
    llara = cost[cost.variant.isin(["none", "ebae", "ebar", "joint"])]
    assert len(llara) == 8 and (llara["adapt_wall_hours"] > 0).all() and (llara["adapt_gpus"] == 0).all()
    assert (llara["encode_passages_per_s"] > 0).all()
    finetuned = llara[llara.stage == "finetuned"]
    assert (finetuned["finetune_wall_hours"] > 0).all() and llara.loc[
        llara.stage == "zeroshot", "finetune_wall_hours"
    ].isna().all()
    job = work / "results" / "benchmarks" / "adapt" / "llara" / "released" / "joint" / "seed0.job.json"
    assert '"source": "launcher"' in job.read_text()
    run = lambda cfg, *a: job_counts(snakemake(work, cfg, "-n", *a, snakefile=repo / "Snakefile").stdout)  # noqa: E731

    assert run(micro_config()) == {}  # nothing to do

    # a fine-tuning value reruns fine-tuning and what follows it, not adaptation nor the zero-shot rows
    cfg = micro_config()
    cfg["finetune"]["learning_rate"] = 5e-4
    counts = run(cfg)
    assert (
        counts["finetune"] == 4
        and counts["finetune_retriever"] == 1
        and counts["export_st"] == 5
        and "adapt" not in counts
        and "base_model" not in counts
    )
    assert counts["encode_corpus"] == 5 and counts["score"] == 5 and counts["tables"] == 1

    # switching the launcher (local -> debug) reruns nothing: launch options are resources, not params
    cfg = micro_config()
    cfg["launcher"]["cluster"] = "debug"
    assert run(cfg) == {}

    # the code of a stage changes: that stage and what follows rerun (tables: imported by no other stage)
    with open(repo / "llara" / "tables.py", "a") as fh:
        fh.write("\n# a change to the tables stage\n")
    assert run(micro_config()) == {"tables": 1, "all": 1, "total": 2}
    # the search stage is imported by no other stage: search and what follows rerun, nothing before it
    with open(repo / "llara" / "search.py", "a") as fh:
        fh.write("\n# a change to the search stage\n")
    counts = run(micro_config())
    assert counts["search"] == 10 and counts["score"] == 10
    assert not {"mine_bm25", "bm25", "encode_corpus", "finetune"} & set(counts)
    # the TREC run format is read by mining, BM25, search and scoring: all of them and what follows rerun
    with open(repo / "llara" / "runs.py", "a") as fh:
        fh.write("\n# a change to the run format\n")
    counts = run(micro_config())
    assert counts["search"] == 10 and counts["mine_bm25"] == 1 and counts["bm25"] == 1
    assert "adapt" not in counts and "base_model" not in counts

    # -R and --until behave as Snakemake users expect
    counts = run(micro_config(), "--until", "adapt", "-R", "adapt")
    assert counts["adapt"] == 4 and "finetune" not in counts


def baseline_only(tmp_path: Path, dataset: dict) -> dict:
    """A config with no LLaRA grid: BM25 on one dataset (seconds)."""
    return {
        "synthetic": {
            "seed": 0,
            "n_articles": 40,
            "n_corpus_articles": 10,
            "n_train_queries": 6,
            "n_test_queries": 6,
        },
        "evaluate": {"datasets": {"d": dataset}, "baselines": {"bm25": True}, "top_k": 10},
        "launcher": {"cluster": "local", "poll_s": 0.2},
    }


@pytest.mark.extended
def test_the_end_of_a_run_shows_the_table_or_the_failed_rule(tmp_path):
    """onsuccess: the last lines (after Snakemake's own, stderr included) are the main table and where
    the files are; onerror: which rule failed and the path of its log."""
    ok = snakemake(
        tmp_path / "ok", baseline_only(tmp_path, {"source": "synthetic"}), "--cores", "2", merge=True
    )
    assert ok.returncode == 0, ok.stdout[-3000:]
    table = (tmp_path / "ok" / "results" / "tables" / "ndcg10.md").read_text().strip()
    assert "| bm25 | – | - | – |" in table
    end = ok.stdout.split("Done. The main table (results/tables/ndcg10.md):")
    assert len(end) == 2 and "Complete log" in end[0] and "Elapsed time" in end[0]  # Snakemake's come first
    assert table in end[1] and f"Tables: {tmp_path / 'ok' / 'results' / 'tables'}/" in end[1]
    assert end[1].rstrip().splitlines()[-1] == "=" * 78
    (tmp_path / "missing").mkdir()  # a dataset folder with nothing in it: BM25 fails on the corpus
    config = baseline_only(tmp_path, {"source": "path", "path": str(tmp_path / "missing")})
    bad = snakemake(tmp_path / "bad", config, "--cores", "1", merge=True)
    assert bad.returncode != 0
    end = bad.stdout.split("The grid failed: 1 job.")
    assert len(end) == 2 and "Complete log" in end[0]
    lines = end[1].rstrip().splitlines()
    log = tmp_path / "bad" / "logs" / "bm25" / "d" / "test.log"
    assert lines[1:3] == ["  rule bm25 (dataset=d, split=test)", f"    log: {log}"]
    last = [line for line in log.read_text().splitlines() if line.strip()][-1]
    assert f"    | {last}" in lines and "missing" in last  # the log's tail: the error itself
    assert lines[-1] == "=" * 78


def test_failed_jobs_are_read_from_snakemake_logs():
    sys.path.insert(0, str(REPO / "workflow"))
    from run_end import failed_jobs

    log = """rule finetune:
    output: results/finetune/released/ebae/seed0/bm25/model
    log: logs/finetune/released/ebae/seed0/bm25.log
    jobid: 7
    wildcards: style=released, variant=ebae, seed=0, negatives=bm25
[Sun Nov 29 19:03:30 2026]
localrule tables:
    log: logs/tables.log
    jobid: 1
Error in rule finetune:
    message: None
    jobid: 7
    log: logs/finetune/released/ebae/seed0/bm25.log (check log file(s) for error details)
    shell:
        python -m llara.finetune ...
MissingOutputException in rule tables in file "/x/workflow/rules/report.smk", line 10:
Job 1  completed successfully, but some output files are missing.
Error in rule finetune:
    jobid: 7
"""
    assert failed_jobs(log) == [
        {"rule": "finetune", "jobid": "7", "log": "logs/finetune/released/ebae/seed0/bm25.log",
         "wildcards": "style=released, variant=ebae, seed=0, negatives=bm25"},
        {"rule": "tables", "jobid": "1", "log": "logs/tables.log"},
    ]  # fmt: skip
    assert failed_jobs("rule a:\n    jobid: 1\nFinished jobid: 1\n") == []


def test_evaluation_is_one_rule_per_step():
    """One rule per step over the {system} path segment: no `use rule ... with:` twins per kind of system."""
    text = (REPO / "workflow" / "rules" / "evaluate.smk").read_text()
    assert "use rule" not in text
    assert [line.split()[1].rstrip(":") for line in text.splitlines() if line.startswith("rule ")] == [
        "encode_corpus", "encode_queries", "search", "bm25", "score",
    ]  # fmt: skip


@pytest.mark.extended
def test_rules_run_the_python_that_runs_snakemake(tmp_path):
    """With a PATH that holds no project environment (only the system's Python, which lacks the
    project's packages), `.venv/bin/snakemake` still runs every rule with its own interpreter."""
    env = {k: v for k, v in ENV.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(baseline_only(tmp_path, {"source": "synthetic"})))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "w"),
           "--configfile", str(config), "--cores", "1"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (tmp_path / "w" / "results" / "tables" / "long.parquet").is_file()


@pytest.mark.slow  # a subprocess per case, ~10-25 s each: `make test-slow` (CI when time allows)
def test_a_local_dataset_is_an_input_so_editing_it_reruns_its_scores(tmp_path):
    """source: path: the folder's files are rule inputs; cutting its qrels to 3 queries reruns BM25's
    score (and the tables) instead of "Nothing to be done"."""
    made = snakemake(tmp_path / "gen", baseline_only(tmp_path, {"source": "synthetic"}), "--cores", "1",
                     "resources/synthetic/beir")  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    local = tmp_path / "local"
    shutil.copytree(tmp_path / "gen" / "resources" / "synthetic" / "beir", local)
    config = baseline_only(tmp_path, {"source": "path", "path": str(local)})
    first = snakemake(tmp_path / "w", config, "--cores", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = tmp_path / "w" / "results" / "metrics" / "baseline" / "bm25" / "d" / "test.json"
    assert json.loads(metrics.read_text())["num_judged_queries"] == 6
    qrels = local / "qrels" / "test.tsv"
    lines = qrels.read_text().splitlines()
    kept = {line.split("\t")[0] for line in lines[1:]}
    keep = sorted(kept)[:3]
    qrels.write_text("\n".join([lines[0], *(x for x in lines[1:] if x.split("\t")[0] in keep)]) + "\n")
    again = snakemake(tmp_path / "w", config, "--cores", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" not in again.stdout + again.stderr
    assert json.loads(metrics.read_text())["num_judged_queries"] == 3
