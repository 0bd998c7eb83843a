"""Real SLURM preemption of a training job on the two-node local cluster
(``bash workflow/ci/local-slurm.sh start --nodes 2``: partition ``low`` with PreemptMode=REQUEUE and
GraceTime, partition ``high`` above it, PreemptType=preempt/partition_prio).

An adaptation job (``llara.adapt``, DDP on 2 nodes x 1 task, gloo on CPU) runs in ``low``. A job
submitted to ``high`` that needs every CPU of both nodes (the uninterrupted reference run of the same
training) preempts it mid-training. The preempted job

* saves a checkpoint at the step it had reached (``llara.training.SaveOnSignal``; both ranks the
  same step): with ``--save_steps 1000000`` that signal's save is the only checkpoint, so the step
  is not a multiple of ``save_steps``;
* is requeued by SLURM (``sacct -D``: PREEMPTED, then COMPLETED), runs again after the ``high`` job,
  resumes from that checkpoint (``Loading model from .../checkpoint-N``) and
* ends with the per-step losses and final weights of the uninterrupted run.

Twice: with the cluster's default preemption, SIGTERM to the tasks only (the launcher's task then
waits for SLURM's requeue), and with ``SlurmctldParameters=preempt_send_user_signal`` (Slurm 22.05's
name; newer releases call it ``PreemptParameters=send_user_signal``: both are handled), where the tasks get the job's warning
signal (USR2, submitit's) first and submitit requeues the job itself (``sacct``: REQUEUED). The second case switches the
cluster's setting for the test (``scontrol reconfigure`` of the local cluster's own slurm.conf, put
back afterwards) and is skipped on a cluster whose slurm.conf local-slurm.sh did not write.

Sizing: slurmctld preempts at its next scheduling pass (a few seconds after the ``high`` job is
submitted); the stage saves at the next step end. A probe measures the training speed here and now
and the run is sized to about 15 s of training, so it outlasts the preemption on a busy machine
while the whole test (probe, preemption, GraceTime 10 s, the 30 s requeue hold of cred_expire, the
reference, the resumed run) stays within about 3 minutes.

Also: a command that saves nothing (encode, search, mining; or a training stage still loading its
model when the preemption comes) dies of the SIGTERM; its job must still be requeued and run again,
not end FAILED within the grace time.

Skipped when the cluster has one node (the default ``start``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .test_slurm import (
    PY,
    adapt_args,
    complete_checkpoints,
    env,
    job_ids,
    launch_cmd,
    losses,
    pretrain_pairs,
    sacct_states,
    sh,
    wait_for,
)

pytestmark = pytest.mark.slurm

HOW = "start the two-node cluster: `bash workflow/ci/local-slurm.sh start --nodes 2`"
SAVE_STEPS = 1_000_000  # no periodic checkpoint: the only one is the signal's
SAVED = re.compile(r"adapt: signal (\w+): saved a checkpoint at step (\d+) in (\S+); stopping for a requeue")
LOCAL_CONF_HEADER = "# Written by workflow/ci/local-slurm.sh"


def hostnames(nodelist: str) -> list[str]:
    return sh("scontrol", "show", "hostnames", nodelist).split()


def show_config() -> dict[str, str]:
    rows = (line.partition("=") for line in sh("scontrol", "show", "config").splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, _, v in rows}


@pytest.fixture(scope="module")
def cluster(slurm_cluster) -> dict:
    """Two nodes and the partitions low (preempted: REQUEUE, its GraceTime) and high; else skip."""
    nodes = sorted(set(sh("sinfo", "-h", "-N", "-o", "%N").split()))
    if len(nodes) < 2:
        pytest.skip(f"the cluster has one node ({', '.join(nodes)}); these tests need two: {HOW}")
    parts = {}
    for name in ("low", "high"):
        info = subprocess.run(["scontrol", "show", "partition", name, "-o"], capture_output=True, text=True)
        if info.returncode != 0:
            pytest.skip(f"no partition {name!r} (the two-node cluster of local-slurm.sh has low and high)")
        parts[name] = dict(kv.split("=", 1) for kv in info.stdout.split() if "=" in kv)
    assert parts["low"]["PreemptMode"] == "REQUEUE" and int(parts["high"]["PriorityTier"]) > int(
        parts["low"]["PriorityTier"]
    ), parts
    assert show_config()["PreemptType"] == "preempt/partition_prio"
    cpus = {n: int(sh("sinfo", "-h", "-N", "-n", n, "-o", "%c").split()[0]) for n in nodes[:2]}
    assert len(set(cpus.values())) == 1 and cpus[nodes[0]] >= 2, cpus  # low: 1 CPU a node; high: all
    return {"nodes": nodes[:2], "cpus": cpus[nodes[0]], "grace": int(parts["low"]["GraceTime"])}


@contextlib.contextmanager
def preemption_signal(user_signal: bool):
    """The cluster's preemption sends the job's warning signal (USR2) first when ``user_signal``, plain
    SIGTERM when not; switched with ``scontrol reconfigure`` where needed, and put back afterwards."""
    config = show_config()
    modern = "PreemptParameters" in config  # Slurm >= 23.02
    key, option = ("PreemptParameters", "send_user_signal") if modern else (
        "SlurmctldParameters", "preempt_send_user_signal")  # fmt: skip
    current = option in config.get(key, "").split(",")
    if current == user_signal:
        yield f"{key}={config.get(key)}"
        return
    conf = Path(config["SLURM_CONF"])
    original = conf.read_text()
    if not original.startswith(LOCAL_CONF_HEADER):
        pytest.skip(f"{conf} is not the local cluster's (local-slurm.sh): {key} is left as it is")
    lines = original.splitlines()
    have = [i for i, line in enumerate(lines) if line.split("=", 1)[0].strip().lower() == key.lower()]
    if len(have) > 1:
        pytest.skip(f"{conf} sets {key} more than once: not switched")
    values = [v for v in (lines[have[0]].split("=", 1)[1].split(",") if have else []) if v and v != option]
    values += [option] if user_signal else []
    line = f"{key}={','.join(values)}" if values else None
    if have:
        lines[have[0]:have[0] + 1] = [line] if line else []  # fmt: skip
    elif line:
        lines.append(line)
    conf.write_text("\n".join(lines) + "\n")
    try:
        sh("scontrol", "reconfigure")
        wait_for(
            f"{key} switched", lambda: (option in show_config().get(key, "").split(",")) == user_signal, 30
        )
        yield f"{key}={show_config().get(key)}"
    finally:
        conf.write_text(original)
        sh("scontrol", "reconfigure")
        wait_for(f"{key} put back", lambda: (option in show_config().get(key, "").split(",")) == current, 30)


@pytest.fixture(scope="module")
def base_model(tiny_model_dir, tmp_path_factory) -> Path:
    """As test_slurm.py's prepared_model (slot tokens already added), once for this module."""
    from transformers import AutoModelForCausalLM

    from llara.model import load_tokenizer, resize_for_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(tiny_model_dir, "released", allow_untrained_slots=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    resize_for_tokenizer(model, tokenizer)
    out = tmp_path_factory.mktemp("preempt-base")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return pretrain_pairs(tmp_path_factory.mktemp("preempt-data") / "pairs.jsonl", n=64)


def stage(model: Path, train: Path, out: Path, *extra: str) -> list[str]:
    """The adaptation command; one thread per process whatever CPUs the job has (the reference asks
    for all of them), so both runs do the same arithmetic."""
    return ["env", "OMP_NUM_THREADS=1", PY, *adapt_args(model, train, out, "--logging_steps", "1", *extra)]


def start_launcher(
    name: str, folder: Path, command: list[str], *options: str
) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [*launch_cmd(name, folder, "--nodes", "2", "--tasks", "1", *options), "--", *command],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    job_id = wait_for(f"the job id of {name}", lambda: next(iter(job_ids(proc.stdout.readline())), None), 60)
    return proc, job_id


@pytest.fixture(scope="module")
def steps(cluster, base_model, pairs, tmp_path_factory) -> int:
    """Steps for about 15 s of 2-node training at the speed measured here and now (a 2-node probe in
    partition cpu; 4-25 steps/s were seen on this 2-core machine, depending on its other work)."""
    tmp = tmp_path_factory.mktemp("preempt-probe")
    probe = tmp / "probe"
    command = stage(base_model, pairs, probe, "--max_steps", "100", "--save_strategy", "no")
    proc, job_id = start_launcher("preempt-probe", tmp / "jobs", command)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    history = json.loads((probe / "llara_config.json").read_text())["log_history"]
    speed = next(h["train_steps_per_second"] for h in history if "train_steps_per_second" in h)
    total = max(300, math.ceil(speed * 15 / 50) * 50)
    print(f"probe job {job_id}: {speed:.1f} steps/s -> {total} steps", end=" ")
    return total


def attempts(job_id: str) -> list[dict[str, str]]:
    fields = "JobID,State,Partition,NodeList,Start,End".split(",")
    out = sh("sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(fields)).splitlines()
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out]


def ranks_logs(folder: Path, job_id: str) -> tuple[list[str], list[str]]:
    """(stdout, stderr) of ranks 0 and 1, appended across the job's attempts."""
    outs = [(folder / f"{job_id}_{r}_log.out").read_text() for r in (0, 1)]
    errs = [(folder / f"{job_id}_{r}_log.err").read_text() for r in (0, 1)]
    return outs, errs


@pytest.mark.parametrize("user_signal", [False, True], ids=["sigterm-only", "send-user-signal"])
def test_preempted_training_is_requeued_and_resumes_from_the_step_it_reached(
    cluster, base_model, pairs, steps, tmp_path, user_signal
):
    nodes, grace = cluster["nodes"], cluster["grace"]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    train = ["--max_steps", str(steps), "--save_strategy", "steps", "--save_steps", str(SAVE_STEPS)]
    folder, ref_folder = tmp_path / "jobs" / "low", tmp_path / "jobs" / "high"
    record = tmp_path / "low.job.json"
    with preemption_signal(user_signal) as setting:
        low, low_id = start_launcher(
            "preempt-low", folder, stage(base_model, pairs, resumed, *train, "--log_level", "info"),
            "--partition", "low", "--time-min", "20", "--stop-grace-s", str(max(grace - 2, 1)),
            "--requeue-wait-s", "300", "--record", str(record),
        )  # fmt: skip
        high = None
        try:
            out0 = folder / f"{low_id}_0_log.out"
            wait_for(  # the low job is training (PrinterCallback's first loss line in rank 0's log)
                "the low job to train",
                lambda: low.poll() is not None or (out0.exists() and "{'loss'" in out0.read_text()),
                180,
                0.2,
            )
            assert low.poll() is None, f"the low job ended before it trained: {low.stdout.read()}"
            t0 = time.time()
            high, high_id = start_launcher(
                "preempt-high", ref_folder, stage(base_model, pairs, straight, *train),
                "--partition", "high", "--cpus", str(cluster["cpus"]), "--time-min", "20",
            )  # fmt: skip
            wait_for(
                "the preemption",
                lambda: {"PREEMPTED", "REQUEUED"} & set(sacct_states(low_id)) or low.poll() is not None,
                120,
                0.3,
            )
            t_preempt = time.time() - t0
            assert low.poll() is None, f"the low job ended before it was preempted: {low.stdout.read()}"
            checkpoints = Path(f"{resumed}.partial") / "checkpoints"
            wait_for(
                "the requeue", lambda: "PENDING" in sh("squeue", "-h", "-j", low_id, "-o", "%T"), 60, 0.3
            )
            kept = complete_checkpoints(checkpoints)  # what the preempted attempt left
            high_out, _ = high.communicate(timeout=300)
            low_out, _ = low.communicate(timeout=300)
            t_end = time.time() - t0
        finally:
            for proc in (low, high):
                if proc is not None and proc.poll() is None:
                    proc.kill()
            # nothing of this test stays queued (an error for jobs that have ended is ignored)
            subprocess.run(["scancel", low_id, *([high_id] if high else [])], capture_output=True)
    assert high.returncode == 0, high_out
    assert low.returncode == 0, low_out
    outs, errs = ranks_logs(folder, low_id)
    saved = [SAVED.findall(err) for err in errs]  # each rank's own line, first attempt
    assert all(len(s) == 1 for s in saved), (saved, errs[0][-3000:])
    (sig0, step0, where0), (sig1, step1, _) = saved[0][0], saved[1][0]
    n = int(step0)
    assert step1 == step0, "the ranks saved different steps"
    assert 0 < n < steps and n % SAVE_STEPS != 0, n
    assert where0 == str(checkpoints)
    assert kept == [n], f"checkpoints left by the preempted attempt: {kept} (only the signal's expected)"
    # the rerun resumed from it (the Trainer's own line, rank 0 logs at info)
    assert f"Loading model from {checkpoints}/checkpoint-{n}." in errs[0], errs[0][-3000:]
    assert all("SLURM_RESTART_COUNT=1" in out for out in outs), outs[0][-3000:]
    # no task of the preempted attempt reported a failure: a stale failed result of task k would be
    # read by the launcher if task k's new result came after the others' at the end of the rerun
    for rank, err in enumerate(errs):
        first = err.split("SLURM_RESTART_COUNT=1")[0]
        assert "Submitted job triggered an exception" not in first, (
            f"rank {rank}'s task failed in the preempted attempt (the stage did not exit with status 75 "
            f"after its save): {first[-2500:]}"
        )
    # SLURM's record: the attempt in low ended PREEMPTED (SLURM requeued it after GraceTime) or, with
    # the warning signal, REQUEUED (submitit's task requeued it itself: scontrol requeue); the high
    # job ran between the two attempts; the second attempt completed
    low_rows, high_rows = attempts(low_id), attempts(high_id)
    first = "REQUEUED" if user_signal else "PREEMPTED"
    assert [r["State"].split()[0] for r in low_rows] == [first, "COMPLETED"], low_rows
    assert [r["State"] for r in high_rows] == ["COMPLETED"], high_rows
    assert all(hostnames(r["NodeList"]) == nodes for r in low_rows + high_rows), (low_rows, high_rows)
    assert low_rows[0]["End"] <= high_rows[0]["Start"] <= high_rows[0]["End"] <= low_rows[1]["Start"], (
        low_rows,
        high_rows,
    )
    rec = json.loads(record.read_text())  # both attempts are paid for
    assert rec["attempts"] == 2 and rec["states"] == [r["State"] for r in low_rows], rec
    if user_signal:  # USR2 reached every process; submitit's task (rank 0) stopped the stage, requeued
        assert sig0 == sig1 == "SIGUSR2", saved
        assert "Caught signal SIGUSR2" in errs[0] and "this job is preempted" in errs[0], errs[0][-3000:]
        assert "stopping the command before requeue" in outs[0], outs[0][-3000:]
        assert "DUE TO JOB REQUEUE" in errs[0], errs[0][-3000:]
    else:  # SIGTERM only: each stage saved, its task waited for SLURM's requeue (not reporting a result)
        assert sig0 == sig1 == "SIGTERM", saved
        assert all("stopped for a requeue (status 75); waiting" in out for out in outs), outs[0][-3000:]
        assert "Caught signal SIGUSR2" not in errs[0]
        assert "DUE TO PREEMPTION" in errs[0], errs[0][-3000:]
    a, b = losses(straight), losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    # as test_slurm.py's requeue test: the same trajectory up to CPU float noise (a resume at a wrong
    # step, with the wrong data order or optimizer state moves the losses by far more)
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-3), step
    wa, wb = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=5e-3)
    loss_diff = max(abs(a[s] - b[s]) for s in a)
    weight_diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    print(
        f"[{setting}] low job {low_id} preempted {t_preempt:.0f}s after high job {high_id} was submitted, "
        f"saved step {n} of {steps} ({sig0}), requeued, resumed; both done {t_end:.0f}s after; "
        f"max |loss diff| {loss_diff:.1e}, max |weight diff| {weight_diff:.1e}",
        end=" ",
    )


def test_a_preempted_command_that_saves_nothing_is_requeued_and_run_again(cluster, tmp_path):
    """A launcher job in ``low`` whose command has no SaveOnSignal (SIGTERM's default action kills it)
    is preempted by a ``high`` job needing every CPU. Its first attempt sleeps, its second (after the
    requeue, SLURM_RESTART_COUNT=1) ends at once: the launcher must succeed with PREEMPTED, COMPLETED
    in sacct, not report the command 'killed by signal 15' of a job that SLURM left FAILED (a job
    whose tasks all end within GraceTime is not requeued)."""
    probe = (
        "import os, time; n = os.environ.get('SLURM_RESTART_COUNT', '0'); "
        "print('attempt', n, 'started', flush=True); time.sleep(300 if n == '0' else 0)"
    )
    folder = tmp_path / "jobs"
    cmd = [*launch_cmd("preempt-plain", folder, "--partition", "low", "--time-min", "10", "--requeue-wait-s",
                       "120"), "--", PY, "-c", probe]  # fmt: skip
    low = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    low_id = high = None
    try:
        low_id = wait_for("the job id", lambda: next(iter(job_ids(low.stdout.readline())), None), 60)
        out0 = folder / f"{low_id}_0_log.out"
        wait_for(
            "the command to start", lambda: out0.exists() and "attempt 0 started" in out0.read_text(), 120
        )
        high = sh(
            "sbatch", "--parsable", "--account=llara-ci", "--partition=high", "--nodes=2", "--ntasks-per-node=1",
            f"--cpus-per-task={cluster['cpus']}", "--time=5", f"--output={tmp_path}/high.out", "--wrap", "sleep 2",
        ).strip()  # fmt: skip
        out, _ = low.communicate(timeout=240)
    finally:
        if low.poll() is None:  # only a launcher that did not end cancels its job: a finished job
            low.kill()  # still completing would be recorded CANCELLED by this scancel
            subprocess.run(["scancel", *[j for j in (low_id, high) if j]], capture_output=True)
    log = out0.read_text()
    final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    rows = wait_for(  # sacct lags the job's end a moment
        f"the final record of job {low_id}",
        lambda: (rows := attempts(low_id)) and rows[-1]["State"].split()[0] in final and rows,
        60,
    )
    states = [r["State"].split()[0] for r in rows]
    assert low.returncode == 0 and states == ["PREEMPTED", "COMPLETED"], (
        f"launcher exit {low.returncode}, sacct {states}: the preempted command died of SIGTERM and its task "
        f"reported that as the job's result instead of waiting for SLURM's requeue:\n{out[-2000:]}"
    )
    assert "attempt 0 started" in log and "attempt 1 started" in log, log[-2000:]
