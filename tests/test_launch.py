"""The submitit launcher: local jobs succeed, fail with the job's error tail, and are cancelled on SIGINT."""

from __future__ import annotations

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
    with pytest.raises(SystemExit, match="the stage command after --"):
        parse(["--name", "x", "--folder", "f"])
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
