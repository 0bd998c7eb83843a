"""Training jobs on two nodes through the launcher (``python -m llara.launch --cluster slurm --nodes 2``)
on the two-node local cluster (``bash workflow/ci/local-slurm.sh start --nodes 2``).

1. adaptation (``llara.adapt``, DDP over gloo on CPU) on 2 nodes x 1 task gives the per-step losses
   and final weights of the same job on 1 node x 2 tasks (same global batch: 2 processes x 2 rows);
   ``sacct`` names both nodes; each rank ran on its own node (rank 0 on the first: MASTER_ADDR) and
   left its own logs (``<jobid>_<rank>_log.out`` / ``.err``);
2. the same for fine-tuning (``llara.finetune``, LoRA, in-batch negatives shared across the two nodes
   with ``--cross_device_negatives``);
3. a rank that fails fails the job and the launcher, and the launcher's output shows *that rank's*
   error line, also when the rank is not on the first node (its log is ``<jobid>_1_log.err``);
4. a rank that fails stops the other ranks: the job ends (FAILED) soon after, instead of the other
   ranks running on (or hanging in a collective) until the time limit.

Skipped when the cluster has one node (the default ``start``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from . import test_slurm
from .test_slurm import (
    PY,
    adapt_args,
    env,
    job_ids,
    launch_cmd,
    losses,
    pretrain_pairs,
    sacct,
    sh,
    wait_for,
)

pytestmark = pytest.mark.slurm
prepared_model = test_slurm.prepared_model  # the fixture: the tiny model with its slot tokens

HOW = "start the two-node cluster: `bash workflow/ci/local-slurm.sh start --nodes 2`"
# Prints where each rank runs (the job's stdout, <jobid>_<rank>_log.out), then runs the stage as given.
WHERE = (
    'echo "rank $RANK of $WORLD_SIZE on $SLURMD_NODENAME, master $MASTER_ADDR:$MASTER_PORT"; exec "$0" "$@"'
)
RANK_LINE = re.compile(r"^rank (\d+) of (\d+) on (\S+), master (\S+):(\d+)$", re.M)


def hostnames(nodelist: str) -> list[str]:
    return sh("scontrol", "show", "hostnames", nodelist).split()


@pytest.fixture(scope="module")
def two_nodes(slurm_cluster) -> list[str]:
    """The cluster's first two nodes; skips on a one-node cluster."""
    nodes = sorted(set(sh("sinfo", "-h", "-N", "-o", "%N").split()))
    if len(nodes) < 2:
        pytest.skip(f"the cluster has one node ({', '.join(nodes)}); these tests need two: {HOW}")
    return nodes[:2]


def ended_record(job_id: str) -> dict[str, str]:
    """The job's allocation record once it has ended and sacct names all its nodes (slurmdbd lags: a
    2-node job showed NodeList=n1 with NNodes=2 for a moment)."""

    def check():
        rec = sacct(job_id, "JobID,JobName,State,NodeList,NNodes,Partition,ExitCode")
        done = rec["State"].split()[0] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")
        return rec if done and len(hostnames(rec["NodeList"])) == int(rec["NNodes"]) else None

    return wait_for(f"the final sacct record of job {job_id}", check, 60)


def launch(tmp_path: Path, name: str, nodes: int, tasks: int, *command: str, timeout: float = 300):
    """Run ``command`` through the launcher on ``nodes`` x ``tasks``, each rank printing where it runs;
    returns (the launcher's result, job id, its job folder, seconds)."""
    folder = tmp_path / "jobs" / name
    cmd = [*launch_cmd(name, folder, "--nodes", str(nodes), "--tasks", str(tasks)), "--",
           "sh", "-c", WHERE, *command]  # fmt: skip
    start = time.time()
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    seconds = time.time() - start
    found = job_ids(done.stdout)
    assert len(found) == 1, done.stdout + done.stderr
    return done, next(iter(found)), folder, seconds


def ranks_seen(folder: Path, job_id: str, world: int) -> dict[int, tuple[str, str]]:
    """{rank: (node, master address)} from each rank's own stdout log, which must exist for every rank."""
    seen = {}
    for rank in range(world):
        out = folder / f"{job_id}_{rank}_log.out"
        assert out.is_file() and (folder / f"{job_id}_{rank}_log.err").is_file(), f"no logs of rank {rank}"
        text = out.read_text()
        assert f"[llara.launch] job {job_id} task {rank}/{world}" in text, text[:2000]
        (got, size, node, master, _), *_ = RANK_LINE.findall(text)
        assert (int(got), int(size)) == (rank, world), text[:2000]
        seen[rank] = (node, master)
    return seen


def assert_same_training(a: Path, b: Path, weights: str, steps: int) -> tuple[float, float]:
    """The two runs' per-step losses and final weights agree; returns the largest differences.

    The two layouts run the same arithmetic (2 processes, 1 thread each, the same shards; gloo's sum
    of two gradients is commutative), and the runs measured here were bit for bit equal (differences
    printed). The tolerances leave room for CPU kernels that are not bit-reproducible from one process
    to another: 5e-3 on weights as the resume tests (Adam turns 1e-9 gradient noise on a near-zero
    gradient into an lr-sized step), 1e-4 on the losses of a dozen steps (tighter than the resume
    tests' 1e-3, which cover thousands); a wrong shard, batch or world size moves the first step's
    loss by ~1e-1."""
    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) == list(range(1, steps + 1)), (sorted(la), sorted(lb))
    for step in la:
        assert lb[step] == pytest.approx(la[step], abs=1e-4), step
    wa, wb = load_file(a / weights), load_file(b / weights)
    assert sorted(wa) == sorted(wb) and wa
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=5e-3)
    loss_diff = max(abs(la[s] - lb[s]) for s in la)
    weight_diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    return loss_diff, weight_diff


def check_layouts(tmp_path: Path, two_nodes: list[str], name: str, command, steps: int, weights: str):
    """``command(out)`` on 2 nodes x 1 task, then on 1 node x 2 tasks: both succeed, sacct and the ranks'
    own logs say where they ran, and the training is the same."""
    runs = {}
    for nodes, tasks in ((2, 1), (1, 2)):
        label = f"{name}-{nodes}x{tasks}"
        out = tmp_path / label
        done, job_id, folder, seconds = launch(tmp_path, label, nodes, tasks, *command(out))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"[llara.launch] job {job_id} ({label}) done" in done.stdout
        rec = ended_record(job_id)
        assert rec["State"] == "COMPLETED" and rec["NNodes"] == str(nodes), rec
        seen = ranks_seen(folder, job_id, nodes * tasks)
        masters = {master for _, master in seen.values()}
        assert len(masters) == 1, seen  # every rank met at one address
        if nodes == 2:
            assert hostnames(rec["NodeList"]) == two_nodes, rec  # sacct names both nodes
            assert [seen[r][0] for r in (0, 1)] == two_nodes, seen  # one rank on each, rank 0 first
            assert masters == {two_nodes[0]}, seen  # MASTER_ADDR: the first node, resolved in the job
        else:
            assert len(hostnames(rec["NodeList"])) == 1 and seen[0][0] == seen[1][0], (rec, seen)
        for rank in range(2):  # each rank trained (its own stderr log: the stage's logging)
            err = (folder / f"{job_id}_{rank}_log.err").read_text()
            assert f"rank {rank} starts" in err, err[-3000:]
        cfg = json.loads((out / "llara_config.json").read_text())
        assert cfg["global_step"] == steps, cfg["global_step"]
        runs[(nodes, tasks)] = (out, job_id, seconds)
    diffs = assert_same_training(runs[(1, 2)][0], runs[(2, 1)][0], weights, steps)
    print(
        f"{name}: 2x1 job {runs[(2, 1)][1]} ({runs[(2, 1)][2]:.0f}s), 1x2 job {runs[(1, 2)][1]} "
        f"({runs[(1, 2)][2]:.0f}s): {steps} steps, max |loss diff| {diffs[0]:.2e}, max |weight diff| {diffs[1]:.2e}",
        end=" ",
    )


# ---- 1: adaptation ------------------------------------------------------------------------------
def test_adaptation_on_two_nodes_matches_two_tasks_on_one_node(two_nodes, prepared_model, tmp_path):
    """16 rows, 2 per process, 2 processes: 4 steps an epoch, 12 steps; the loss of every step logged."""
    train = pretrain_pairs(tmp_path / "pairs.jsonl", n=16)
    steps = 12

    def command(out: Path) -> list[str]:
        return [PY, *adapt_args(prepared_model, train, out, "--max_steps", str(steps), "--logging_steps", "1",
                                "--save_strategy", "no")]  # fmt: skip

    check_layouts(tmp_path, two_nodes, "adapt", command, steps, "model.safetensors")


# ---- 2: fine-tuning -----------------------------------------------------------------------------
def finetune_rows(n: int = 8) -> list[dict]:
    """As tests/test_finetune.py's rows: a query, its positive, the other topics as negatives."""
    topics = ["river city", "music school", "king war", "island mountain", "church history",
              "science team", "language island", "mountain school"][:n]  # fmt: skip
    return [
        {"query": f"where is the {t}", "pos": [f"the {t} was founded near the river"],
         "neg": [f"the {o} played music" for o in topics if o != t]}
        for t in topics
    ]  # fmt: skip


def test_finetuning_on_two_nodes_matches_two_tasks_on_one_node(two_nodes, prepared_model, tmp_path):
    """LoRA fine-tuning with the in-batch negatives of both processes (--cross_device_negatives: an
    all-gather across the nodes), 8 rows, 2 per process: 2 steps an epoch, 6 steps."""
    train = tmp_path / "ft.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in finetune_rows()))
    steps = 6

    def command(out: Path) -> list[str]:
        return [PY, "-m", "llara.finetune", "--model_name_or_path", str(prepared_model), "--train_file",
                str(train), "--output_dir", str(out), "--per_device_train_batch_size", "2", "--group_size", "2",
                "--query_max_length", "32", "--passage_max_length", "48", "--logging_steps", "1",
                "--report_to", "none", "--seed", "0", "--save_strategy", "no", "--learning_rate", "1e-3",
                "--use_cpu", "--disable_tqdm", "true", "--lora_r", "4", "--lora_alpha", "8",
                "--allow_untrained_slots", "--cross_device_negatives", "true", "--max_steps", str(steps)]  # fmt: skip

    check_layouts(
        tmp_path,
        two_nodes,
        "finetune",
        command,
        steps,
        "adapter_model.safetensors",
    )


# ---- 3, 4: a rank that fails ----------------------------------------------------------------------
def test_a_failing_rank_fails_the_launcher_with_that_ranks_error(two_nodes, prepared_model, tmp_path):
    """Adaptation on 2 nodes where rank 1 (second node) is given a training file that does not exist:
    the stage there prints one ``error:`` line and exits 2; rank 0 then loses its peer. The launcher's
    output must show rank 1's error line (from ``<jobid>_1_log.err``), not only rank 0's collateral
    'Connection closed by peer'."""
    train = pretrain_pairs(tmp_path / "pairs.jsonl", n=16)
    missing = f"{train}.missing"
    stage = [PY, *adapt_args(prepared_model, "$TRAIN", tmp_path / "out", "--max_steps", "12",
                             "--save_strategy", "no")]  # fmt: skip
    script = f'TRAIN={train}; [ "$RANK" = 1 ] && TRAIN={missing}; exec {" ".join(map(str, stage))}'
    done, job_id, folder, seconds = launch(tmp_path, "rank-fails", 2, 1, "sh", "-c", script, timeout=300)
    shown = done.stdout + done.stderr
    assert done.returncode == 1, shown
    assert f"job {job_id} (rank-fails) failed, state FAILED" in shown, shown
    own = (folder / f"{job_id}_1_log.err").read_text()
    assert f"error: {missing}: file not found" in own, own[-3000:]  # what rank 1 itself said
    assert ended_record(job_id)["State"] == "FAILED"
    assert f"{job_id}_1_log.err" in shown, (
        "the launcher does not show rank 1's error log (it reads <jobid>_<t>_log.err for t < --tasks, the "
        f"tasks of one node, not nodes x tasks): {shown[-3000:]}"
    )
    assert f"error: {missing}: file not found" in shown, shown[-3000:]
    assert not (tmp_path / "out").exists()
    print(f"job {job_id}: rank 1's error shown, launcher exited after {seconds:.0f}s", end=" ")


def test_a_failing_rank_stops_the_other_ranks(two_nodes, tmp_path):
    """Rank 1 fails after 2 s; rank 0 would run 2 minutes (a rank left waiting in a collective for a
    peer that is gone does the same until its timeout, 10-30 min for NCCL, or the time limit). The job
    must fail soon after rank 1, and the launcher with rank 1's error."""
    probe = ("import os, sys, time; rank = os.environ['RANK']; time.sleep(2); "
             "sys.exit('error: rank 1 fails on purpose on ' + os.environ['SLURMD_NODENAME']) if rank == '1' "
             "else time.sleep(120); print('rank', rank, 'slept', 'to', 'the', 'end')")  # fmt: skip
    done, job_id, folder, seconds = launch(tmp_path, "rank-exits", 2, 1, PY, "-c", probe, timeout=300)
    shown = done.stdout + done.stderr
    assert done.returncode == 1, shown
    assert f"job {job_id} (rank-exits) failed, state FAILED" in shown, shown
    assert f"error: rank 1 fails on purpose on {two_nodes[1]}" in (folder / f"{job_id}_1_log.err").read_text()
    assert seconds < 60 and "slept to the end" not in (folder / f"{job_id}_0_log.out").read_text(), (
        f"the launcher returned {seconds:.0f}s after submission: rank 0 ran on after rank 1 had failed "
        "(srun waits for every task unless --kill-on-bad-exit / KillOnBadExit=1)"
    )
    assert f"error: rank 1 fails on purpose on {two_nodes[1]}" in shown, shown[-3000:]
    print(f"job {job_id}: failed {seconds:.0f}s after submission", end=" ")
