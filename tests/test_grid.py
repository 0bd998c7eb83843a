"""llara.grid is the grid's one vocabulary: the schema's enums and defaults, the wildcards, the paths
and the tables' labels all come from it, and a variant registered there alone is planned end to end."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llara import grid, gridconfig
from llara.grid import System

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _markers(node) -> list[str]:
    if isinstance(node, dict):
        return [k for k in node if k.startswith("x-")] + [m for v in node.values() for m in _markers(v)]
    if isinstance(node, list):
        return [m for v in node for m in _markers(v)]
    return []


def test_schema_enums_and_defaults_are_the_vocabulary():
    schema = gridconfig.load_schema()
    assert _markers(schema) == []  # every x-vocabulary / x-default was filled in
    props = schema["properties"]
    g = props["grid"]["properties"]
    assert g["variants"]["items"]["enum"] == list(grid.variants())
    assert g["prompt_styles"]["items"]["enum"] == list(grid.PROMPT_STYLES)
    assert g["stages"]["items"]["enum"] == list(grid.STAGES)
    prompts = g["prompts"]["properties"]
    assert {v: {r: p["default"] for r, p in s["properties"].items()} for v, s in prompts.items()} == (
        grid.default_prompts()
    )
    assert all(p["enum"] == list(grid.KINDS) for s in prompts.values() for p in s["properties"].values())
    negatives = props["finetune"]["properties"]["data"]["properties"]["negatives"]["oneOf"]
    assert negatives[0]["enum"] == negatives[1]["items"]["enum"] == list(grid.NEGATIVES)
    ckpt = props["checkpoints"]["additionalProperties"]["properties"]
    assert ckpt["stage"]["enum"] == list(grid.STAGES) and ckpt["negatives"]["enum"] == list(grid.NEGATIVES)
    assert ckpt["query_prompt"]["enum"] == ckpt["passage_prompt"]["enum"] == list(grid.KINDS)
    for section in ("finetune", "evaluate"):
        assert props[section]["properties"]["query_max_length"]["default"] == grid.QUERY_MAX_LENGTH
        assert props[section]["properties"]["passage_max_length"]["default"] == grid.PASSAGE_MAX_LENGTH
    assert props["adapt"]["properties"]["max_length"]["default"] == grid.ADAPT_MAX_LENGTH
    assert props["adapt"]["properties"]["bow_scale"]["default"] == grid.BOW_SCALE


def test_config_without_prompts_gets_each_variants_defaults():
    cfg = copy.deepcopy(DEFAULT)
    del cfg["grid"]["prompts"]
    gridconfig.validate(cfg)
    assert cfg["grid"]["prompts"] == grid.default_prompts()
    partial = copy.deepcopy(DEFAULT)
    partial["grid"]["prompts"] = {"none": {"passage": "ebar"}}
    gridconfig.validate(partial)
    assert partial["grid"]["prompts"]["none"] == {"query": "ebar", "passage": "ebar"}
    assert partial["grid"]["prompts"]["joint"] == grid.variant("joint").prompts


RECIPES = sorted(p.name for p in (REPO / "config").glob("*.yaml") if not p.name.startswith("site."))


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_configs_validate_and_use_the_default_prompts(name):
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    gridconfig.validate(cfg, f"config/{name}")
    gridconfig.check_config(cfg, REPO)
    if cfg.get("grid", {}).get("variants"):
        assert cfg["grid"]["prompts"] == grid.default_prompts()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(adapt_steps=3), "config/x.yaml: unknown key adapt_steps; allowed keys there:"),
        (
            lambda c: c["grid"]["prompts"]["joint"].update(pasage="ebae"),
            "config/x.yaml: unknown key grid.prompts.joint.pasage; allowed keys there: passage, query",
        ),
        (
            lambda c: c["grid"].update(variants=["none", "both"]),
            "grid.variants.1 is 'both'; allowed: none, ebae",
        ),
        (
            lambda c: c["finetune"].update(max_steps=0),
            "finetune.max_steps is 0; -1: num_train_epochs decides",
        ),
        (lambda c: c["adapt"].update(max_steps=-5), "adapt.max_steps: -5 is less than the minimum of -1"),
        (
            lambda c: c["finetune"].update(num_train_epochs=0),
            "finetune.num_train_epochs: 0 is less than or equal",
        ),
    ],
)
def test_schema_errors_are_one_line_naming_file_and_key(change, message):
    cfg = copy.deepcopy(DEFAULT)
    change(cfg)
    with pytest.raises(gridconfig.ConfigError) as err:
        gridconfig.validate(cfg, "config/x.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cross_field_checks_are_a_plain_function(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"]["prompts"]["ebae"]["query"] = "ebar"
    gridconfig.validate(cfg)
    with pytest.raises(
        gridconfig.ConfigError, match="grid.prompts.ebae.query is 'ebar', but the ebae variant"
    ):
        gridconfig.check_config(cfg, REPO)
    cfg = copy.deepcopy(DEFAULT)
    cfg["base_model"]["source"] = str(tmp_path / "no-such-model")
    gridconfig.validate(cfg)
    with pytest.raises(gridconfig.ConfigError, match="base_model.source: .*no-such-model.* neither a folder"):
        gridconfig.check_config(cfg, REPO)
    cfg["base_model"]["source"] = "meta-llama/Llama-2-7b-hf"  # a hub id is fetched later
    assert gridconfig.check_config(cfg, REPO) == ["bm25"]


@pytest.mark.parametrize(
    "system",
    [
        System("llara", "joint", "released", 2, "finetuned", "bm25"),
        System("llara", "none", "paper", 0, "zeroshot"),
        System("checkpoint", "LLARA-beir", stage="finetuned", negatives="file"),
        System("checkpoint", "LLARA-pretrain", stage="zeroshot"),
        System("baseline", "bm25"),
        System("baseline", "minilm"),
    ],
)
def test_system_paths_round_trip(system):
    path = system.to_path()
    assert System.from_path(path) == system
    assert System.from_path(f"results/metrics/{path}/scifact/test.json") == system
    assert System.from_path(f"results/benchmarks/search/{path}/scifact/test.tsv") == system


def test_system_labels_and_bad_paths():
    s = System.from_path("results/benchmarks/finetune/llara/released/ebar/seed1/finetuned/dense.tsv")
    assert s.labels() == {
        "variant": "ebar",
        "prompt_style": "released",
        "seed": 1,
        "stage": "finetuned",
        "negatives": "dense",
    }
    assert System("baseline", "bm25").labels() == {
        "variant": "bm25", "prompt_style": "-", "seed": -1, "stage": "-", "negatives": "-",
    }  # fmt: skip
    assert grid.model_labels("results/benchmarks/adapt/llara/released/joint/seed0.tsv")["seed"] == 0
    for bad in ("results/metrics/llara/released/joint/zeroshot/x.json", "results/metrics/other/x.json"):
        with pytest.raises(ValueError, match="no llara/<style>/<variant>/seed<N>/<stage>"):
            System.from_path(bad)
    with pytest.raises(ValueError, match="unknown negatives"):
        System("llara", "joint", "released", 0, "finetuned", "ance")


@pytest.fixture
def throwaway_variant(tmp_path):
    """A variant registered in the vocabulary module and nowhere else: in this process, and in the
    Snakemake subprocess through a sitecustomize that does the same call."""
    site = tmp_path / "site"
    site.mkdir()
    call = 'register_variant("ebae2", ("ebae",), query="ebae", passage="ebae")'
    (site / "sitecustomize.py").write_text(f"from llara.grid import register_variant\n{call}\n")
    grid.register_variant("ebae2", ("ebae",), query="ebae", passage="ebae")
    yield site
    grid.unregister_variant("ebae2")


def test_a_variant_registered_in_the_vocabulary_alone_is_planned(tmp_path, throwaway_variant):
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"].update(variants=["none", "ebae2"], seeds=[0])
    del cfg["grid"]["prompts"]
    gridconfig.validate(copy.deepcopy(cfg))  # in process: the schema knows it
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(throwaway_variant), str(REPO)]),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "w"),
           "-n", "-p", "--configfile", str(tmp_path / "c.yaml")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown[-3000:]
    commands = [line for line in shown.splitlines() if line.startswith("Shell command:")]
    (adapt,) = [c for c in commands if "llara.adapt " in c and "--variant ebae2 " in c]
    assert (
        "--train_file results/pairs/pairs.jsonl" in adapt
        and "--query_prompt ebae --passage_prompt ebae" in adapt
    )
    planned = {c.split(" -m llara.", 2)[-1].split()[0] for c in commands if "/ebae2/" in c}
    assert {"adapt", "finetune", "encode", "search", "score", "st"} <= planned
    tables = [c for c in commands if "llara.tables " in c][0]
    assert "results/metrics/llara/released/ebae2/seed0/finetuned/bm25/synthetic/test.json" in tables


@pytest.mark.extended
def test_a_target_of_any_registered_variant_is_planned_and_other_names_are_not(tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    cfg["grid"]["variants"] = ["none"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    def dry_run(target: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "-n", "-p", target, "--configfile", str(tmp_path / "c.yaml")]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    ok = dry_run("results/metrics/llara/released/ebar/seed0/finetuned/dense/synthetic/test.json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    shown = ok.stdout + ok.stderr
    assert (
        "rule adapt:" in shown
        and "--variant ebar --prompt_style released --query_prompt ebar --passage_prompt ebar" in shown
    )
    assert "rule mine_dense:" in shown  # a negatives kind the config's axis leaves out is a target too
    for bad_target in (
        "results/metrics/llara/released/both/seed0/zeroshot/synthetic/test.json",  # no such variant
        "results/metrics/llara/released/ebar/seed0/pretrained/synthetic/test.json",  # no such stage
        "results/metrics/llara/released/ebar/seed0/finetuned/ance/synthetic/test.json",  # no such negatives
    ):
        bad = dry_run(bad_target)
        assert bad.returncode != 0
        assert f"No rule to produce {bad_target}" in bad.stdout + bad.stderr


def test_prompt_styles_and_slots_agree_with_the_prompt_templates():
    from llara.prompts import TEMPLATES

    assert set(TEMPLATES) == set(grid.PROMPT_STYLES)
    assert {s: t.n_slots for s, t in TEMPLATES.items()} == grid.N_SLOTS
    assert json.loads(json.dumps(grid.default_prompts())) == grid.default_prompts()


@pytest.mark.parametrize("recipe", ["paper.yaml", "released.yaml"])
def test_the_site_example_layered_on_a_recipe_validates(recipe):
    """config/site.example.yaml after a recipe, merged as Snakemake merges config files (key by key)."""

    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}  # fmt: skip

    cfg = merge(
        yaml.safe_load((REPO / "config" / recipe).read_text()),
        yaml.safe_load((REPO / "config" / "site.example.yaml").read_text()),
    )
    gridconfig.validate(cfg, f"config/{recipe}, config/site.example.yaml")
    assert cfg["launcher"]["cluster"] == "slurm"
    for stage in cfg["launcher"]["resources"]:
        assert stage in gridconfig.LAUNCH_STAGES
