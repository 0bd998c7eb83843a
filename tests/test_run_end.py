"""The grid's last lines (workflow/run_end.py): the stage's own error first, Ctrl-C, nothing to do."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import run_end  # noqa: E402

SNAKEMAKE_LOG = """rule adapt:
    output: results/adapt/released/joint/seed0/model
    log: logs/adapt/released/joint/seed0.log
    jobid: 3
    wildcards: style=released, variant=joint, seed=0
Error in rule adapt:
    jobid: 3
    log: logs/adapt/released/joint/seed0.log (check log file(s) for error details)
"""


def failed_grid(tmp_path: Path, job_log: str) -> str:
    (tmp_path / "logs" / "adapt" / "released" / "joint").mkdir(parents=True)
    (tmp_path / "logs" / "adapt" / "released" / "joint" / "seed0.log").write_text(job_log)
    (tmp_path / "snakemake.log").write_text(SNAKEMAKE_LOG)
    return run_end.failure_message(tmp_path, [tmp_path / "snakemake.log"])


def test_the_stages_own_error_line_comes_before_the_log_tail(tmp_path):
    """An older launcher log: the stage's error at line 23 of 43, then submitit's traceback."""
    stage = [f"2026-01-01 adapt INFO step {i}" for i in range(22)]
    stage.append("error: resources/pretrain/pairs.jsonl:7: malformed JSON; each line must be one JSON object")
    trace = [
        "submitit ERROR (2026-01-01) - Submitted job triggered an exception",
        "Traceback (most recent call last):",
    ]
    trace += [f'  File "/x/submitit/core/submission.py", line {i}, in process_job' for i in range(18)]
    trace.append("llara.launch.StageFailed: the stage command exited with status 2: python -m llara.adapt")
    log = [
        "[llara.launch] local job 1 (adapt-released-joint-0); job stdout: a; job stderr: b",
        *stage,
        *trace,
    ]
    lines = failed_grid(tmp_path, "\n".join(log) + "\n").splitlines()
    at = lines.index("  rule adapt (style=released, variant=joint, seed=0)")
    assert lines[at + 1] == f"    log: {tmp_path.resolve() / 'logs/adapt/released/joint/seed0.log'}"
    assert lines[at + 2] == (
        "    error: resources/pretrain/pairs.jsonl:7: malformed JSON; each line must be one JSON object"
    )
    assert lines[at + 3].startswith("    | ")  # then the log's tail


def test_a_crash_shows_its_exception_line_not_the_launchers(tmp_path):
    log = """Traceback (most recent call last):
  File "/x/llara/adapt.py", line 9, in main
RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB
Traceback (most recent call last):
  File "/x/submitit/core/submission.py", line 55, in process_job
llara.launch.StageFailed: the stage command exited with status 1: python -m llara.adapt
"""
    text = failed_grid(tmp_path, log)
    assert "    error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n" in text
    assert "    error: llara.launch.StageFailed" not in text


def test_ctrl_c_says_interrupted_and_how_to_resume(tmp_path):
    """Snakemake calls onerror after SIGINT, with its log: no "The grid failed" (issue 18, item 13)."""
    (tmp_path / "snakemake.log").write_text(
        SNAKEMAKE_LOG + "Terminating processes on user request, this might take some time.\n"
    )
    text = run_end.failure_message(tmp_path, [tmp_path / "snakemake.log"])
    assert "interrupted; rerun the same command to resume" in text
    assert "The grid failed" not in text and "KeyboardInterrupt" not in text


def table_workflow(tmp_path: Path) -> Path:
    """A two-rule workflow wired as the Snakefile is: onsuccess and the nothing-to-do watch."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        f"""import sys, time
sys.path.insert(0, {str(REPO / "workflow")!r})
import run_end

STARTED = time.time()
TABLE = "results/tables/main.md"
run_end.watch_nothing_to_be_done(
    lambda: run_end.success_message(".", TABLE, [TABLE], STARTED, nothing_done=True),
    dry_run=lambda: workflow.dryrun,
)

rule all:
    input: TABLE

rule table:
    output: TABLE
    shell: "echo '| variant | nDCG@10 |' > {{output}}"

onsuccess:
    run_end.print_last(run_end.success_message(".", TABLE, [TABLE], STARTED))
"""
    )
    return snakefile


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_run_with_nothing_to_do_still_prints_the_main_table(tmp_path, dry_run):
    """`make grid` a second time: Snakemake calls no onsuccess handler, the table is printed anyway
    (not in a dry run, which only says what it would do)."""
    snakefile = table_workflow(tmp_path)
    work = tmp_path / "w"
    (work / "results" / "tables").mkdir(parents=True)
    (work / "results" / "tables" / "main.md").write_text("| variant | nDCG@10 |\n")
    time.sleep(0.05)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(work), "--cores", "1"]
    done = subprocess.run([*cmd, *(["-n"] if dry_run else [])], capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "Nothing to be done" in out
    if dry_run:
        assert "| variant | nDCG@10 |" not in out
    else:
        assert "Nothing to be done; the tables from " in done.stdout
        assert done.stdout.rstrip().splitlines()[-1] == run_end.RULER  # the last lines: the table
        assert "| variant | nDCG@10 |" in done.stdout


def test_success_message_nothing_done(tmp_path):
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "main.md").write_text("| a |\n")
    text = run_end.success_message(
        tmp_path, "results/tables/main.md", [], time.time() + 10, nothing_done=True
    )
    assert "Nothing to be done; the tables from " in text and "| a |" in text


def test_success_message_names_both_comparisons_of_the_deltas(tmp_path):
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "main.md").write_text("| a |\n")
    text = run_end.success_message(tmp_path, "results/tables/main.md", [], time.time())
    (line,) = [row for row in text.splitlines() if "deltas.md:" in row]
    assert "against `none` (the ablation)" in line and "RepLLaMA (the paper's comparison)" in line
