"""llara.choices is the one source of the grid's enums and defaults: the workflow schema, the shipped
configs and the wildcard constraints must agree with it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from llara import choices

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
PROPS = SCHEMA["properties"]


def test_schema_enums_are_the_choices():
    grid = PROPS["grid"]["properties"]
    assert sorted(grid["variants"]["items"]["enum"]) == sorted(choices.VARIANTS)
    assert sorted(grid["prompt_styles"]["items"]["enum"]) == sorted(choices.PROMPT_STYLES)
    prompts = grid["prompts"]["properties"]
    assert sorted(prompts) == sorted(choices.VARIANTS)
    for variant, schema in prompts.items():
        assert sorted(schema["properties"]) == ["passage", "query"], variant
        for role in ("query", "passage"):
            assert sorted(schema["properties"][role]["enum"]) == sorted(choices.KINDS), (variant, role)


def test_schema_defaults_are_the_choices():
    prompts = PROPS["grid"]["properties"]["prompts"]["properties"]
    defaults = {
        v: {r: s["properties"][r]["default"] for r in ("query", "passage")} for v, s in prompts.items()
    }
    assert defaults == choices.DEFAULT_PROMPTS
    for section in ("finetune", "evaluate"):
        props = PROPS[section]["properties"]
        assert props["query_max_length"]["default"] == choices.QUERY_MAX_LENGTH, section
        assert props["passage_max_length"]["default"] == choices.PASSAGE_MAX_LENGTH, section
    assert PROPS["adapt"]["properties"]["max_length"]["default"] == choices.ADAPT_MAX_LENGTH


def test_config_without_prompts_gets_the_default_prompts():
    """What the schema fills in (Snakemake's validate with defaults) is DEFAULT_PROMPTS, and a
    partial mapping is completed per variant and per role."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    del cfg["grid"]["prompts"]
    validate(cfg, str(SCHEMA_PATH), set_default=True)
    assert cfg["grid"]["prompts"] == choices.DEFAULT_PROMPTS
    partial = copy.deepcopy(cfg)
    partial["grid"]["prompts"] = {"none": {"passage": "ebar"}}
    validate(partial, str(SCHEMA_PATH), set_default=True)
    assert partial["grid"]["prompts"]["none"] == {"query": "ebar", "passage": "ebar"}
    assert partial["grid"]["prompts"]["joint"] == choices.DEFAULT_PROMPTS["joint"]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_use_the_default_prompts(name):
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    if "grid" not in cfg:  # released checkpoints only: EBAR queries, EBAE passages, as the released code
        assert cfg["checkpoints"] and all(
            (c["query_prompt"], c["passage_prompt"]) == ("ebar", "ebae") for c in cfg["checkpoints"].values()
        )
        return
    assert cfg["grid"]["prompts"] == choices.DEFAULT_PROMPTS
    assert set(cfg["grid"]["variants"]) <= set(choices.VARIANTS)


def test_schema_stages_and_negatives_are_what_the_tables_read():
    """llara.tables reads the stage and the negatives off the grid's paths: the names must agree."""
    from llara import tables

    grid = PROPS["grid"]["properties"]
    assert tuple(grid["stages"]["items"]["enum"]) == tables.STAGES
    negatives = PROPS["finetune"]["properties"]["data"]["properties"]["negatives"]["oneOf"]
    assert tuple(negatives[0]["enum"]) == tuple(negatives[1]["items"]["enum"]) == tables.NEGATIVES
    ckpt = PROPS["checkpoints"]["additionalProperties"]["properties"]
    assert (
        tuple(ckpt["stage"]["enum"]) == tables.STAGES and tuple(ckpt["negatives"]["enum"]) == tables.NEGATIVES
    )
    assert sorted(ckpt["prompt_style"]["enum"]) == sorted(choices.PROMPT_STYLES)
    assert (
        sorted(ckpt["query_prompt"]["enum"])
        == sorted(ckpt["passage_prompt"]["enum"])
        == sorted(choices.KINDS)
    )


def dry_run(tmp_path: Path, target: str) -> subprocess.CompletedProcess:
    """Plan one target of a default grid that runs only `none`."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["grid"]["variants"] = ["none"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "-n", "-p", target, "--configfile", str(tmp_path / "c.yaml")]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_wildcard_constraints_come_from_choices(tmp_path):
    """Any variant of llara.choices is a valid target (even one the config's grid leaves out); a name
    outside it matches no rule."""
    ok = dry_run(tmp_path, "results/metrics/llara/released/ebar/seed0/finetuned/dense/synthetic/test.json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    shown = ok.stdout + ok.stderr
    assert "rule finetune:" in shown and "--query_prompt ebar --passage_prompt ebar" in shown
    assert "rule mine_dense:" in shown  # a negatives kind the config's axis leaves out is a target too
    for bad_target in (
        "results/metrics/llara/released/both/seed0/zeroshot/synthetic/test.json",  # no such variant
        "results/metrics/llara/released/ebar/seed0/pretrained/synthetic/test.json",  # no such stage
        "results/metrics/llara/released/ebar/seed0/finetuned/ance/synthetic/test.json",  # no such negatives
    ):
        bad = dry_run(tmp_path, bad_target)
        assert bad.returncode != 0
        assert f"No rule to produce {bad_target}" in bad.stdout + bad.stderr
