"""What the grid prints when it ends (the Snakefile's onsuccess / onerror handlers).

Snakemake logs its own last lines (the log file, the elapsed time) after the handlers run, so the
handlers hand their text to ``print_last``, which prints it when the process exits: the user's last
lines are the main table and where the files are, or which rule failed, its own error line and where
its log is, or that the run was interrupted. A run with nothing to do calls no handler: the
Snakefile calls :func:`watch_nothing_to_be_done` once, which prints the main table then too.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (?P<rule>\w+):$")
ERROR = re.compile(r"^Error in rule (?P<rule>\w+):$")
FIELD = re.compile(r"^\s+(?P<key>jobid|wildcards|log): (?P<value>.*)$")
EXCEPTION = re.compile(r"^\w+(?:Exception|Error) in rule (?P<rule>\w+) in file ")
JOB = re.compile(r"^Job (?P<jobid>\d+)\b")
RULER = "=" * 78
TAIL_LINES = 6
ERROR_LINES = 3  # at most this many of a job's own error lines
# what Snakemake logs when Ctrl-C (SIGINT) stops the scheduler, or a KeyboardInterrupt escapes
INTERRUPTED = re.compile(
    r"^(?:Terminating processes on user request|Cancelling snakemake on user request|KeyboardInterrupt\b)",
    re.M,
)
NOTHING_TO_BE_DONE = "Nothing to be done"  # the start of Snakemake's message for a run with no job


def print_last(text: str, stream=None) -> None:
    """Print ``text`` when the interpreter exits, after everything Snakemake logs."""

    def _print() -> None:
        out = stream or sys.stdout
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()

    atexit.register(_print)


def success_message(
    workdir: str | Path, main_table: str, tables: Iterable[str], started: float, nothing_done: bool = False
) -> str:
    """The main table (when this run built it, or when it is up to date) and where the files are;
    ``nothing_done``: Snakemake found every output up to date and ran no job."""
    workdir = Path(workdir).resolve()
    table = workdir / main_table
    folder = table.parent
    lines = [RULER]
    if not table.exists():
        lines += [
            f"Done. No tables yet: this run's targets did not include {main_table}.",
            "Run snakemake without a target to build them.",
        ]
        return "\n".join([*lines, RULER]) + "\n"
    built = table.stat().st_mtime
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(built))
    if nothing_done:
        lines.append(
            f"Nothing to be done; the tables from {when} are up to date. The main table ({main_table}):"
        )
    elif built >= started:
        lines.append(f"Done. The main table ({main_table}):")
    else:
        lines.append(
            f"Done. The main table ({main_table}, built {when}, before this run; rerun without a target if it is stale):"
        )
    lines += ["", table.read_text(encoding="utf-8").rstrip(), ""]
    names = [Path(t).name for t in tables if (workdir / t).exists()]
    lines.append(f"Tables: {folder}/  ({', '.join(names)})")
    lines.append(f'  pandas: pd.read_parquet("{folder / "long.parquet"}")')
    lines.append(
        "  deltas.md: each variant against `none` (the ablation) and against each retriever such as RepLLaMA "
        "(the paper's comparison) per stage (mean +/- 95% CI over seeds, paired tests, Holm)"
    )
    lines.append("  cost.md: adaptation / fine-tuning hours, encoding throughput")
    models = sorted((workdir / "results" / "finetune").glob("*/*/seed*/*/model-st"))
    if models:
        lines.append(
            f"Models: {workdir / 'results' / 'finetune'}/<style>/<variant>/seed<N>/<negatives>/model"
        )
        lines.append("  model-st beside each: SentenceTransformer(path, trust_remote_code=True)")
    lines.append(f"Logs: {workdir / 'logs'}/")
    return "\n".join([*lines, RULER]) + "\n"


def watch_nothing_to_be_done(message: Callable[[], str], dry_run: Callable[[], bool] = lambda: False) -> None:
    """Print ``message()`` last (see :func:`print_last`) when Snakemake logs that there is nothing to
    be done: it then returns without calling the onsuccess handler. ``dry_run()`` is asked at that
    moment (``lambda: workflow.dryrun``: only known once the run starts); a dry run prints nothing.
    A filter on Snakemake's logger, which keeps its filters when it replaces its handlers."""

    class Watch(logging.Filter):
        seen = False

        def filter(self, record: logging.LogRecord) -> bool:
            if not self.seen and str(record.msg).startswith(NOTHING_TO_BE_DONE) and not dry_run():
                self.seen = True
                print_last(message())
            return True

    logging.getLogger("snakemake.logging").addFilter(Watch())


def failed_jobs(log_text: str) -> list[dict[str, str]]:
    """The failed jobs of a Snakemake log: each 'Error in rule ...' block (a command failed) and each
    '<Exception> in rule ... in file' line (e.g. outputs missing after the command), with the rule, the
    jobid, the log path(s) and the wildcards (from the job's own block, which errors do not repeat)."""
    jobs: dict[str, dict[str, str]] = {}
    failed: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in log_text.splitlines():
        m = ERROR.match(line) or RULE.match(line)
        if m:
            current = {"rule": m["rule"], "error": "1" if line.startswith("Error") else ""}
            if current["error"]:
                failed.append(current)
            continue
        m = EXCEPTION.match(line)
        if m:
            current = {"rule": m["rule"], "error": "1"}
            failed.append(current)
            continue
        m = JOB.match(line)
        if m and current is not None and current["error"]:
            current.setdefault("jobid", m["jobid"])
            continue
        f = FIELD.match(line)
        if current is None or f is None:
            if line and not line.startswith((" ", "\t")):
                current = None
            continue
        value = f["value"]
        if f["key"] == "log":
            value = value.replace(" (check log file(s) for error details)", "")
        current[f["key"]] = value
        if not current["error"] and f["key"] == "jobid":
            jobs[value] = current
    unique: dict[tuple[str, str], dict[str, str]] = {}
    for job in failed:
        block = jobs.get(job.get("jobid", ""), {})
        for key in ("wildcards", "log"):
            if not job.get(key) and block.get(key):
                job[key] = block[key]
        job.pop("error")
        unique.setdefault((job["rule"], job.get("jobid", str(len(unique)))), job)  # one job, several messages
    return list(unique.values())


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last ``n`` non-empty lines of a log (none when it cannot be read)."""
    try:
        lines = [
            line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
        ]
    except OSError:
        return []
    return lines[-n:]


def own_errors(path: Path, limit: int = ERROR_LINES) -> list[str]:
    """The stage's own error line(s) in a job's log, wherever they are: its ``error: ...`` lines (a
    stage CLI's bad input), else the exception line of its last Python traceback, else the
    launcher's ``failed`` line; the last ``limit`` distinct ones, without the ``error:`` prefix."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    if not found:
        trace = False
        for line in lines:
            if line.startswith("Traceback (most recent call last):"):
                trace = True
            elif trace and line.strip() and not line.startswith((" ", "\t")):
                trace = False
                if "StageFailed" not in line:  # the launcher's own traceback (an older launcher)
                    found.append(line.strip())
    if not found:
        found = [
            line.strip() for line in lines if line.startswith("[llara.launch]") and " failed, state " in line
        ]
    return list(dict.fromkeys(found))[-limit:]


def interrupted(log_texts: Iterable[str]) -> bool:
    """Whether Snakemake was stopped by Ctrl-C (SIGINT), as its log says."""
    return any(INTERRUPTED.search(text) for text in log_texts)


def failure_message(workdir: str | Path, logfiles: Iterable[str | Path]) -> str:
    """Which rule(s) failed, with their wildcards, the stage's own error line, the log paths and the
    last lines of each log; or, for a run stopped by Ctrl-C, how to resume it."""
    workdir, logfiles = Path(workdir).resolve(), list(logfiles)
    texts = []
    for log in logfiles:
        try:
            texts.append(Path(log).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    lines = [RULER]
    if interrupted(texts):
        lines.append(
            "The grid was interrupted; rerun the same command to resume (finished jobs are kept, the "
            "interrupted ones rerun)."
        )
        return "\n".join([*lines, RULER]) + "\n"
    failed = [job for text in texts for job in failed_jobs(text)]
    if not failed:
        lines.append(
            "The grid failed; see the errors above"
            + (f" and {', '.join(map(str, logfiles))}" if logfiles else "")
            + "."
        )
        return "\n".join([*lines, RULER]) + "\n"
    lines.append(f"The grid failed: {len(failed)} job{'s' if len(failed) > 1 else ''}.")
    for job in failed:
        where = f" ({job['wildcards']})" if job.get("wildcards") else ""
        lines.append(f"  rule {job['rule']}{where}")
        if job.get("log"):
            for path in job["log"].split(", "):
                lines.append(f"    log: {workdir / path}")
                lines += [f"    error: {line}" for line in own_errors(workdir / path)]
                lines += [f"    | {line}" for line in tail(workdir / path)]
        else:
            lines.append("    no log file: its error is printed above")
    lines.append("Fix the cause and rerun the same command: finished jobs are kept, the failed one reruns.")
    return "\n".join([*lines, RULER]) + "\n"
