"""The rehearsal of the paper's DAG (issue 19, section 4) on the two-node local cluster.

``config/rehearsal.yaml`` (paper.yaml's shape at toy scale) with the site file
``tests/slurm/rehearsal-site.yaml`` runs with ``--profile workflow/profiles/slurm``: the four variants,
zero-shot and fine-tuned, DeepSpeed ZeRO-1 adaptation on 2 nodes in the preemptible partition
``low``, fine-tuning with BM25 hard negatives and cross-device negatives on 2 processes, two BEIR-style
datasets (the generated one, SciFact from ../shared/data by path) and an MS MARCO-like dev set in 3
shards. While an adaptation job of the grid trains, a job submitted to ``high`` that needs every CPU
of both nodes preempts it. Checked afterwards:

* Snakemake ends with status 0 and the tables (ndcg10.md with MS MARCO's MRR@10 beside the BEIR
  average, cost.md, summary.csv);
* the preempted adaptation: sacct shows PREEMPTED then COMPLETED, both attempts on n1 and n2; its job
  log shows the save at the signal (``saved a checkpoint at step N``) and the resume from that step;
  its cost record and cost.csv hold both attempts (elapsed time and the command's CPU time summed);
* every adaptation ran with DeepSpeed ZeRO-1 on 2 nodes, every fine-tuning on 2 processes with
  cross-device negatives;
* nothing heavy ran on the login node: each heavy rule's log names exactly one SLURM job.

Run by ``make rehearsal`` (marker ``rehearsal``; ``make test-slurm`` leaves it out), which starts the
two-node cluster first. ``LLARA_REHEARSAL_DIR`` keeps the run's folder (default: pytest's tmp);
``LLARA_REHEARSAL_RECORD`` names a JSON file for the wall time and the job counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .test_preemption import SAVED, cluster, hostnames  # noqa: F401 (cluster: the two-node fixture)
from .test_slurm import BIN, HEAVY_LOGS, REPO, env, job_ids, sh, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.rehearsal]

RECIPE = REPO / "config" / "rehearsal.yaml"
SITE = REPO / "tests" / "slurm" / "rehearsal-site.yaml"
TIMEOUT_S = 1440  # the run took 17.6 minutes on 2 cores (docs/slurm.md, "The rehearsal")
TRAINS = ("ebae", "ebar", "joint")  # the variants whose adaptation trains (none passes the model through)
RESUMED = re.compile(r"adapt: resuming from (\S+)/checkpoint-(\d+) \(step (\d+)\)")


def workdir(tmp_path: Path) -> Path:
    keep = os.environ.get("LLARA_REHEARSAL_DIR")
    if not keep:
        return tmp_path / "rehearsal"
    folder = Path(keep)
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def snakemake(folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm", "--directory", str(folder),
           "--configfile", str(RECIPE), str(SITE)]  # fmt: skip
    out, err = (folder / "snakemake.out").open("w"), (folder / "snakemake.err").open("w")
    return subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=out, stderr=err, start_new_session=True)


STEP = re.compile(r"(\d+)/(\d+) \[")  # the Trainer's progress bar: step/max_steps


def training_adapt_job(folder: Path, past: int = 20) -> tuple[str, str] | None:
    """(job id, name) of an adaptation job of a variant that trains, running in ``low`` and ``past``
    steps into training (rank 0's progress bar), or None. A signal during DeepSpeed's set-up (before
    step 1) has nothing to save: the job is requeued and trains from the start, which is not what the
    rehearsal checks."""
    rows = sh("squeue", "-h", "-p", "low", "-t", "RUNNING", "-o", "%i %j").split("\n")
    for job_id, name in (r.split() for r in rows if r.strip()):
        if name.split("-")[:1] != ["adapt"] or name.split("-")[2] not in TRAINS:
            continue
        err = folder / "logs" / "jobs" / name / f"{job_id}_0_log.err"
        steps = STEP.findall(err.read_text(errors="replace")) if err.exists() else []
        if steps and past <= int(steps[-1][0]) < int(steps[-1][1]) - past:
            return job_id, name
    return None


def system_of(name: str) -> str:
    """The system of a job name: adapt-released-ebae-0 / finetune-released-ebae-0-bm25 -> ebae,
    finetune-repllama-0-bm25 -> repllama."""
    parts = name.split("-") + ["", ""]
    return parts[2] if parts[1] == "released" else parts[1]


def preempt(folder: Path, nodes: list[str], cpus: int) -> str:
    """A job of ``high`` that needs every CPU of both nodes: it can only start by preempting ``low``."""
    return sh("sbatch", "--parsable", "--account=llara-ci", "--partition=high", f"--nodes={len(nodes)}",
              "--ntasks-per-node=1", f"--cpus-per-task={cpus}", "--time=2", "--job-name=rehearsal-preemptor",
              f"--output={folder}/preemptor.out", "--wrap", "srun hostname; sleep 3").strip()  # fmt: skip


def attempts(job_id: str) -> list[dict[str, str]]:
    fields = ("State", "Partition", "NodeList")
    out = sh("sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(fields)).splitlines()
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out if line]


@pytest.fixture(scope="module")
def rehearsal(cluster, tmp_path_factory):  # noqa: F811 (the imported fixture)
    folder = workdir(tmp_path_factory.mktemp("rehearsal-tmp"))
    start = time.time()
    proc = snakemake(folder)
    try:
        target = wait_for("an adaptation job training in partition low", lambda: proc.poll() is not None
                          or training_adapt_job(folder), TIMEOUT_S, every=0.5)  # fmt: skip
        assert target is not True, "Snakemake ended before any adaptation job trained in low"
        preemptor = preempt(folder, cluster["nodes"], cluster["cpus"])
        preempted_at = time.time() - start
        proc.wait(timeout=TIMEOUT_S - (time.time() - start))
    finally:
        if proc.poll() is None:  # Ctrl-C for the whole group: the launchers cancel their jobs
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(120)
    seconds = time.time() - start
    run = {"folder": folder, "rc": proc.returncode, "seconds": seconds, "preempted": target,
           "preemptor": preemptor, "preempted_at_s": preempted_at}  # fmt: skip
    run["stderr"] = (folder / "snakemake.err").read_text(errors="replace")
    return run


def heavy_jobs(folder: Path) -> dict[str, str]:
    """{job id: name} of every heavy rule; each heavy rule's log must name exactly one SLURM job."""
    jobs: dict[str, str] = {}
    for log in (folder / p for p in HEAVY_LOGS):
        for path in [log] if log.is_file() else sorted(log.rglob("*.log")):
            found = job_ids(path.read_text())
            assert len(found) == 1, f"{path} names {len(found)} SLURM jobs (a heavy step ran elsewhere?)"
            jobs.update(found)
    return jobs


def test_the_rehearsal_runs_the_paper_shaped_grid_to_its_tables(rehearsal):
    folder = rehearsal["folder"]
    assert rehearsal["rc"] == 0, rehearsal["stderr"][-5000:]
    tables = folder / "results" / "tables"
    for name in ("ndcg10.md", "summary.csv", "deltas.md", "cost.md", "cost.csv", "long.parquet"):
        assert (tables / name).exists(), name
    md = (tables / "ndcg10.md").read_text()
    assert "synthetic" in md and "scifact" in md and "msmarco mrr@10" in md.lower(), md
    long = pd.read_parquet(tables / "long.parquet")
    systems = long[long["variant"].isin(["none", "ebae", "ebar", "joint"])]
    assert set(systems["variant"]) == {"none", "ebae", "ebar", "joint"}
    assert set(systems["stage"]) == {"zeroshot", "finetuned"} and set(long["dataset"]) == {
        "synthetic", "scifact", "msmarco"
    }  # fmt: skip
    # the paper's prompt assignment, as the encodings recorded it
    prompts = systems.groupby("variant")[["query_prompt", "passage_prompt"]].first().to_dict("index")
    assert prompts == {
        "none": {"query_prompt": "ebar", "passage_prompt": "ebae"},
        "ebae": {"query_prompt": "ebae", "passage_prompt": "ebae"},
        "ebar": {"query_prompt": "ebar", "passage_prompt": "ebar"},
        "joint": {"query_prompt": "ebar", "passage_prompt": "ebae"},
    }, prompts
    shards = sorted(
        (folder / "results" / "encode").glob(
            "llara/released/joint/seed0/zeroshot/msmarco/corpus.shard*.meta.json"
        )
    )
    assert len(shards) == 3, shards
    jobs = heavy_jobs(folder)
    print(f"rehearsal: {rehearsal['seconds']:.0f}s, {len(jobs)} SLURM jobs", end=" ")
    record = os.environ.get("LLARA_REHEARSAL_RECORD")
    if record:
        Path(record).write_text(json.dumps({"wall_s": round(rehearsal["seconds"], 1), "slurm_jobs": len(jobs),
                                            "preempted": rehearsal["preempted"], "folder": str(folder)}) + "\n")  # fmt: skip


def test_adaptation_ran_with_zero1_on_two_nodes_and_fine_tuning_on_two_processes(rehearsal, cluster):  # noqa: F811
    folder = rehearsal["folder"]
    assert rehearsal["rc"] == 0, rehearsal["stderr"][-3000:]
    jobs = heavy_jobs(folder)
    for job_id, name in jobs.items():
        stage, variant = name.split("-")[0], system_of(name)
        if stage == "adapt" and variant in TRAINS:
            rows = attempts(job_id)
            assert rows and all(r["Partition"] == "low" for r in rows), rows
            assert all(hostnames(r["NodeList"]) == cluster["nodes"] for r in rows), rows  # both nodes
            config = json.loads(
                (folder / f"results/adapt/released/{variant}/seed0/model/llara_config.json").read_text()
            )
            assert config["training"]["deepspeed"].endswith("config/deepspeed/zero1.json"), config["training"]
            assert (folder / "logs" / "jobs" / name / f"{job_id}_1_log.err").exists()  # rank 1's own log
        if stage == "finetune":
            assert attempts(job_id)[-1]["Partition"] == "cpu"
            record = json.loads(
                next(
                    (folder / "results/benchmarks/finetune").rglob(f"{variant}/seed0/finetuned/*.job.json")
                ).read_text()
            )
            assert record["requested"]["tasks"] == 2, record["requested"]
            err = (folder / "logs" / "jobs" / name / f"{job_id}_1_log.err").read_text(errors="replace")
            assert "training rows; rank 1 starts" in err, err[-2000:]
    config = yaml.safe_load(RECIPE.read_text())
    assert config["finetune"]["cross_device_negatives"] is True and config["finetune"]["data"][
        "negatives"
    ] == ["bm25"]


def test_the_injected_preemption_requeued_the_adaptation_which_resumed_from_its_step(rehearsal, cluster):  # noqa: F811
    folder = rehearsal["folder"]
    assert rehearsal["rc"] == 0, rehearsal["stderr"][-3000:]
    job_id, name = rehearsal["preempted"]
    rows = attempts(job_id)
    states = [r["State"].split()[0] for r in rows]
    assert states[0] == "PREEMPTED" and states[-1] == "COMPLETED" and len(states) >= 2, rows
    assert all(hostnames(r["NodeList"]) == cluster["nodes"] for r in rows), rows
    assert [r["State"] for r in attempts(rehearsal["preemptor"])] == ["COMPLETED"]
    err = "\n".join(
        p.read_text(errors="replace")
        for p in sorted((folder / "logs" / "jobs" / name).glob(f"{job_id}_*_log.err"))
    )
    saved = [int(m.group(2)) for m in SAVED.finditer(err)]
    resumed = [int(m.group(3)) for m in RESUMED.finditer(err)]
    assert saved and resumed and resumed[0] == saved[0], (saved, resumed, err[-3000:])
    variant = name.split("-")[2]
    config = json.loads(
        (folder / f"results/adapt/released/{variant}/seed0/model/llara_config.json").read_text()
    )
    assert 0 < saved[0] < config["global_step"] == yaml.safe_load(RECIPE.read_text())["adapt"]["max_steps"]
    # the cost counts both attempts: sacct's elapsed time and the command's CPU time, summed
    record = json.loads(
        (folder / f"results/benchmarks/adapt/llara/released/{variant}/seed0.job.json").read_text()
    )
    assert record["attempts"] == len(rows) and record["command_attempts"] == len(rows), record
    elapsed = [int(x) for x in sh("sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "ElapsedRaw").split()]
    assert record["elapsed_s"] == sum(elapsed) and len(elapsed) == len(rows), (record, elapsed)
    cost = pd.read_csv(folder / "results" / "tables" / "cost.csv")
    row = cost[(cost["variant"] == variant) & (cost["stage"] == "zeroshot")].iloc[0]
    assert row["adapt_wall_hours"] == pytest.approx(sum(elapsed) / 3600)
    assert row["adapt_cpu_hours"] == pytest.approx(record["command_cpu_s"] / 3600)
    print(f"job {job_id} ({name}): saved step {saved[0]}, resumed, {len(rows)} attempts, "
          f"{sum(elapsed)} s elapsed in all; preemptor submitted {rehearsal['preempted_at_s']:.0f}s in", end=" ")  # fmt: skip
