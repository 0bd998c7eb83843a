"""The two-node local cluster (``bash workflow/ci/local-slurm.sh start --nodes 2``): the cluster
itself, before the grid's multi-node jobs rely on it.

1. two idle nodes in ``sinfo``;
2. ``srun -N2`` runs one task on each node (two node names), and a node's name resolves inside a job
   (torch's MASTER_ADDR is the first node's name);
3. a 2-node batch job sees one filesystem from both nodes, and its ``sacct`` record names both nodes;
4. ``--gpus-per-node`` gives each node's task its own CUDA_VISIBLE_DEVICES (where the nodes have GPUs);
5. preemption: a job of ``low`` holding every CPU of both nodes is requeued when a job is submitted to
   ``high`` (PreemptType=preempt/partition_prio, PreemptMode=REQUEUE); ``high``'s job runs, then the
   requeued job runs again (``sacct -D``: PREEMPTED, then COMPLETED).

Skipped when the cluster has one node (the default ``start``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ACCOUNT = "llara-ci"
HOW = "start the two-node cluster: `bash workflow/ci/local-slurm.sh start --nodes 2`"


def sh(*command: str, timeout: float = 60) -> str:
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(command)}: {out.stderr.strip()}"
    return out.stdout


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def node_states() -> dict[str, str]:
    """{node: state}; sinfo -N lists a node once per partition."""
    rows = (line.split("|") for line in sh("sinfo", "-h", "-N", "-o", "%N|%T").split())
    return dict(rows)


def hostnames(nodelist: str) -> list[str]:
    return sh("scontrol", "show", "hostnames", nodelist).split()


def sbatch(workdir: Path, *options: str, script: str) -> str:
    path = workdir / f"job-{time.time_ns()}.sh"
    path.write_text(f"#!/bin/bash\n{script}\n")
    return sh(
        "sbatch", "--parsable", f"--chdir={workdir}", f"--account={ACCOUNT}", *options, str(path)
    ).strip()


def records(job_id: str, fields: str) -> list[dict[str, str]]:
    """The job's allocation records, requeued attempts included (sacct -D), oldest first."""
    names = fields.split(",")
    out = sh("sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", fields).splitlines()
    return [dict(zip(names, line.split("|"), strict=True)) for line in out]


def ended(job_id: str, fields: str = "JobID,State,NodeList,NNodes,Start,End"):
    """The job's records once it has left the queue and sacct has its final record (else None).
    slurmdbd lags: a 2-node job that ended within a second showed NodeList=n1, NNodes=2 for a
    moment, so a record counts once its node list has NNodes names."""
    if sh("squeue", "-h", "-j", job_id, "-o", "%T").strip():
        return None
    rows = records(job_id, fields)
    final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    if not rows or rows[-1]["State"].split()[0] not in final:
        return None
    return rows if all(len(hostnames(r["NodeList"])) == int(r["NNodes"]) for r in rows) else None


def running_on(job_id: str) -> list[str]:
    """The nodes of a running job (else [])."""
    state, _, nodes = sh("squeue", "-h", "-j", job_id, "-o", "%T|%N").strip().partition("|")
    return hostnames(nodes) if state == "RUNNING" and nodes else []


@pytest.fixture(scope="module")
def two_nodes(slurm_cluster) -> list[str]:
    """The cluster's first two nodes, once idle; skips on a one-node cluster."""
    nodes = sorted(node_states())
    if len(nodes) < 2:
        pytest.skip(f"the cluster has one node ({', '.join(nodes)}); these tests need two: {HOW}")
    return nodes[:2]


@pytest.fixture
def idle(two_nodes) -> list[str]:
    """Waits until both nodes are idle (jobs of an earlier test may still be completing)."""
    wait_for(
        "both nodes idle",
        lambda: all(node_states().get(n) == "idle" for n in two_nodes),
        60,
    )
    return two_nodes


def test_two_idle_nodes(idle):
    states = node_states()
    assert len(states) == 2, states
    assert all(state == "idle" for state in states.values()), states


def test_srun_on_two_nodes_runs_one_task_on_each(idle):
    out = sh("srun", "-N2", "--ntasks-per-node=1", f"--account={ACCOUNT}", "printenv", "SLURMD_NODENAME")
    assert sorted(out.split()) == idle
    # multi-node torch: MASTER_ADDR is the first node's name; it must resolve on every node
    out = sh(
        "srun", "-N2", "--ntasks-per-node=1", f"--account={ACCOUNT}", "python3", "-c",
        f"import os, socket; print(os.environ['SLURMD_NODENAME'], socket.gethostbyname('{idle[0]}'))",
    )  # fmt: skip
    names = sorted(line.split()[0] for line in out.splitlines())
    assert names == idle and len(out.splitlines()) == 2, out


def test_two_node_batch_job_shares_the_filesystem_and_sacct_names_both_nodes(idle, tmp_path):
    job = sbatch(
        tmp_path,
        "--nodes=2",
        "--ntasks-per-node=1",
        "--time=5",
        "--output=batch.out",
        script='srun bash -c \'echo "$SLURMD_NODENAME $(pwd)" > "task-$SLURM_PROCID.txt"\'',
    )
    rows = wait_for(f"job {job} to end in sacct", lambda: ended(job), 90)
    assert rows[-1]["State"] == "COMPLETED", (rows, (tmp_path / "batch.out").read_text())
    assert rows[-1]["NNodes"] == "2" and hostnames(rows[-1]["NodeList"]) == idle, rows
    # both tasks wrote into the job's working folder: the nodes share the filesystem
    written = sorted(p.read_text().split()[0] for p in tmp_path.glob("task-*.txt"))
    assert written == idle
    assert {p.read_text().split()[1] for p in tmp_path.glob("task-*.txt")} == {str(tmp_path)}
    steps = sh("sacct", "-n", "-P", "-j", f"{job}.0", "-o", "JobID,NNodes,NodeList,State").split()
    assert steps and steps[0].split("|")[1] == "2", steps


def test_each_node_gets_its_gpus(idle):
    gres = sh("sinfo", "-h", "-N", "-n", ",".join(idle), "-o", "%G").split()
    if not all(g.startswith("gpu:") for g in gres):
        pytest.skip(f"the nodes declare no GPUs ({gres}; LLARA_SLURM_GPUS=0)")
    out = sh(
        "srun", "-p", "gpu", "-N2", "--ntasks-per-node=1", "--gpus-per-node=1", f"--account={ACCOUNT}",
        "bash", "-c", 'echo "$SLURMD_NODENAME ${CUDA_VISIBLE_DEVICES:-none}"',
    )  # fmt: skip
    seen = dict(line.split() for line in out.splitlines())
    assert sorted(seen) == idle and all(v != "none" and "," not in v for v in seen.values()), out


def test_a_job_of_high_preempts_and_requeues_a_job_of_low(idle, tmp_path):
    for part, mode in (("low", "REQUEUE"), ("high", None)):
        info = subprocess.run(["scontrol", "show", "partition", part, "-o"], capture_output=True, text=True)
        if info.returncode != 0:
            pytest.skip(f"no partition {part!r} (the two-node cluster of local-slurm.sh has it)")
        assert mode is None or f"PreemptMode={mode}" in info.stdout, info.stdout
    assert "preempt/partition_prio" in sh("scontrol", "show", "config")
    cpus = {n: int(sh("sinfo", "-h", "-N", "-n", n, "-o", "%c").split()[0]) for n in idle}
    assert len(set(cpus.values())) == 1, cpus
    # every CPU of both nodes; the first attempt outlasts the test, the requeued one ends at once
    low = sbatch(
        tmp_path,
        "--partition=low",
        "--nodes=2",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus[idle[0]]}",
        "--requeue",
        "--time=10",
        "--output=low.out",
        "--open-mode=append",
        script='echo "attempt ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST"\n'
        'if [[ ${SLURM_RESTART_COUNT:-0} == 0 ]]; then sleep 300; fi\necho "done"',
    )
    high = None
    try:
        wait_for(f"low job {low} running on both nodes", lambda: running_on(low) == idle, 60)
        t0 = time.time()
        high = sbatch(tmp_path, "--partition=high", "--nodes=1", "--ntasks=1", "--time=5",
                      "--output=high.out", script="echo high on $SLURMD_NODENAME; sleep 2")  # fmt: skip
        high_rows = wait_for(f"high job {high} to end", lambda: ended(high), 120)
        t_high = time.time() - t0
        assert high_rows[-1]["State"] == "COMPLETED", high_rows
        low_rows = wait_for(f"requeued low job {low} to end", lambda: ended(low), 180)
        t_low = time.time() - t0
    finally:
        subprocess.run(["scancel", low, *([high] if high else [])], capture_output=True)
    states = [r["State"].split()[0] for r in low_rows]
    assert len(states) == 2 and states[0] in ("PREEMPTED", "REQUEUED") and states[1] == "COMPLETED", low_rows
    assert all(hostnames(r["NodeList"]) == idle for r in low_rows), low_rows
    # high's job ran in between: after the preempted attempt ended, before the requeued one started
    assert low_rows[0]["End"] <= high_rows[-1]["Start"] <= low_rows[1]["Start"], (low_rows, high_rows)
    log = (tmp_path / "low.out").read_text()
    assert "attempt 0" in log and "attempt 1" in log and "DUE TO PREEMPTION" in log, log
    print(f"high ended {t_high:.0f}s after its submission, the requeued low job {t_low:.0f}s after")
