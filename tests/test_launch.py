"""The submitit launcher: local jobs succeed, fail with the job's error tail, and are cancelled on SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from llara.launch import main, parse

PY = sys.executable


def test_local_job_runs_command_and_logs_job_id(tmp_path, capsys):
    out = tmp_path / "done.txt"
    rc = main(
        [
            "--name",
            "t",
            "--folder",
            str(tmp_path / "jobs"),
            "--poll-s",
            "0.2",
            "--",
            PY,
            "-c",
            f"open({str(out)!r}, 'w').write('ok')",
        ]
    )
    assert rc == 0 and out.read_text() == "ok"
    log = capsys.readouterr().out
    assert "local job" in log and "job stdout:" in log and "done" in log


def test_debug_job_record_measures_the_command(tmp_path):
    import json

    record = tmp_path / "r.job.json"
    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    rc = main(["--name", "d", "--cluster", "debug", "--folder", str(tmp_path), "--gpus", "1", "--record", str(record),
               "--", PY, "-c", burn])  # fmt: skip
    rec = json.loads(record.read_text())
    assert (
        rc == 0 and rec["cluster"] == "debug" and rec["state"] == "COMPLETED" and rec["source"] == "launcher"
    )
    assert rec["command_cpu_s"] >= 0.5 and rec["elapsed_s"] >= 0.5
    assert rec["gpus"] == 1 and rec["gpu_hours"] == pytest.approx(rec["elapsed_s"] / 3600)


def test_failed_job_fails_with_error_tail(tmp_path, capsys):
    rc = main(
        [
            "--name",
            "boom",
            "--folder",
            str(tmp_path / "jobs"),
            "--poll-s",
            "0.2",
            "--",
            PY,
            "-c",
            "import sys; print('about to fail', file=sys.stderr); raise SystemExit(3)",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "failed" in err and "about to fail" in err


def test_failed_job_ends_with_the_stages_own_error_line(tmp_path):
    """The rule's log (the launcher's output) ends with the stage's `error: ...` line, and holds no
    traceback of the launcher (submitit's StageFailed), which used to bury it (issue 18, item 11)."""
    stage = (
        "import sys; print('warning: a few empty texts', file=sys.stderr); "
        "print('error: data.jsonl:3: malformed JSON; fix the line', file=sys.stderr); "
        "print('closing remark', file=sys.stderr); raise SystemExit(2)"
    )
    cmd = [PY, "-m", "llara.launch", "--name", "bad", "--folder", str(tmp_path / "jobs"), "--poll-s", "0.2",
           "--", PY, "-c", stage]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1
    assert lines[-1] == "error: data.jsonl:3: malformed JSON; fix the line"
    assert "failed, state" in lines[0] and "the stage command exited with status 2" in lines[0]
    assert "warning: a few empty texts" in lines and "closing remark" in lines
    assert "Traceback" not in done.stderr and "StageFailed" not in done.stderr
    assert "submitit" not in done.stderr


def test_stage_lines_drop_submitit_and_its_traceback_only():
    from llara.launch import stage_lines

    log = """starting
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: the stage's own crash
submitit WARNING (2026-01-01 00:00:00,000) - Bypassing signal SIGCONT
submitit ERROR (2026-01-01 00:00:01,000) - Submitted job triggered an exception
Traceback (most recent call last):
  File "/x/submitit/core/_submit.py", line 11, in <module>
    submitit_main()
llara.launch.StageFailed: the stage command exited with status 1: python x.py
after a requeue
"""
    assert stage_lines(log) == [
        "starting",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: the stage's own crash",
        "after a requeue",
    ]


def test_two_tasks_get_a_distributed_environment(tmp_path):
    script = (
        "import os; r=os.environ['RANK']; open(os.path.join({d!r}, 'rank'+r), 'w')"
        ".write(','.join(os.environ[k] for k in ('RANK','LOCAL_RANK','WORLD_SIZE','MASTER_ADDR','MASTER_PORT')))"
    )
    rc = main(
        [
            "--name",
            "dist",
            "--folder",
            str(tmp_path / "jobs"),
            "--tasks",
            "2",
            "--poll-s",
            "0.2",
            "--",
            PY,
            "-c",
            script.format(d=str(tmp_path)),
        ]
    )
    assert rc == 0
    ranks = sorted(p.read_text().split(",") for p in tmp_path.glob("rank*"))
    assert [r[:3] for r in ranks] == [["0", "0", "2"], ["1", "1", "2"]]
    assert ranks[0][3:] == ranks[1][3:]  # same master address and port


@pytest.mark.extended
def test_sigint_cancels_the_job(tmp_path):
    marker = tmp_path / "still-running"
    cmd = [
        PY,
        "-m",
        "llara.launch",
        "--name",
        "sleepy",
        "--folder",
        str(tmp_path / "jobs"),
        "--poll-s",
        "0.2",
        "--",
        PY,
        "-c",
        f"import time, pathlib\nfor i in range(300):\n    pathlib.Path({str(marker)!r}).write_text(str(i)); time.sleep(0.1)",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "job never started"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT and "cancelling job" in out
    time.sleep(1.0)
    before = marker.read_text()
    time.sleep(1.0)
    assert marker.read_text() == before, "the job kept running after the launcher was interrupted"


def test_usage_errors():
    from llara.io import DataError

    with pytest.raises(DataError, match="the stage command after --"):
        parse(["--name", "x", "--folder", "f"])
    with pytest.raises(DataError, match="--tasks must be >= 1"):
        parse(["--name", "x", "--folder", "f", "--tasks", "0", "--", "echo"])
    args = parse(
        [
            "--name",
            "x",
            "--folder",
            "f",
            "--cluster",
            "slurm",
            "--gpus",
            "2",
            "--gpu-request",
            "gres",
            "--",
            "echo",
            "hi",
        ]
    )
    assert args.command == ["echo", "hi"] and args.gpus == 2
    from llara.launch import slurm_parameters

    assert slurm_parameters(args)["slurm_gres"] == "gpu:2"


def test_checkpoint_stops_the_running_command_and_requeues_it_unchanged():
    import cloudpickle

    from llara.launch import StageCommand

    cmd = StageCommand([PY, "-c", "import time; time.sleep(60)"], stop_grace_s=5)
    cmd._proc = subprocess.Popen(cmd.command)
    start = time.time()
    delayed = cmd.checkpoint()
    assert cmd._proc.returncode == -signal.SIGTERM and time.time() - start < 5
    again = cloudpickle.loads(cloudpickle.dumps(delayed))  # what submitit writes for the requeued job
    assert again.function.command == cmd.command and again.function._proc is None


def test_checkpoint_after_the_command_ended_requeues_nothing():
    from llara.launch import CommandEnded, StageCommand

    cmd = StageCommand([PY, "-c", "pass"])
    cmd._proc = subprocess.Popen(cmd.command)
    cmd._proc.wait()
    with pytest.raises(CommandEnded):
        cmd.checkpoint()


# ---- cost records ----------------------------------------------------------------------------------
def test_tres_gpus():
    from llara.launch import tres_gpus

    assert tres_gpus("billing=2,cpu=2,gres/gpu=1,mem=2G,node=1") == 1
    assert tres_gpus("cpu=8,gres/gpu:a100=4,gres/gpu=4,mem=64G") == 4  # the untyped total wins
    assert tres_gpus("cpu=8,gres/gpu:a100=2,gres/gpu:v100=1") == 3
    assert tres_gpus("billing=1,cpu=1,mem=1G,node=1") == 0 and tres_gpus("") == 0


def fake_sacct(tmp_path, monkeypatch, script: str):
    """A `sacct` on PATH that runs ``script`` (sh), in front of any real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sacct").write_text("#!/bin/sh\n" + script)
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_sacct_usage_sums_requeued_attempts(tmp_path, monkeypatch):
    from llara.launch import sacct_usage

    # a job requeued once: 600 s then 1200 s on 2 GPUs and 16 CPUs (CPUTimeRAW = 16 x elapsed)
    rows = ["77|REQUEUED|600|billing=16,cpu=16,gres/gpu=2,mem=64G,node=1|16|9600|gpu",
            "77|COMPLETED|1200|billing=16,cpu=16,gres/gpu=2,mem=64G,node=1|16|19200|gpu"]  # fmt: skip
    fake_sacct(tmp_path, monkeypatch, "".join(f"echo '{r}'\n" for r in rows))
    usage, note = sacct_usage("77", wait_s=0)
    assert note is None
    assert (
        usage["elapsed_s"] == 1800 and usage["gpus"] == 2 and usage["cpus"] == 16 and usage["attempts"] == 2
    )
    assert usage["gpu_hours"] == pytest.approx(1.0) and usage["cpu_hours"] == pytest.approx(8.0)
    assert usage["states"] == ["REQUEUED", "COMPLETED"]


def test_sacct_usage_says_why_it_has_nothing(tmp_path, monkeypatch):
    from llara.launch import sacct_usage

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sacct at all
    assert sacct_usage("5", wait_s=0) == (
        None,
        "sacct not found on PATH (no SLURM accounting client on this machine)",
    )
    fake_sacct(
        tmp_path, monkeypatch, "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1\n"
    )
    assert sacct_usage("5", wait_s=0) == (
        None,
        "sacct failed: sacct: error: Slurm accounting storage is disabled",
    )
    fake_sacct(tmp_path, monkeypatch, "exit 0\n")
    assert sacct_usage("5", wait_s=0) == (None, "sacct has no record of job 5 (accounting may be off)")
    # slurmdbd still shows the placeholder (no partition yet): waited for, then recorded with a note
    fake_sacct(tmp_path, monkeypatch, "echo '5|RUNNING|3|cpu=1,mem=1G,node=1|1|3|'\n")
    usage, note = sacct_usage("5", wait_s=0.3, poll_s=0.1)
    assert (
        usage["elapsed_s"] == 3
        and usage["gpu_hours"] == 0
        and note.startswith("sacct record still incomplete")
    )


def test_slurm_record_without_sacct_is_null_with_the_reason(tmp_path, monkeypatch):
    from llara.launch import cost_record

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    args = parse(["--name", "x", "--folder", "f", "--cluster", "slurm", "--gpus", "2", "--", "true"])
    rec = cost_record(args, "42", "COMPLETED", 12.5)
    assert rec["job_id"] == "42" and rec["launcher_wall_s"] == 12.5 and rec["requested"]["gpus"] == 2
    assert rec["source"] is None and rec["gpu_hours"] is None and rec["elapsed_s"] is None
    assert rec["note"].startswith("sacct not found on PATH")


@pytest.mark.extended
def test_local_job_record_and_snakemake_benchmark_feed_the_cost_table(tmp_path):
    """A real Snakemake run of two rules laid out as the grid's adapt/fine-tune, each a local
    launcher job that burns CPU and holds 150 MB, with a `benchmark:`; llara.tables reads the files."""
    import json

    import pandas as pd

    from llara.tables import cost_markdown, cost_table, load_benchmark, load_runs

    burn = tmp_path / "burn.py"  # 1.5 s of CPU while holding 150 MB
    burn.write_text(
        "import time\nx = bytearray(150 * 2**20)\nt = time.process_time()\nwhile time.process_time() - t < 1.5:\n    pass\n"
    )
    rules = []
    for stage in ("adapt", "finetune"):
        stem = f"results/benchmarks/{stage}/llara/released/{{variant}}/seed0"
        rules.append(
            f"rule {stage}:\n"
            f"    output: job='{stem}.job.json'\n"
            f"    benchmark: '{stem}.tsv'\n"
            f"    shell: '{PY} -m llara.launch --name {stage} --folder jobs/{stage} --poll-s 0.2 --gpus 0 "
            f"--record {{output.job}} -- {PY} {burn}'\n"
        )
    snakefile = "\n".join(rules)
    targets = [f"results/benchmarks/{s}/llara/released/{v}/seed0.tsv" for s in ("adapt", "finetune") for v in ("none", "joint")]  # fmt: skip
    (tmp_path / "Snakefile").write_text(snakefile)
    done = subprocess.run(
        [PY, "-m", "snakemake", "-s", "Snakefile", "--cores", "1", *targets],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    b = load_benchmark(tmp_path / targets[1])
    assert (b["step"], b["variant"], b["prompt_style"], b["seed"]) == ("adapt", "joint", "released", 0)
    bench = pd.read_csv(tmp_path / targets[1], sep="\t")  # Snakemake's own numbers: the whole process tree
    assert bench["s"].item() > 1.5 and bench["max_rss"].item() > 150  # the job's child process is seen
    assert 0.9 < bench["cpu_time"].item()  # sampled every 0.5 s: at most the last half second is missed
    job = json.loads((tmp_path / targets[1].replace(".tsv", ".job.json")).read_text())
    assert job["source"] == "launcher" and job["cluster"] == "local" and job["elapsed_s"] > 1.5
    assert job["command_cpu_s"] >= 1.5 and job["command_max_rss_mb"] > 150  # measured by the job: exact
    assert b["wall_hours"] == pytest.approx(bench["s"].item() / 3600)
    assert b["cpu_hours"] == pytest.approx(job["command_cpu_s"] / 3600)  # the exact one is preferred
    assert b["max_rss_mb"] == job["command_max_rss_mb"]
    assert b["gpus"] == 0 and b["gpu_hours"] == 0 and b["cost_source"] == "benchmark+launcher"

    metrics = []
    for variant, value in (("none", 0.2), ("joint", 0.3)):
        prov = {"variant": variant, "dataset": "d", "split": "test", "prompt_style": "released", "seed": 0}
        path = tmp_path / f"{variant}.json"
        path.write_text(json.dumps({"metrics": {"ndcg@10": value}, "per_query": {}, "provenance": prov}))
        metrics.append(path)
    cost = cost_table(load_runs(metrics), [tmp_path / t for t in targets])
    md = cost_markdown(cost)
    assert "adaptation CPU-h / wall-h (no GPU: CPU-hours)" in md
    joint = cost.set_index("variant").loc["joint"]
    assert md.count("| joint [released] | - | ") == 1 and joint["adapt_cpu_hours"] > 0
    gain = 0.1 / joint["adapt_cpu_hours"]
    assert f"| +0.1000 | {gain:+.3g} |" in md


def test_checkpoint_after_the_stage_saved_for_a_requeue_requeues_it():
    """The stage got SLURM's warning itself, saved and exited 75 before submitit's handler ran: the
    job is requeued (it resumes from the saved step), not finished."""
    from llara.io import PREEMPTED
    from llara.launch import StageCommand

    cmd = StageCommand([PY, "-c", f"raise SystemExit({PREEMPTED})"])
    cmd._proc = subprocess.Popen(cmd.command)
    cmd._proc.wait()
    delayed = cmd.checkpoint()
    assert delayed.function.command == cmd.command


def test_a_local_stage_that_saved_at_a_signal_fails_with_how_to_resume(tmp_path, capsys):
    """Nothing requeues a local job: status 75 (saved at a signal) is a failure whose message says a
    rerun resumes."""
    from llara.io import PREEMPTED

    rc = main(["--name", "p", "--folder", str(tmp_path / "jobs"), "--poll-s", "0.2", "--",
               PY, "-c", f"raise SystemExit({PREEMPTED})"])  # fmt: skip
    assert rc == 1
    assert "it resumes from the saved step" in capsys.readouterr().err


def test_setup_lines_run_in_the_job_before_the_command(tmp_path):
    out = tmp_path / "seen.txt"
    rc = main(["--name", "s", "--folder", str(tmp_path / "jobs"), "--poll-s", "0.2",
               "--setup", "export LLARA_SETUP_SEEN=yes", "--setup", f"echo setup-ran > {out}", "--",
               PY, "-c", f"import os; open({str(out)!r}, 'a').write(os.environ['LLARA_SETUP_SEEN'])"])  # fmt: skip
    assert rc == 0 and out.read_text() == "setup-ran\nyes"


def test_several_nodes_need_slurm(tmp_path):
    from llara.io import DataError

    with pytest.raises(DataError, match="a job on several nodes needs --cluster slurm"):
        parse(["--name", "n", "--folder", str(tmp_path), "--nodes", "2", "--", "true"])
    assert (
        parse(
            ["--name", "n", "--folder", str(tmp_path), "--cluster", "slurm", "--nodes", "2", "--", "true"]
        ).nodes
        == 2
    )


def failed_job_error(message: str):
    """A FailedJobError as submitit words it: header, a ruler, the job's traceback, a ruler, logs."""
    from submitit.core.utils import FailedJobError

    ruler = "-" * 22
    trace = (
        'Traceback (most recent call last):\n  File "/x/submitit/core/submission.py", line 55, in process_job\n'
        f"    result = delayed.result()\nllara.launch.StageFailed: {message}"
    )
    return FailedJobError(
        f"Job (task=1) failed during processing with trace:\n{ruler}\n{trace}\n{ruler}\nlogs: x"
    )


def test_error_summary_takes_the_stage_failed_line_not_the_last_line_of_its_message():
    from llara.launch import error_summary

    one = failed_job_error("the stage command exited with status 2: python -m llara.adapt")
    assert error_summary(one) == "the stage command exited with status 2: python -m llara.adapt"
    longer = failed_job_error(
        "the stage command exited with status 2: python -m llara.adapt\nsee the log above"
    )
    assert error_summary(longer) == "the stage command exited with status 2: python -m llara.adapt"


def write_rank_logs(folder, job_id: str, logs: dict[int, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rank, text in logs.items():
        (folder / f"{job_id}_{rank}_log.err").write_text(text)


COLLATERAL = (  # what rank 0 prints when its peer has gone
    'Traceback (most recent call last):\n  File "x.py", line 3, in <module>\n'
    "RuntimeError: [../third_party/gloo/transport/tcp/pair.cc:534] Connection closed by peer\n"
)


def test_failure_reason_names_the_rank_that_printed_its_own_error_line(tmp_path):
    from llara.launch import failure_reason

    own = "warning: 3 empty texts\nerror: /data/pairs.jsonl.missing: file not found; give --train_file\n"
    write_rank_logs(tmp_path, "7", {0: COLLATERAL, 1: own})
    missing = failure_reason(tmp_path, "7", 2, None)
    assert missing.startswith("rank 1: error: /data/pairs.jsonl.missing: file not found; give --train_file")
    assert "ended without a result" in missing and "Connection closed" not in missing
    failed = failure_reason(tmp_path, "7", 2, "the stage command exited with status 2: python -m llara.adapt")
    assert failed == (
        "the stage command exited with status 2: python -m llara.adapt; "
        "rank 1: error: /data/pairs.jsonl.missing: file not found; give --train_file"
    )


def test_failure_reason_falls_back_to_the_exception_line_then_to_nothing(tmp_path):
    from llara.launch import failure_reason

    write_rank_logs(tmp_path, "8", {0: "loading\n", 1: COLLATERAL})
    assert failure_reason(tmp_path, "8", 2, None).startswith("rank 1: RuntimeError: [../third_party/gloo")
    prefixed = '[rank1]: Traceback (most recent call last):\n[rank1]:   File "x.py", line 3\n' + (
        "[rank1]: AssertionError: Check batch related parameters. 4 != 4 * 1 * 2\n"
    )  # torch.distributed prefixes a rank's uncaught exception with its rank
    write_rank_logs(tmp_path, "10", {0: "loading\n", 1: prefixed})
    assert failure_reason(tmp_path, "10", 2, None).startswith(
        "rank 1: AssertionError: Check batch related parameters. 4 != 4 * 1 * 2"
    )
    write_rank_logs(tmp_path, "9", {0: "loading\n"})  # rank 1 wrote no log at all
    assert failure_reason(tmp_path, "9", 2, None) == (
        "the job ended without a result from every rank (cancelled, killed or lost)"
    )
    assert failure_reason(tmp_path, "9", 2, "the stage command was killed by signal 9: x") == (
        "the stage command was killed by signal 9: x"
    )


ABORTED = (  # rank 1 of the rehearsal's finetune job 376: a C++ abort in teardown, then submitit's report
    "2026-12-03 08:08:51,048 llara.training INFO finetune: 200 training rows; rank 1 starts\n"
    "terminate called without an active exception\n"
    "submitit ERROR (2026-12-03 08:08:54,594) - Submitted job triggered an exception\n"
    "Traceback (most recent call last):\n"
    '  File "launch.py", line 205, in __call__\n'
    '    raise StageFailed(f"the stage command {how}: {short}")\n'
    "llara.launch.StageFailed: the stage command was killed by signal 6: python -m llara.finetune ...\n"
)


def test_failure_reason_names_a_rank_killed_by_a_signal(tmp_path):
    from llara.launch import failure_reason

    write_rank_logs(tmp_path, "376", {0: "loading\n", 1: ABORTED})
    assert failure_reason(tmp_path, "376", 2, None) == (
        "rank 1: the stage command was killed by signal 6: python -m llara.finetune ... (its last line: "
        "terminate called without an active exception) (the job ended without a result from every "
        "rank (cancelled, killed or lost))"
    )
    write_rank_logs(tmp_path, "377", {0: COLLATERAL, 1: ABORTED})  # the abort wins over the collateral
    assert failure_reason(tmp_path, "377", 2, None).startswith(
        "rank 1: the stage command was killed by signal 6"
    )
    own = "error: /data/x.jsonl: line 3: not JSON; fix the line\n"
    write_rank_logs(tmp_path, "378", {0: ABORTED, 1: own})  # the stage's own message wins over both
    assert failure_reason(tmp_path, "378", 2, None).startswith("rank 1: error: /data/x.jsonl: line 3")


def test_a_failing_rank_of_a_two_task_job_gives_its_own_error_line(tmp_path):
    """Rank 1 of a local 2-task job fails with an ``error:`` line; rank 0 succeeds. The launcher's
    first line (the rule's reason) carries rank 1's line, not only 'the stage command exited'."""
    stage = (
        "import os, sys; r = os.environ['RANK']; "
        "sys.exit('error: shard 1 of data.jsonl is empty; give more rows') if r == '1' else None"
    )
    cmd = [PY, "-m", "llara.launch", "--name", "ranks", "--folder", str(tmp_path / "jobs"), "--tasks", "2",
           "--poll-s", "0.2", "--", PY, "-c", stage]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    first = done.stderr.strip().splitlines()[0]
    assert done.returncode == 1, done.stderr
    assert "failed, state" in first and "the stage command exited with status 1" in first, first
    assert first.endswith("; rank 1: error: shard 1 of data.jsonl is empty; give more rows"), first


def test_a_requeued_jobs_cost_sums_every_attempt_of_every_rank(tmp_path, monkeypatch):
    """Attempt 0 of a 2-rank job is preempted after 30 / 20 CPU seconds (its ranks write their usage,
    no result); attempt 1 completes with 50 / 40. The job record and the cost table count all four:
    140 CPU seconds, 2 attempts; sacct's elapsed time and CPU-hours are summed over attempts too."""
    import json

    from llara.launch import attempt_usage, cost_record
    from llara.tables import load_benchmark

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for rank, cpu in ((0, 30.0), (1, 20.0)):
        first = attempt_usage(jobs, "77", rank, 0, {"cpu_s": cpu, "max_rss_mb": 100.0 + rank})
        assert first == {"cpu_s": cpu, "max_rss_mb": 100.0 + rank, "attempts": 1}
    results = [
        attempt_usage(jobs, "77", rank, 1, {"cpu_s": cpu, "max_rss_mb": 90.0})
        for rank, cpu in ((0, 50.0), (1, 40.0))
    ]
    assert results == [
        {"cpu_s": 80.0, "max_rss_mb": 100.0, "attempts": 2},
        {"cpu_s": 60.0, "max_rss_mb": 101.0, "attempts": 2},
    ]
    rows = ["77|PREEMPTED|100|billing=4,cpu=4,mem=4G,node=2|4|400|low",
            "77|COMPLETED|150|billing=4,cpu=4,mem=4G,node=2|4|600|low"]  # fmt: skip
    fake_sacct(tmp_path, monkeypatch, "".join(f"echo '{r}'\n" for r in rows))
    args = parse(["--name", "adapt", "--cluster", "slurm", "--folder", str(jobs), "--nodes", "2", "--cpus", "2",
                  "--record-wait-s", "0", "--", "true"])  # fmt: skip
    record = cost_record(args, "77", "COMPLETED", 400.0, results)
    assert record["command_cpu_s"] == 140.0 and record["command_attempts"] == 2
    assert (
        record["attempts"] == 2
        and record["elapsed_s"] == 250
        and record["cpu_hours"] == pytest.approx(1000 / 3600)
    )
    stem = tmp_path / "results/benchmarks/adapt/llara/released/joint/seed0"
    stem.parent.mkdir(parents=True)
    stem.with_suffix(".tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n401.0\t0:06:41\t80.0\t2.0\n")
    stem.with_suffix(".job.json").write_text(json.dumps(record))
    bench = load_benchmark(stem.with_suffix(".tsv"))
    assert bench["cost_source"] == "sacct" and bench["wall_hours"] == pytest.approx(250 / 3600)
    assert bench["cpu_hours"] == pytest.approx(140 / 3600)  # every attempt's CPU time, not the last one's
