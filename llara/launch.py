"""Run one heavy stage (base model, adapt, fine-tune, encode) through submitit: local, debug or SLURM.

``python -m llara.launch --name adapt-joint --cluster slurm --folder logs/jobs/adapt-joint \\
    --partition gpu --gpus 1 --cpus 8 --mem-gb 64 --time-min 600 -- python -m llara.adapt ...``

* ``local`` (default) runs the command as a submitit local job (a subprocess); ``debug`` runs it in
  this process; ``slurm`` submits it with ``sbatch`` through submitit.
* The rule's log (this program's output) records the job id and the paths of the job's own logs;
  a failed job exits non-zero and prints the tail of the job's error log.
* SIGINT / SIGTERM (Snakemake interrupted) cancel the job before exiting.
* On SLURM a job that reaches its time limit is requeued by submitit (``Checkpointable``): the
  command runs again and the training stages resume from ``<output>.partial/checkpoints``.
* ``--tasks N`` starts N tasks (processes) per node; each gets RANK, LOCAL_RANK, WORLD_SIZE,
  MASTER_ADDR and MASTER_PORT from submitit's ``TorchDistributedEnvironment``, which is what the
  transformers Trainer (and DeepSpeed through it) read: SLURM's srun is the launcher, not us.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import submitit
from submitit.helpers import Checkpointable

CLUSTERS = ("local", "debug", "slurm")


class StageCommand(Checkpointable):
    """A command line run as a submitit job; requeued as is on timeout or preemption."""

    def __init__(self, command: list[str]) -> None:
        self.command = command

    def __call__(self) -> int:
        env = dict(os.environ)
        job_env = submitit.JobEnvironment()
        if job_env.num_tasks > 1:
            dist = submitit.helpers.TorchDistributedEnvironment()
            env.update(
                RANK=str(dist.rank),
                LOCAL_RANK=str(dist.local_rank),
                WORLD_SIZE=str(dist.world_size),
                MASTER_ADDR=dist.master_addr,
                MASTER_PORT=str(dist.master_port),
                LOCAL_WORLD_SIZE=str(dist.local_world_size),
            )
        print(
            f"[llara.launch] job {job_env.job_id} task {job_env.global_rank}/{job_env.num_tasks}: "
            f"{' '.join(self.command)}",
            flush=True,
        )
        subprocess.run(self.command, check=True, env=env)
        return 0


def slurm_parameters(args: argparse.Namespace) -> dict:
    """submitit parameters for SLURM from the CLI (values absent are left to the site's defaults)."""
    params: dict = {"slurm_signal_delay_s": args.signal_delay_s}
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.account:
        params["slurm_account"] = args.account
    if args.qos:
        params["slurm_qos"] = args.qos
    if args.gpus:
        if args.gpu_request == "gres":
            params["slurm_gres"] = f"gpu:{args.gpus}"
        else:
            params["slurm_gpus_per_node"] = args.gpus
    if args.slurm_arg:
        params["slurm_additional_parameters"] = dict(kv.split("=", 1) for kv in args.slurm_arg)
    return params


def make_executor(args: argparse.Namespace) -> submitit.Executor:
    executor = submitit.AutoExecutor(folder=args.folder, cluster=args.cluster)  # never cluster=None
    params = {"name": args.name, "timeout_min": args.time_min, "tasks_per_node": args.tasks, "nodes": 1}
    if args.cpus:
        params["cpus_per_task"] = args.cpus
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.cluster == "slurm":
        params.update(slurm_parameters(args))
    elif args.gpus:
        params["gpus_per_node"] = args.gpus
    executor.update_parameters(**params)
    return executor


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not Path(path).exists():
        return f"(no log at {path})"
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def wait(job: submitit.Job, poll_s: float) -> None:
    """Block until the job ends; raise what submitit raises for a failed or vanished job."""
    while not job.done():
        time.sleep(poll_s)
    job.results()  # one result per task


def run(args: argparse.Namespace) -> int:
    if args.cluster == "debug":  # in process, no pdb: what a test or a debugger wants
        return subprocess.run(args.command, check=False).returncode

    executor = make_executor(args)
    job = executor.submit(StageCommand(args.command))
    print(
        f"[llara.launch] {args.cluster} job {job.job_id} ({args.name}); job stdout: {job.paths.stdout}; "
        f"job stderr: {job.paths.stderr}",
        flush=True,
    )

    def cancel(signum, frame):
        print(f"[llara.launch] signal {signum}: cancelling job {job.job_id}", flush=True)
        job.cancel(check=False)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, cancel)
    signal.signal(signal.SIGTERM, cancel)
    try:
        wait(job, args.poll_s)
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as err:
        state = getattr(job, "state", "?")
        print(
            f"[llara.launch] job {job.job_id} ({args.name}) failed, state {state}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}",
            file=sys.stderr,
        )
        print(f"[llara.launch] tail of {job.paths.stderr}:\n{tail(job.paths.stderr)}", file=sys.stderr)
        return 1
    print(f"[llara.launch] job {job.job_id} ({args.name}) done", flush=True)
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit(
            "usage: python -m llara.launch [options] -- COMMAND ...  (the stage command after --)"
        )
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m llara.launch", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="job name (rule and wildcards)")
    p.add_argument("--cluster", choices=CLUSTERS, default="local")
    p.add_argument("--folder", type=Path, required=True, help="submitit folder for the job's logs")
    p.add_argument("--tasks", type=int, default=1, help="tasks (processes) per node, e.g. one per GPU")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per node")
    p.add_argument(
        "--gpu-request",
        choices=("gpus", "gres"),
        default="gpus",
        help="ask SLURM for GPUs with --gpus-per-node or --gres=gpu:N",
    )
    p.add_argument("--cpus", type=int, default=0, help="CPUs per task")
    p.add_argument("--mem-gb", type=float, default=0)
    p.add_argument("--time-min", type=int, default=60)
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--qos", default="")
    p.add_argument(
        "--slurm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra sbatch option, e.g. constraint=a100 (repeatable)",
    )
    p.add_argument("--signal-delay-s", type=int, default=120, help="USR2 this long before the time limit")
    p.add_argument("--poll-s", type=float, default=2.0)
    args = p.parse_args(argv[:split])
    args.command = argv[split + 1 :]
    if not args.command:
        p.error("no command after --")
    return args


def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
