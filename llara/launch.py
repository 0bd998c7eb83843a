"""Run one heavy stage (base model, adapt, fine-tune, encode) through submitit: local, debug or SLURM.

``python -m llara.launch --name adapt-joint --cluster slurm --folder logs/jobs/adapt-joint \\
    --partition gpu --gpus 1 --cpus 8 --mem-gb 64 --time-min 600 -- python -m llara.adapt ...``

* ``local`` (default) runs the command as a submitit local job (a subprocess); ``debug`` runs it in
  this process; ``slurm`` submits it with ``sbatch`` through submitit.
* The rule's log (this program's output) records the job id and the paths of the job's own logs;
  a failed job exits non-zero and prints its id, its state and then the last lines of the stage
  command's own error output (its ``error: ...`` line last), without submitit's traceback of the
  launcher. A bad command line of the launcher is one ``error: ...`` line, exit status 2.
* The job's result files are looked at every ``--poll-s`` seconds and, on SLURM, its state is asked
  of ``sacct`` (of ``squeue`` where accounting does not answer) at least every ``--state-poll-s``,
  so a job killed from outside (``scancel``, node failure) fails the rule within a bounded time.
* SIGINT / SIGTERM / SIGHUP (Snakemake interrupted, terminal closed) cancel the job before exiting.
* On SLURM a job that reaches its time limit (or is preempted with ``send_user_signal``) gets USR2
  ``--signal-delay-s`` seconds before it; the submitit task stops the command (SIGTERM, then SIGKILL
  after ``--stop-grace-s``) and requeues the job (``Checkpointable``). The training stages save a
  checkpoint at the current step on USR2 or SIGTERM (:class:`llara.training.SaveOnSignal`) and exit
  with status 75, so the requeued command resumes from that step. A preemption without the warning
  signal (SIGTERM only) finds the stage saving the same way; the task then waits up to
  ``--requeue-wait-s`` for SLURM's requeue instead of reporting a result. The command itself is started with USR2 ignored, so SLURM's
  signal (sent to every process of the job step) does not kill it behind submitit's back; a
  warning that comes once the command has ended requeues nothing.
* ``--tasks N`` starts N tasks (processes) per node; each gets RANK, LOCAL_RANK, WORLD_SIZE,
  MASTER_ADDR and MASTER_PORT from submitit's ``TorchDistributedEnvironment``, which is what the
  transformers Trainer (and DeepSpeed through it) read: SLURM's srun is the launcher, not us.
* ``--record PATH`` writes the job's cost record (JSON, see :func:`cost_record`) once it has ended:
  on SLURM the elapsed time, allocated GPUs and CPUs, GPU-hours and CPU-hours from ``sacct`` (every
  attempt of a requeued job counted); locally the wall time and the GPUs the job was given. Where
  ``sacct`` is missing or does not answer, those fields are null and ``note`` says why.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.helpers import Checkpointable

from llara.io import PREEMPTED, DataError, cli_main

CLUSTERS = ("local", "debug", "slurm")
# states after which a SLURM job never runs again (squeue's and sacct's names)
SLURM_FINAL = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "REVOKED",
    "TIMEOUT",
}


class StageFailed(RuntimeError):
    """The stage command ended with a non-zero status (its own traceback is in the job's error log)."""


class CommandEnded(Exception):
    """Raised by ``checkpoint`` when the time-limit warning finds the command already ended."""


def command_usage() -> dict[str, float]:
    """CPU seconds (user + system) and peak RSS (MB, of the largest process) of this process's ended
    children: the stage command and what it waited for, measured by the kernel (exact, unlike a
    sampler), wherever the job runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def attempt_usage(folder: Path, job_id: str, rank: int, attempt: int, usage: dict[str, float]) -> dict:
    """Record this attempt's ``usage`` (:func:`command_usage`) of one rank in ``folder``
    (``<job>_<rank>_attempt<N>.usage.json``) and return that rank's usage over every attempt so far:
    CPU seconds summed, peak RSS the largest, ``attempts`` counted. A requeued job's first attempts
    leave no result, only these files."""
    import json

    from llara.io import atomic_write_json

    atomic_write_json(folder / f"{job_id}_{rank}_attempt{attempt}.usage.json", usage)
    seen = []
    for path in sorted(folder.glob(f"{job_id}_{rank}_attempt*.usage.json")):
        try:
            seen.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # a file cut short by a kill: that attempt is not counted
            continue
    return {
        "cpu_s": round(sum(u["cpu_s"] for u in seen), 3),
        "max_rss_mb": max(u["max_rss_mb"] for u in seen),
        "attempts": len(seen),
    }


class StageCommand(Checkpointable):
    """A command line run as a submitit job; on timeout or preemption it is stopped and requeued as is."""

    def __init__(self, command: list[str], stop_grace_s: float = 30.0, requeue_wait_s: float = 600.0) -> None:
        self.command = command
        self.stop_grace_s = stop_grace_s
        self.requeue_wait_s = requeue_wait_s
        self._proc: subprocess.Popen | None = None
        self._signalled: int | None = None

    def __getstate__(self) -> dict:  # the running child is not part of what is requeued
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._proc = None
        self._signalled = None

    def _note_signal(self, previous, signum: int, frame) -> None:
        """This task got SIGTERM (a preemption, a requeue) or the warning: a command that dies now was
        stopped by SLURM, not failed; then the handler submitit installed."""
        self._signalled = self._signalled or signum
        if callable(previous):
            previous(signum, frame)

    def record_attempt(self) -> dict:
        """This attempt's usage, written beside the job's logs, summed with the earlier attempts'
        (outside a submitit job, as in a unit test: this attempt's usage only)."""
        try:
            job_env = submitit.JobEnvironment()
        except RuntimeError:  # no job environment: nothing to sum over
            return {**command_usage(), "attempts": 1}
        attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        return attempt_usage(
            Path(job_env.paths.folder), str(job_env.job_id), job_env.global_rank, attempt, command_usage()
        )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        job_env = submitit.JobEnvironment()
        if job_env.cluster == "slurm" and env.get("SLURM_CPUS_PER_TASK"):
            # sbatch exports the rule's OMP_NUM_THREADS, which counts login-node cores (1 on SLURM):
            # the command gets the CPUs its task was given instead
            env["OMP_NUM_THREADS"] = env["SLURM_CPUS_PER_TASK"]
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
        return env

    def __call__(self) -> int:
        env = self.environment()
        job_env = submitit.JobEnvironment()
        shown = ("SLURM_RESTART_COUNT", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
        extra = [f"{k}={env[k]}" for k in shown if k in env]
        if job_env.num_tasks > 1:
            extra += [f"{k}={env[k]}" for k in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")]
        print(
            f"[llara.launch] job {job_env.job_id} task {job_env.global_rank}/{job_env.num_tasks}"
            f"{' (' + ', '.join(extra) + ')' if extra else ''}: {' '.join(self.command)}",
            flush=True,
        )
        warning = submitit.JobEnvironment._usr_sig()  # USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
        # a result left by an earlier attempt of this task (requeued job) is not this attempt's
        job_env.paths.result_pickle.unlink(missing_ok=True)
        self._signalled = None
        for signum in (signal.SIGTERM, warning):
            signal.signal(signum, functools.partial(self._note_signal, signal.getsignal(signum)))
        # SLURM sends the warning to every process of the step: the command ignores it (unless it
        # installs its own handler) and the submitit task decides, stopping the command first
        ignore = functools.partial(signal.signal, warning, signal.SIG_IGN)
        self._proc = subprocess.Popen(self.command, env=env, preexec_fn=ignore)
        try:
            while self._proc.poll() is None:  # polling keeps the signal handlers free to act
                time.sleep(0.2)
            ignore()  # too late to requeue
        except CommandEnded:  # the warning came as the command ended: finish, do not requeue
            ignore()
        finally:
            self.stop()  # reached with the child still running only through an exception (requeue)
        rc = self._proc.returncode
        usage = self.record_attempt()  # before a requeue: the attempt's CPU time counts in the cost
        # the stage saved at a signal (status 75), or died of SLURM's signals (a stage without
        # SaveOnSignal, one still loading, a rank ending while the job is requeued): not a failure
        if rc == PREEMPTED or (rc and self._signalled):
            self.wait_for_requeue()
        if rc:
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            short = " ".join(self.command[:4]) + (" ..." if len(self.command) > 4 else "")
            raise StageFailed(f"the stage command {how}: {short}")
        return usage

    def wait_for_requeue(self) -> None:
        """The stage saved a checkpoint at a signal and stopped (status PREEMPTED). SLURM is preempting
        the job (PreemptMode=REQUEUE): wait for it to end and requeue this job rather than report a
        result; a warning signal meanwhile requeues it through :meth:`checkpoint`."""
        if submitit.JobEnvironment().cluster != "slurm":  # nothing requeues a local job
            raise StageFailed(
                f"the stage saved a checkpoint at a signal and stopped (status {PREEMPTED}); rerun the "
                "rule: it resumes from the saved step"
            )
        print(
            f"[llara.launch] the stage saved a checkpoint and stopped for a requeue (status {PREEMPTED}); "
            f"waiting up to {self.requeue_wait_s:.0f}s for SLURM to requeue the job",
            flush=True,
        )
        deadline = time.time() + self.requeue_wait_s
        while time.time() < deadline:
            time.sleep(0.5)
        raise StageFailed(
            f"the stage stopped for a requeue (status {PREEMPTED}) but the job was not requeued within "
            f"{self.requeue_wait_s:.0f}s: rerun the rule, it resumes from the saved step"
        )

    def stop(self) -> None:
        """SIGTERM the command, SIGKILL it after ``stop_grace_s``; no-op once it has ended."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # only in a signal handler interrupting poll(): the
                pass  # exception raised after the handler reaps it

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """USR2 before the time limit (or preemption): stop the command, then requeue it unchanged.
        A command that has already ended is not run again (its output may be complete)."""
        ended = self._proc is not None and self._proc.poll() is not None
        if ended and self._proc.returncode != PREEMPTED and not (self._proc.returncode and self._signalled):
            raise CommandEnded  # out of submitit's signal handler, caught in __call__
        print(f"[llara.launch] stopping the command before requeue: {' '.join(self.command)}", flush=True)
        self.stop()
        self.record_attempt()
        return super().checkpoint(*args, **kwargs)


def slurm_parameters(args: argparse.Namespace) -> dict:
    """submitit parameters for SLURM from the CLI (values absent are left to the site's defaults)."""
    # a rank that fails ends the job's other ranks (srun waits for every task otherwise: a peer left in
    # a collective hangs until the time limit)
    params: dict = {"slurm_signal_delay_s": args.signal_delay_s, "slurm_srun_args": ["--kill-on-bad-exit=1"]}
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
    params = {
        "name": args.name,
        "timeout_min": args.time_min,
        "tasks_per_node": args.tasks,
        "nodes": args.nodes,
    }
    if args.cpus:
        params["cpus_per_task"] = args.cpus
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.cluster == "slurm":
        params.update(slurm_parameters(args))
        if args.setup:  # lines of the sbatch script before srun: module loads, environment, NCCL variables
            params["slurm_setup"] = list(args.setup)
    else:
        if args.gpus:
            params["gpus_per_node"] = args.gpus
        if args.setup:  # submitit runs the command in a shell after them
            params["local_setup"] = list(args.setup)
    executor.update_parameters(**params)
    return executor


def squeue_state(job_id: str) -> str | None:
    """The job's state from slurmctld (kept there MinJobAge seconds after the end); None if unknown."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = out.stdout.split()
    return states[0] if out.returncode == 0 and states else None


class Waiter:
    """Tells when a job has ended. Result files are looked at on every poll; on SLURM the state is
    asked of sacct (squeue where sacct fails) every 2 s while the job is young, then less often up to
    every ``state_poll_s``: not submitit's backoff to 10 minutes, which leaves a job killed from
    outside unnoticed for that long, nor a sacct call per second per job on a busy cluster."""

    def __init__(self, job: submitit.Job, cluster: str, state_poll_s: float = 30.0, vanish_s: float = 60.0):
        self.job, self.cluster = job, cluster
        self.state_poll_s, self.vanish_s = state_poll_s, vanish_s
        self.state = "UNKNOWN"
        self.start = self.checked = time.time()
        self.unknown_since: float | None = None

    def refresh(self) -> str:
        self.checked = time.time()
        if self.cluster != "slurm":
            self.state = self.job.state
            return self.state
        info = self.job.get_info(mode="force")  # one sacct call for the job and all its tasks
        state = (info.get("State") or "UNKNOWN").split()[0]
        if state == "UNKNOWN":  # sacct does not answer (no accounting): ask slurmctld
            state = squeue_state(str(self.job.job_id)) or "UNKNOWN"
        self.state = state
        return state

    def done(self) -> bool:
        if self.job.done():  # result files of every task, or submitit's own (cached) state
            return True
        if self.cluster != "slurm":
            return False
        now = time.time()
        if now - self.checked < min(self.state_poll_s, max(2.0, (now - self.start) / 4)):
            return False
        state = self.refresh()
        if state in SLURM_FINAL:
            return True
        if state == "UNKNOWN":  # neither sacct nor squeue knows the job any more
            self.unknown_since = self.unknown_since or now
            return now - self.unknown_since > self.vanish_s
        self.unknown_since = None
        return False


def results_written(job: submitit.Job, tasks: int, wait_s: float) -> bool:
    """Whether every task left its result file (waiting a little for a slow network file system).
    Checked here because submitit's own wait trusts sacct alone and never ends where it fails."""
    paths = [
        submitit.core.utils.JobPaths(job.paths.folder, job.job_id, t).result_pickle for t in range(tasks)
    ]
    deadline = time.time() + wait_s
    while not all(p.exists() for p in paths):
        if time.time() > deadline:
            return False
        time.sleep(0.5)
    return True


def final_state(waiter: Waiter, cluster: str, wait_s: float = 15.0) -> str:
    """The job's state once SLURM has recorded its end (a failed task's result file comes first)."""
    deadline = time.time() + (wait_s if cluster == "slurm" else 0)
    state = waiter.refresh()
    while cluster == "slurm" and state not in SLURM_FINAL and time.time() < deadline:
        time.sleep(1)
        state = waiter.refresh()
    return state


def error_summary(err: BaseException) -> str:
    """First line of submitit's message, plus the exception line of the job's traceback if any; for
    the stage command's own failure just that (``the stage command exited with status 2: ...``)."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    first = text.splitlines()[0]
    parts = text.split("-" * 22)  # FailedJobError: header, ----, traceback, ----, where the logs are
    if isinstance(err, FailedJobError) and len(parts) >= 3:
        trace = [line.strip() for line in parts[1].splitlines() if line.strip()]
        stage = f"{StageFailed.__module__}.{StageFailed.__name__}: "
        own = [line for line in trace if line.startswith(stage)]
        if own:  # the launcher's StageFailed line itself, not the last line of a longer message
            return own[-1].removeprefix(stage)
        return f"{first} {trace[-1]}" if trace else first
    return first


RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s?")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Failure)(:.*)?$")


STAGE_FAILED = re.compile(r"^llara\.launch\.StageFailed: (the stage command was killed by signal .*)$")


def stage_error_line(path: Path) -> tuple[int, str] | None:
    """(priority, line): the stage's own error line in one rank's error log, best first: 0 its last
    ``error: ...`` line; 1 the launcher's "killed by signal N" (a C++ abort, an OOM kill: the stage
    could not say why) with the stage's last line beside it; 2 the exception line that ends its last
    traceback (maybe a peer's collateral 'Connection closed by peer'). None when there is none."""
    if not path.exists():
        return None
    raw = path.read_text(errors="replace")
    text = stage_lines(raw)
    own = [RANK_PREFIX.sub("", line).rstrip() for line in text if line.strip()]  # torch's "[rank1]: "
    errors = [line for line in own if line.startswith("error:")]
    if errors:
        return 0, errors[-1]
    killed = [m.group(1) for m in map(STAGE_FAILED.match, raw.splitlines()) if m]
    if killed:
        return 1, f"{killed[-1]} (its last line: {own[-1]})" if own else killed[-1]
    raised = [line for line in own if EXCEPTION_LINE.match(line)]
    return (2, raised[-1]) if raised else None


def failing_rank(folder: Path, job_id: str, ranks: int) -> tuple[int, str] | None:
    """(rank, its error line) of the rank that failed first in the sense that matters: a rank that
    printed an ``error: ...`` line (the stage's own message) wins over one killed by a signal, which
    wins over one that only raised (a peer's collateral 'Connection closed by peer'); the lowest rank
    among equals. None when no rank said anything."""
    lines = [(t, stage_error_line(folder / f"{job_id}_{t}_log.err")) for t in range(ranks)]
    said = sorted((found[0], t, found[1]) for t, found in lines if found)
    return (said[0][1], said[0][2]) if said else None


def failure_reason(folder: Path, job_id: str, ranks: int, summary: str | None) -> str:
    """Why the job failed, for the launcher's first line: the failing rank's own error line, after
    submitit's summary of the failure when there is one (a job that left no result has none)."""
    found = failing_rank(folder, job_id, ranks)
    said = f"rank {found[0]}: {found[1]}" if found else None
    if summary:
        return f"{summary}; {said}" if said else summary
    lost = "the job ended without a result from every rank (cancelled, killed or lost)"
    return f"{said} ({lost})" if said else lost


SUBMITIT_LINE = re.compile(r"^submitit (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \(")


def stage_lines(text: str) -> list[str]:
    """The stage command's own lines of a job's error log: submitit's log lines and the traceback of
    its ``Submitted job triggered an exception`` (the launcher's :class:`StageFailed`) are left out."""
    out: list[str] = []
    skipping = in_trace = False
    for line in text.splitlines():
        if SUBMITIT_LINE.match(line):
            skipping, in_trace = line.startswith("submitit ERROR"), False
            continue
        if skipping:
            if line.startswith("Traceback (most recent call last):") or line.startswith((" ", "\t")):
                in_trace = True
                continue
            skipping = False
            if in_trace:  # the exception line that ends submitit's traceback
                in_trace = False
                continue
        out.append(line)
    return out


def stage_error_tail(path: Path, lines: int = 40) -> list[str]:
    """The last ``lines`` non-blank lines of the stage's own error output in ``path``, ending with its
    last ``error: ...`` line when it printed one (repeated there if more output followed it)."""
    own = [line for line in stage_lines(Path(path).read_text(errors="replace")) if line.strip()]
    shown = own[-lines:]
    errors = [line for line in own if line.startswith("error:")]
    if errors and (not shown or shown[-1] != errors[-1]):
        shown.append(errors[-1])
    return shown


def report_failure(job: submitit.Job, args: argparse.Namespace, state: str, reason: str) -> None:
    """Why the job failed, then the stage command's own last error lines (its ``error: ...`` line
    last), so that the end of the rule's log is the stage's message, not the launcher's traceback."""
    print(
        f"[llara.launch] {args.cluster} job {job.job_id} ({args.name}) failed, state {state}: {reason}",
        file=sys.stderr,
    )
    if args.cluster == "slurm":
        print(f"[llara.launch] details: sacct -j {job.job_id}; logs in {args.folder}", file=sys.stderr)
    folder = job.paths.folder
    logs = [folder / f"{job.job_id}_{t}_log.err" for t in range(args.nodes * args.tasks)]  # every rank
    shown = [p for p in logs if p.exists() and p.stat().st_size]
    if not shown:
        print(
            f"[llara.launch] the job wrote no error output ({logs[0]} is empty or missing)", file=sys.stderr
        )
    for path in shown:
        own = stage_error_tail(path)
        if not own:
            print(f"[llara.launch] the stage printed no error output ({path})", file=sys.stderr)
            continue
        print(f"[llara.launch] the stage's error output, last lines ({path}):", file=sys.stderr)
        for line in own:
            print(line, file=sys.stderr)
    sys.stderr.flush()


def cancel_and_wait(job: submitit.Job, cluster: str, wait_s: float) -> None:
    """Cancel the job; on SLURM wait (bounded) until it has left the queue, so nothing runs on."""
    job.cancel(check=False)
    if cluster != "slurm":
        return
    deadline = time.time() + wait_s
    while time.time() < deadline and squeue_state(str(job.job_id)) not in SLURM_FINAL | {None}:
        time.sleep(0.5)


# ---- cost record ---------------------------------------------------------------------------------
SACCT_FIELDS = ("JobID", "State", "ElapsedRaw", "AllocTRES", "NCPUS", "CPUTimeRAW", "Partition")


def tres_gpus(tres: str) -> int:
    """GPUs in a TRES string (``billing=2,cpu=2,gres/gpu=1,mem=2G,node=1``): ``gres/gpu=N``, else the
    sum of typed entries ``gres/gpu:a100=N``; 0 when there are none."""
    counts = dict(re.findall(r"gres/gpu(:[^=,]+)?=(\d+)", tres or ""))
    if "" in counts:
        return int(counts[""])
    return sum(int(n) for n in counts.values())


def sacct_usage(job_id: str, wait_s: float = 30.0, poll_s: float = 1.0) -> tuple[dict | None, str | None]:
    """(usage, None) from sacct for every attempt of the job (``sacct -D``: a requeued job's attempts
    all count), or (None, why) when sacct is missing, fails or has no record. Waits up to ``wait_s``
    for slurmdbd to hold the whole record (it lags the job's end, showing a placeholder meanwhile)."""
    cmd = ["sacct", "-D", "-X", "-n", "-P", "-j", str(job_id), "-o", ",".join(SACCT_FIELDS)]
    deadline = time.time() + wait_s
    while True:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            return None, "sacct not found on PATH (no SLURM accounting client on this machine)"
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"sacct did not answer: {exc}"
        if out.returncode != 0:
            why = (out.stderr.strip() or out.stdout.strip() or f"exit status {out.returncode}").splitlines()[
                0
            ]
            return None, f"sacct failed: {why}"
        rows = [
            dict(zip(SACCT_FIELDS, line.split("|"), strict=False)) for line in out.stdout.splitlines() if line
        ]
        complete = rows and rows[-1].get("Partition") and rows[-1]["State"].split()[0] in SLURM_FINAL
        if complete or time.time() >= deadline:
            break
        time.sleep(poll_s)
    if not rows:
        return None, f"sacct has no record of job {job_id} (accounting may be off)"
    try:
        elapsed = [int(r["ElapsedRaw"] or 0) for r in rows]
        gpus = [tres_gpus(r["AllocTRES"]) for r in rows]
        cpus = [int(r["NCPUS"] or 0) for r in rows]
        cpu_s = [int(r["CPUTimeRAW"] or 0) for r in rows]
    except ValueError as exc:
        return None, f"sacct gave a record that is not understood ({exc}): {rows}"
    usage = {
        "elapsed_s": sum(elapsed),
        "gpus": max(gpus),
        "gpu_hours": sum(e * g for e, g in zip(elapsed, gpus, strict=True)) / 3600,
        "cpus": max(cpus),
        "cpu_hours": sum(cpu_s) / 3600,  # allocated CPUs x elapsed (CPUTimeRAW), what the site bills
        "attempts": len(rows),
        "states": [r["State"] for r in rows],
    }
    return usage, None if complete else f"sacct record still incomplete after {wait_s:.0f}s: {rows[-1]}"


def cost_record(
    args: argparse.Namespace, job_id: str | None, state: str, wall_s: float, tasks: list | None = None
) -> dict:
    """What the job cost. ``elapsed_s``/``gpus``/``gpu_hours``/``cpus``/``cpu_hours`` come from sacct
    on SLURM (``source: sacct``; ``cpu_hours``: allocated CPUs x elapsed, what the site bills);
    locally (``source: launcher``) from the launcher's own clock and the GPUs it gave the job, with
    ``cpu_hours`` null. ``command_cpu_s`` / ``command_max_rss_mb``: CPU time used by the stage command
    (summed over tasks and over a requeued job's attempts: :func:`attempt_usage`) and its peak RSS
    (largest process), measured by the job itself (:func:`command_usage`); null when the job failed.
    ``command_attempts``: the most attempts any task made.
    ``launcher_wall_s``: submission to end as the launcher saw it (on SLURM: queueing included)."""
    record = {
        "name": args.name,
        "cluster": args.cluster,
        "job_id": job_id,
        "state": state,
        "requested": {
            "nodes": args.nodes,
            "tasks": args.tasks,
            "gpus": args.gpus,
            "cpus_per_task": args.cpus,
            "mem_gb": args.mem_gb,
            "time_min": args.time_min,
        },
        "launcher_wall_s": round(wall_s, 3),
    }
    usages = [t for t in tasks or [] if isinstance(t, dict)]
    record["command_cpu_s"] = round(sum(u["cpu_s"] for u in usages), 3) if usages else None
    record["command_max_rss_mb"] = max(u["max_rss_mb"] for u in usages) if usages else None
    record["command_attempts"] = max(u.get("attempts", 1) for u in usages) if usages else None
    empty = dict.fromkeys(("elapsed_s", "gpus", "gpu_hours", "cpus", "cpu_hours"))
    if args.cluster == "slurm":
        usage, note = sacct_usage(job_id, args.record_wait_s) if job_id else (None, "no job was submitted")
        return record | empty | (usage or {}) | {"source": "sacct" if usage else None, "note": note}
    elapsed = round(wall_s, 3)
    return record | {
        "elapsed_s": elapsed,
        "gpus": args.gpus,
        "gpu_hours": args.gpus * args.nodes * elapsed / 3600,
        "cpus": args.cpus * args.tasks * args.nodes if args.cpus else None,
        "cpu_hours": None,
        "source": "launcher",
        "note": "local job: elapsed time from the launcher's clock, GPUs as the launcher gave them",
    }


def write_record(
    args: argparse.Namespace, job_id: str | None, state: str, start: float, tasks: list | None = None
) -> None:
    if args.record is None:
        return
    from llara.io import atomic_write_json

    record = cost_record(args, job_id, state, time.time() - start, tasks)
    atomic_write_json(args.record, record)
    note = f" ({record['note']})" if record.get("note") and record["source"] != "launcher" else ""
    print(
        f"[llara.launch] cost record {args.record}: {record['elapsed_s']} s, {record['gpus']} GPUs{note}",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    start = time.time()
    if args.cluster == "debug":  # in process, no pdb: what a test or a debugger wants
        rc = subprocess.run(args.command, check=False).returncode
        write_record(
            args, None, "COMPLETED" if rc == 0 else "FAILED", start, [command_usage()] if rc == 0 else None
        )
        return rc

    submitted: list[submitit.Job] = []

    def interrupted(signum, frame):
        for job in submitted:
            print(f"[llara.launch] signal {signum}: cancelling job {job.job_id}", flush=True)
            cancel_and_wait(job, args.cluster, args.cancel_wait_s)
        if not submitted:
            print(f"[llara.launch] signal {signum} before submission: nothing to cancel", flush=True)
        sys.exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    executor = make_executor(args)
    job = executor.submit(StageCommand(args.command, args.stop_grace_s, args.requeue_wait_s))
    submitted.append(job)
    print(
        f"[llara.launch] {args.cluster} job {job.job_id} ({args.name}); job stdout: {job.paths.stdout}; "
        f"job stderr: {job.paths.stderr}",
        flush=True,
    )
    waiter = Waiter(job, args.cluster, args.state_poll_s)
    while not waiter.done():
        time.sleep(args.poll_s)
    ranks = args.nodes * args.tasks
    if not results_written(job, ranks, args.results_wait_s):  # one result per rank
        state = final_state(waiter, args.cluster)
        report_failure(job, args, state, failure_reason(job.paths.folder, str(job.job_id), ranks, None))
        write_record(args, str(job.job_id), state, start)
        return 1
    try:
        usage = (
            job.results()
        )  # one result per task (its command's usage); raises for a failed or vanished job
    except (FailedJobError, UncompletedJobError) as err:
        state = final_state(waiter, args.cluster)
        reason = failure_reason(job.paths.folder, str(job.job_id), ranks, error_summary(err))
        report_failure(job, args, state, reason)
        write_record(args, str(job.job_id), state, start)
        return 1
    print(f"[llara.launch] job {job.job_id} ({args.name}) done", flush=True)
    write_record(args, str(job.job_id), "COMPLETED", start, usage)
    return 0


USAGE = "python -m llara.launch [options] -- COMMAND ...  (the stage command after --; --help: the options)"


class _Parser(argparse.ArgumentParser):
    """A bad command line is one ``error: ...`` line (exit status 2 through :func:`llara.io.cli_main`),
    not argparse's usage block."""

    def error(self, message: str):
        raise DataError(f"{message}; usage: {USAGE}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        if {"-h", "--help"} & set(argv):
            argv.append("--")  # --help needs no command
        else:
            raise DataError(f"no stage command; usage: {USAGE}")
    split = argv.index("--")
    p = _Parser(prog="python -m llara.launch", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="job name (rule and wildcards)")
    p.add_argument("--cluster", choices=CLUSTERS, default="local")
    p.add_argument("--folder", type=Path, required=True, help="submitit folder for the job's logs")
    p.add_argument("--nodes", type=int, default=1, help="nodes (more than 1: SLURM only)")
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
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line the job runs before the command, e.g. 'module load cuda/12.1' (repeatable)",
    )
    p.add_argument("--signal-delay-s", type=int, default=120, help="USR2 this long before the time limit")
    p.add_argument(
        "--stop-grace-s",
        type=float,
        default=30.0,
        help="on USR2, wait this long after SIGTERM to the command before SIGKILL, then requeue",
    )
    p.add_argument(
        "--requeue-wait-s",
        type=float,
        default=600.0,
        help="after a stage saved at SIGTERM (preemption without a warning), wait this long for SLURM's requeue",
    )
    p.add_argument(
        "--cancel-wait-s",
        type=float,
        default=60.0,
        help="after scancel, wait at most this long for the job to end",
    )
    p.add_argument(
        "--poll-s", type=float, default=2.0, help="seconds between looks at the job's result files"
    )
    p.add_argument(
        "--state-poll-s",
        type=float,
        default=30.0,
        help="on SLURM, ask sacct for the job's state at most this often once the job has run a while",
    )
    p.add_argument(
        "--results-wait-s",
        type=float,
        default=15.0,
        help="once the job has ended, wait this long for its result files to show up",
    )
    p.add_argument(
        "--record",
        type=Path,
        default=None,
        help="write the job's cost record here (JSON: elapsed time, GPUs, GPU-hours; from sacct on SLURM)",
    )
    p.add_argument(
        "--record-wait-s",
        type=float,
        default=30.0,
        help="on SLURM, wait this long for sacct to hold the job's complete record",
    )
    args = p.parse_args(argv[:split])
    args.command = argv[split + 1 :]
    if not args.command:
        p.error("no command after --")
    for name in ("nodes", "tasks", "time_min"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("gpus", "cpus", "mem_gb"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.nodes > 1 and args.cluster != "slurm":
        p.error(f"--nodes {args.nodes}: a job on several nodes needs --cluster slurm (got {args.cluster})")
    return args


@cli_main
def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))


if __name__ == "__main__":
    # run the installed module, not __main__, so the pickled job refers to llara.launch.StageCommand
    from llara.launch import main as _main

    sys.exit(_main())
