"""The grid and the launcher on a real SLURM cluster (``bash workflow/ci/local-slurm.sh start``).

1. the reduced grid (config/slurm-test.yaml with the site file tests/slurm/site.yaml) runs with
   ``--profile workflow/profiles/slurm``; every step whose cost grows with the data or the model (base
   model, pre-training pairs, adapt, fine-tune, mining, encode, search, BM25) is a job in ``sacct`` with
   the resources the recipe asked for and the partition the site file gave its stage (search: gpu, the
   rest: cpu), the site's and the stage's setup lines ran inside the job, and nothing heavy ran on the
   login node; each heavy rule's cost record holds sacct's elapsed time, GPUs and GPU-hours, and the
   tables' cost.md shows GPU-hours;
2. a stage that raises fails its rule; the error names the job id and shows the job's log tail;
3. SIGINT to Snakemake (Ctrl-C: the whole foreground process group) cancels its jobs;
4. a job cancelled from outside fails its rule within a bounded time, also without accounting;
5. a job reaching its time limit is requeued and resumes from its checkpoint, ending where an
   uninterrupted run ends;
6. a 2-task job gets a distributed environment and trains with DDP (gloo) on CPU.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent
JOB_LINE = re.compile(r"\[llara\.launch\] slurm job (\d+) \((\S+)\)")
HEAVY_LOGS = (
    "logs/base_model.log", "logs/pretrain_pairs.log", "logs/adapt", "logs/finetune", "logs/encode",
    "logs/mine", "logs/search", "logs/bm25",
)  # fmt: skip
SITE = REPO / "tests" / "slurm" / "site.yaml"  # the local cluster's site file


def merged_launcher() -> dict:
    """The launcher section as Snakemake merges the recipe and the site file (key by key)."""
    recipe = yaml.safe_load((REPO / "config" / "slurm-test.yaml").read_text())["launcher"]
    site = yaml.safe_load(SITE.read_text())["launcher"]

    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}  # fmt: skip

    return merge(recipe, site)


def stage_of(job_name: str) -> str:
    """The launcher stage of a grid job's name (adapt-released-none-0: none trains nothing)."""
    if job_name == "base_model":
        return "basemodel"
    if job_name == "pretrain_pairs":
        return "pairs"
    if job_name.startswith("adapt-") and job_name.split("-")[2] == "none":
        return "passthrough"
    return job_name.split("-")[0]


RUNNING_ADAPT = "results/adapt/released/joint/seed0/model"


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    out["PATH"] = f"{BIN}:{out.get('PATH', '')}"
    out.update(extra)
    return out


def sh(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout


def sacct(job_id: str, fields: str = "JobID,JobName,State,Account,Partition,ReqTRES,AllocTRES,Timelimit"):
    """The job's allocation line as a dict, once slurmdbd has the whole record (it lags the job's
    result file a moment, showing a placeholder named 'allocation' with no partition meanwhile)."""
    names = fields.split(",")

    def record():
        out = sh("sacct", "-X", "-n", "-P", "-j", job_id, "-o", fields).splitlines()
        rows = [dict(zip(names, line.split("|"), strict=True)) for line in out]
        return rows and rows[-1]["Partition"] and rows[-1]

    return wait_for(f"the sacct record of job {job_id}", record, 60)


def sacct_states(job_id: str) -> list[str]:
    """Every record of the job, requeued attempts included (sacct -D)."""
    return sh("sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State").split()


def queued(job_id: str) -> bool:
    return bool(sh("squeue", "-h", "-j", job_id, "-o", "%T").strip())


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_ids(text: str) -> dict[str, str]:
    """{job id: job name} from llara.launch's lines in a log."""
    return {m.group(1): m.group(2) for m in JOB_LINE.finditer(text)}


def config_file(tmp: Path, name: str, **changes: dict) -> Path:
    """config/slurm-test.yaml with some sections updated, written to ``tmp/name``."""
    cfg = yaml.safe_load((REPO / "config" / "slurm-test.yaml").read_text())
    for section, values in changes.items():
        cfg[section].update(values)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake_cmd(workdir: Path, configfile: Path, *targets: str) -> list[str]:
    # targets first: --configfile takes every word after it; the recipe, then the site file
    return [
        str(BIN / "snakemake"),
        *targets,
        "--profile",
        "workflow/profiles/slurm",
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        str(SITE),
    ]


def processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose working folder is ``folder`` (jobs run where submitted)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")) == folder:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


# ---- 1-4: the grid through Snakemake --------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(slurm_cluster, tmp_path_factory):
    """The reduced grid run once with the SLURM profile; tests 2-4 rerun single rules in its folder."""
    workdir = tmp_path_factory.mktemp("grid")
    start = time.time()
    out = subprocess.run(
        snakemake_cmd(workdir, REPO / "config" / "slurm-test.yaml"),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return workdir, out, time.time() - start


def test_grid_runs_on_slurm_with_the_requested_resources(grid):
    workdir, out, seconds = grid
    assert out.returncode == 0, out.stderr[-4000:]
    assert (workdir / "results" / "tables" / "ndcg10.md").exists()
    logs = [workdir / p for p in HEAVY_LOGS]
    texts = [p.read_text() for log in logs for p in ([log] if log.is_file() else sorted(log.rglob("*.log")))]
    jobs: dict[str, str] = {}
    for text in texts:
        found = job_ids(text)
        assert len(found) == 1, f"a heavy rule's log names {len(found)} SLURM jobs"
        jobs.update(found)
    names = sorted(jobs.values())
    # base model, pairs; adapt and fine-tune x {none, joint}; encode corpus and queries, search x {none,
    # joint}; mining and BM25
    assert len(names) == 14 and sum(n.startswith("encode-") for n in names) == 4, names
    assert {stage_of(n) for n in names} == {
        "basemodel", "pairs", "adapt", "passthrough", "finetune", "encode", "search", "mine", "bm25"
    }  # fmt: skip
    from llara.gridconfig import stage_resources

    launcher = merged_launcher()
    for job_id, name in jobs.items():
        rec = sacct(job_id)
        res = stage_resources(launcher, stage_of(name))
        partition = "gpu" if stage_of(name) == "search" else "cpu"  # what the site file gave the stage
        assert rec["State"] == "COMPLETED" and rec["JobName"] == name, rec
        assert rec["Account"] == "llara-ci" and rec["Partition"] == partition, rec
        assert f"cpu={res['cpus']}" in rec["ReqTRES"] and f"mem={res['mem_gb']}G" in rec["ReqTRES"], rec
        assert rec["Timelimit"] == f"00:{res['time_min']:02d}:00", rec
        gpu = "gres/gpu=1" if res["gpus"] else None
        assert (gpu in rec["AllocTRES"]) if gpu else ("gres/gpu" not in rec["AllocTRES"]), rec
        stdout = next((workdir / "logs" / "jobs" / name).glob(f"{job_id}_0_log.out")).read_text()
        assert f"llara-site-setup job={job_id}" in stdout, stdout[:2000]  # the site's setup line, in the job
        stage_line = "llara-stage-setup search on " in stdout  # the search stage's own, after it
        assert stage_line == (stage_of(name) == "search"), stdout[:2000]
        if gpu:  # the job saw its (fake) GPU and the CPU code ran anyway
            assert re.search(r"CUDA_VISIBLE_DEVICES=[01][,)]", stdout), stdout[:2000]
    # nothing heavy ran on the login node: every heavy rule's log is a launcher's (one SLURM job each)
    assert all(job_ids(t) for t in texts)
    print(f"grid on SLURM: {seconds:.0f}s, {len(jobs)} jobs")


def test_grid_records_the_cost_of_every_heavy_job_from_sacct(grid):
    """Each heavy rule's cost record (beside its Snakemake benchmark) is sacct's account of its job:
    elapsed time, allocated GPUs, GPU-hours = GPUs x elapsed, CPU-hours = CPUTimeRAW; cost.md shows
    adaptation and fine-tuning GPU-hours and the gain per GPU-hour."""
    workdir, out, _ = grid
    assert out.returncode == 0, out.stderr[-4000:]
    records = sorted((workdir / "results" / "benchmarks").rglob("*.job.json"))
    assert len(records) == 9, records  # base model, 2 adapt, 2 finetune, 4 encode
    from llara.gridconfig import stage_resources

    launcher = merged_launcher()
    seen = []
    for path in records:
        rec = json.loads(path.read_text())
        assert path.with_name(path.name.replace(".job.json", ".tsv")).exists(), (
            path
        )  # the benchmark beside it
        assert rec["cluster"] == "slurm" and rec["source"] == "sacct" and rec["note"] is None, rec
        acct = sacct(rec["job_id"], "JobID,JobName,State,ElapsedRaw,AllocTRES,CPUTimeRAW,Partition")
        stage = stage_of(rec["name"])
        gpus = stage_resources(launcher, stage)["gpus"]
        assert rec["gpus"] == gpus and rec["attempts"] == 1 and rec["states"] == ["COMPLETED"], rec
        assert rec["elapsed_s"] == int(acct["ElapsedRaw"]) and rec["elapsed_s"] <= rec["launcher_wall_s"] + 1
        assert rec["gpu_hours"] == pytest.approx(gpus * rec["elapsed_s"] / 3600)
        assert rec["cpu_hours"] == pytest.approx(int(acct["CPUTimeRAW"]) / 3600)
        assert rec["command_cpu_s"] > 0 and rec["command_max_rss_mb"] > 50  # measured in the job itself
        seen.append((stage, gpus))
    assert sorted(set(seen)) == [
        ("adapt", 1),
        ("basemodel", 0),
        ("encode", 0),
        ("finetune", 1),
        ("passthrough", 0),
    ]
    cost_md = (workdir / "results" / "tables" / "cost.md").read_text()
    assert "| adaptation GPU-h | fine-tuning GPU-h |" in cost_md and "SLURM accounting (sacct)" in cost_md
    cost = pd.read_csv(workdir / "results" / "tables" / "cost.csv").set_index("variant")
    for variant in ("none", "joint"):
        assert cost.loc[variant, "adapt_cost_source"] == cost.loc[variant, "finetune_cost_source"] == "sacct"
        # elapsed is whole seconds: a 1-s job is 1/3600 GPU-hours; none's pass-through may take 0 s
        assert cost.loc[variant, "finetune_gpu_hours"] > 0 and cost.loc[variant, "adapt_gpu_hours"] >= 0
    print("cost records:", {p.stem: json.loads(p.read_text())["elapsed_s"] for p in records})


def test_failing_stage_fails_its_rule_with_job_id_and_log_tail(grid, tmp_path):
    workdir, _, _ = grid
    bad = config_file(
        tmp_path, "bad.yaml", adapt={"use_lora": True, "lora_target_modules": ["no_such_module"]}
    )
    out = subprocess.run(
        snakemake_cmd(workdir, bad, RUNNING_ADAPT),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    shown = out.stdout + out.stderr
    assert out.returncode != 0
    (job_id, name), *_ = job_ids(shown).items()
    assert name == "adapt-released-joint-0"
    assert f"job {job_id} (adapt-released-joint-0) failed, state FAILED" in shown
    assert f"tail of {workdir}/logs/jobs/{name}/{job_id}_0_log.err" in shown or f"{job_id}_0_log.err" in shown
    assert "Target modules {'no_such_module'} not found" in shown  # the stage's own error, from the job's log
    assert sacct(job_id)["State"] == "FAILED"
    assert not (workdir / RUNNING_ADAPT).exists()  # no output left that could pass for a result
    assert (
        "adapt"
        in subprocess.run(
            [*snakemake_cmd(workdir, bad, RUNNING_ADAPT), "-n"],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
        ).stdout
    )


def start_long_adapt(workdir: Path, tmp_path: Path, log: Path):
    """Snakemake (its own process group, as in a terminal) running adapt for a very long time."""
    long = config_file(tmp_path, "long.yaml", adapt={"max_steps": 1_000_000, "save_steps": 1_000_000})
    partial = workdir / f"{RUNNING_ADAPT}.partial"
    rule_log = workdir / "logs" / "adapt" / "released" / "joint" / "seed0.log"
    subprocess.run(["rm", "-rf", str(partial), str(rule_log)], check=True)  # another config's checkpoints
    proc = subprocess.Popen(
        snakemake_cmd(workdir, long, RUNNING_ADAPT),
        cwd=REPO,
        env=env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    job_id = wait_for(
        "the adapt job id", lambda: rule_log.exists() and next(iter(job_ids(rule_log.read_text())), None), 120
    )
    job_out = workdir / "logs" / "jobs" / "adapt-released-joint-0" / f"{job_id}_0_log.out"
    wait_for(
        "the stage to start in the job", lambda: job_out.exists() and "task 0/1" in job_out.read_text(), 120
    )
    return proc, job_id


def test_sigint_to_snakemake_cancels_its_jobs(grid, tmp_path):
    workdir, _, _ = grid
    log = tmp_path / "snakemake.log"
    proc, job_id = start_long_adapt(workdir, tmp_path, log)
    time.sleep(3)  # the stage is importing / training
    assert queued(job_id)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    start = time.time()
    rc = proc.wait(timeout=120)
    seconds = time.time() - start
    assert rc != 0
    assert not queued(job_id), "the job is still in squeue after Snakemake exited"
    assert sacct(job_id)["State"].startswith("CANCELLED")
    assert (
        f"cancelling job {job_id}"
        in (workdir / "logs" / "adapt" / "released" / "joint" / "seed0.log").read_text()
    )
    time.sleep(2)
    assert not processes_in(workdir), "processes of the cancelled job are still running"
    assert not (workdir / RUNNING_ADAPT).exists()
    print(f"SIGINT -> Snakemake exited and job {job_id} left the queue in {seconds:.1f}s")


def test_job_cancelled_from_outside_fails_its_rule_in_bounded_time(grid, tmp_path):
    workdir, _, _ = grid
    log = tmp_path / "snakemake.log"
    proc, job_id = start_long_adapt(workdir, tmp_path, log)
    sh("scancel", job_id)
    start = time.time()
    try:
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    seconds = time.time() - start
    shown = log.read_text()
    assert rc != 0 and seconds < 60, f"rc {rc} after {seconds:.0f}s"
    assert f"job {job_id} (adapt-released-joint-0) failed, state CANCELLED" in shown
    assert not (workdir / RUNNING_ADAPT).exists()
    print(f"scancel -> rule failed, Snakemake exited in {seconds:.1f}s")


def launch_cmd(name: str, folder: Path, *options: str) -> list[str]:
    return [PY, "-m", "llara.launch", "--cluster", "slurm", "--name", name, "--folder", str(folder), "--poll-s", "1",
            "--cpus", "1", "--mem-gb", "1", "--account", "llara-ci", *options]  # fmt: skip


@pytest.mark.parametrize("style", ["gpus", "gres"])
def test_gpu_request_styles_reach_the_gpu_partition(slurm_cluster, tmp_path, style):
    """Both ways of asking for a GPU; the job sees its fake GPU, torch none, and gets its CPUs' threads."""
    probe = (
        "import os, torch; "
        "print('seen', os.environ['CUDA_VISIBLE_DEVICES'], torch.cuda.is_available(), torch.get_num_threads())"
    )
    options = ["--partition", "gpu", "--gpus", "1", "--gpu-request", style, "--cpus", "2"]
    cmd = [*launch_cmd(f"gpu-{style}", tmp_path / "jobs", *options), "--", PY, "-c", probe]
    # OMP_NUM_THREADS=1 as the rules set it on SLURM (login-node threads): the job gets its CPUs instead
    done = subprocess.run(cmd, env=env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (job_id, _), *_ = job_ids(done.stdout).items()
    rec = sacct(job_id)
    assert rec["Partition"] == "gpu" and "gres/gpu=1" in rec["AllocTRES"] and "cpu=2" in rec["ReqTRES"], rec
    flag = "--gpus-per-node=1" if style == "gpus" else "--gres=gpu:1"
    assert flag in (tmp_path / "jobs" / f"{job_id}_submission.sh").read_text()
    assert re.search(r"seen [01] False 2\b", (tmp_path / "jobs" / f"{job_id}_0_log.out").read_text())


def test_pending_job_cancelled_without_accounting_fails_in_bounded_time(slurm_cluster, tmp_path):
    """Without sacct submitit never learns a job's end; the launcher asks squeue instead."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\necho 'sacct: accounting storage is disabled' >&2\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    record = tmp_path / "never-runs.job.json"
    cmd = launch_cmd(
        "never-runs", tmp_path / "jobs", "--slurm-arg", "begin=now+3600", "--results-wait-s", "2",
        "--record", str(record),
    )  # fmt: skip
    proc = subprocess.Popen(
        [*cmd, "--", PY, "-c", "print('hello')"],
        env=env(PATH=f"{fake}:{BIN}:{os.environ['PATH']}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    job_id = wait_for("the job id", lambda: next(iter(job_ids(proc.stdout.readline())), None), 60)
    sh("scancel", job_id)
    start = time.time()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and time.time() - start < 60
    assert f"job {job_id} (never-runs) failed, state CANCELLED" in out
    rec = json.loads(record.read_text())  # without accounting: no numbers, and the reason
    assert rec["job_id"] == job_id and rec["state"] == "CANCELLED" and rec["source"] is None
    assert rec["elapsed_s"] is None and rec["gpu_hours"] is None
    assert rec["note"] == "sacct failed: sacct: accounting storage is disabled"


# ---- 5: time limit, requeue, resume -------------------------------------------------------------
WORDS = "river city music science history king war church school language island mountain team".split()


def pretrain_pairs(path: Path, n: int = 64) -> Path:
    rows = []
    for i in range(n):
        text = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12 + i % 9))
        nxt = " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(10))
        rows.append({"input": text, "output_summarize": text, "output_predict": nxt})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def adapt_args(model: Path, train: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "llara.adapt", "--model_name_or_path", str(model), "--train_file", str(train),
            "--output_dir", str(out), "--variant", "joint", "--per_device_train_batch_size", "2",
            "--max_length", "64", "--target_max_length", "64", "--learning_rate", "1e-3", "--seed", "0",
            "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", *extra]  # fmt: skip


def complete_checkpoints(folder: Path) -> list[int]:
    """Steps of the checkpoints the Trainer finished writing (trainer_state.json comes last)."""
    return sorted(
        int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()
    )


def losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "llara_config.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


@pytest.fixture
def prepared_model(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with the slot tokens already added. llara.adapt would otherwise add them with
    transformers' mean resizing, which samples the new embedding rows from the unseeded global RNG:
    two runs with the same --seed then differ by ~1e-6 from the first step on."""
    from transformers import AutoModelForCausalLM

    from llara.model import load_tokenizer, resize_for_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(tiny_model_dir, "released", allow_untrained_slots=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    resize_for_tokenizer(model, tokenizer)
    out = tmp_path / "base"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def steps_to_outlast_the_warning(model: Path, train: Path, tmp_path: Path) -> tuple[int, int]:
    """Steps for about 70 s of training at the speed measured here and now (the warning comes at
    most 48 s after the start; machines and their load differ: 60-180 steps/s were seen on one),
    and the checkpoint interval."""
    probe = tmp_path / "probe"
    args = adapt_args(model, train, probe, "--max_steps", "300", "--save_strategy", "no")
    subprocess.run([PY, *args], env=env(), check=True, capture_output=True, timeout=300)
    history = json.loads((probe / "llara_config.json").read_text())["log_history"]
    speed = next(h["train_steps_per_second"] for h in history if "train_steps_per_second" in h)
    total = max(3000, math.ceil(speed * 70 / 500) * 500)
    every = max(100, round(speed * 2.5 / 50) * 50)  # a checkpoint every ~2.5 s: kills rarely land mid-save
    return total, every


def test_time_limit_requeues_and_resumes_from_checkpoint(slurm_cluster, prepared_model, tmp_path):
    """A 1-minute limit with USR2 12 s before it: slurmctld checks limits every 30 s and sends the
    warning up to 30 s early, so it comes 18-48 s after the start (after the first checkpoint),
    before the kill at 60-90 s. Once the job is requeued the test lifts its limit, so the run has
    exactly one interruption."""
    train = pretrain_pairs(tmp_path / "pairs.jsonl")
    total, every = steps_to_outlast_the_warning(prepared_model, train, tmp_path)
    steps = [
        "--max_steps",
        str(total),
        "--save_strategy",
        "steps",
        "--save_steps",
        str(every),
        "--logging_steps",
        "50",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    launch = subprocess.Popen(
        [*launch_cmd("requeue", tmp_path / "jobs", "--time-min", "1", "--signal-delay-s", "12",
                     "--record", str(tmp_path / "requeue.job.json")), "--",
         PY, *adapt_args(prepared_model, train, resumed, *steps, "--log_level", "info")],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    reference = subprocess.Popen(
        [PY, *adapt_args(prepared_model, train, straight, *steps)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        job_id = wait_for("the job id", lambda: next(iter(job_ids(launch.stdout.readline())), None), 60)
        wait_for(
            "the requeue", lambda: "REQUEUED" in sacct_states(job_id) or launch.poll() is not None, 200, 0.3
        )
        assert launch.poll() is None, (
            f"the job ended before its time limit (raise max_steps): {launch.stdout.read()}"
        )
        kept = complete_checkpoints(Path(f"{resumed}.partial") / "checkpoints")
        sh("scontrol", "update", f"JobId={job_id}", "TimeLimit=10")
        out, _ = launch.communicate(timeout=400)
        assert reference.wait(timeout=400) == 0
    finally:
        for proc in (launch, reference):
            if proc.poll() is None:
                proc.kill()
    job_log = (tmp_path / "jobs" / f"{job_id}_0_log.err").read_text()
    assert "trainer_state.json'" not in job_log, (
        "the kill landed while a checkpoint was written and the rerun took that incomplete checkpoint: "
        "llara.training.last_checkpoint must skip checkpoints without trainer_state.json"
    )
    assert launch.returncode == 0, out
    assert kept, "the job was requeued before its first checkpoint: the stage starts too slowly here"
    assert sacct_states(job_id) == ["REQUEUED", "COMPLETED"]
    rec = json.loads((tmp_path / "requeue.job.json").read_text())  # both attempts are paid for
    elapsed = [int(x) for x in sh("sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "ElapsedRaw").split()]
    assert rec["attempts"] == 2 and rec["states"] == ["REQUEUED", "COMPLETED"] and rec["source"] == "sacct"
    assert rec["elapsed_s"] == sum(elapsed) and min(elapsed) > 0 and rec["gpus"] == 0
    assert "Caught signal SIGUSR2" in job_log and "this job is timed-out" in job_log
    job_out = (tmp_path / "jobs" / f"{job_id}_0_log.out").read_text()
    assert "stopping the command before requeue" in job_out and "SLURM_RESTART_COUNT=1" in job_out
    # USR2: the stage saved at the step it had reached (llara.training.SaveOnSignal), not only at the
    # last multiple of save_steps, and the requeued run resumed from that step
    saved = re.search(r"signal SIG(?:USR2|TERM): saved a checkpoint at step (\d+)", job_log)
    assert saved, job_log[-3000:]
    step = int(saved.group(1))
    assert kept[-1] == step, (kept, step)
    resume_line = f"Loading model from {resumed}.partial/checkpoints/checkpoint-{step}."
    assert resume_line in job_log, "the requeued run did not resume from the step the signal saved"
    a, b = losses(straight), losses(resumed)
    assert sorted(a) == sorted(b) and max(a) == total
    # the logged loss is a mean over the last logging_steps steps: the one window the resume cuts in
    # two (it restarts its sum at the resume) is not comparable; every other is
    cut = -(-step // 50) * 50 if step % 50 else None
    a.pop(cut, None)
    b.pop(cut, None)
    # Same trajectory up to float noise, as tests/test_adapt.py's resume test: CPU kernels are not
    # bit-reproducible from one process to another, and over thousands of steps Adam turns 1e-9
    # gradient noise into lr-sized steps on near-zero gradients (seen here: losses 1e-5 apart, weights
    # 3.9e-3). A resume bug (wrong step, data order or optimizer state) moves the 50-step mean losses
    # by far more than 1e-4.
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    wa, wb = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=5e-3)
    print(f"job {job_id}: saved at step {step} of {total} on USR2, requeued, resumed, same weights", end=" ")


# ---- 6: two tasks, DDP on CPU ---------------------------------------------------------------------
DIST_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
)


def test_two_tasks_get_a_distributed_environment_and_train_with_ddp(slurm_cluster, tiny_model_dir, tmp_path):
    train = pretrain_pairs(tmp_path / "pairs.jsonl", n=8)
    out = tmp_path / "ddp"
    dump = "import json, os, sys; json.dump({k: os.environ.get(k) for k in sys.argv[2:]}, open(sys.argv[1], 'w'))"
    stage = " ".join(
        [f"{PY} -c \"{dump}\" {tmp_path}/env.$SLURM_PROCID.json {' '.join(DIST_VARS)} &&",
         f"exec {PY}", *adapt_args(tiny_model_dir, train, out, "--num_train_epochs", "1", "--save_strategy", "no",
                                   "--logging_steps", "1")]
    )  # fmt: skip
    cmd = [*launch_cmd("ddp", tmp_path / "jobs", "--tasks", "2"), "--", "sh", "-c", stage]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (job_id, _), *_ = job_ids(done.stdout).items()
    envs = [json.loads((tmp_path / f"env.{rank}.json").read_text()) for rank in (0, 1)]
    for rank, e in enumerate(envs):
        assert (e["RANK"], e["LOCAL_RANK"], e["SLURM_PROCID"]) == (str(rank),) * 3
        assert e["WORLD_SIZE"] == e["LOCAL_WORLD_SIZE"] == "2"
    assert (
        envs[0]["MASTER_ADDR"] == envs[1]["MASTER_ADDR"] and envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    )
    assert envs[0]["MASTER_ADDR"] and int(envs[0]["MASTER_PORT"]) > 1024
    cfg = json.loads((out / "llara_config.json").read_text())
    assert cfg["global_step"] == 2  # 8 rows, 2 per process, 2 processes: the data was sharded
    assert "cpu=2" in sacct(job_id)["ReqTRES"]
