"""Adaptation stage end to end on a tiny model: variants, outputs, resume, bad input (in process and
through ``python -m llara.adapt``: exit status 2, one ``error:`` line, no traceback)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from conftest import assert_bad_input, pretrain_rows, run_cli, shared_path, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from llara.adapt import main
from llara.io import DataError
from llara.rows import RowError

COMMON = [
    "--per_device_train_batch_size",
    "2",
    "--max_length",
    "64",
    "--target_max_length",
    "64",
    "--logging_steps",
    "1",
    "--report_to",
    "none",
    "--seed",
    "0",
    "--save_strategy",
    "no",
    "--learning_rate",
    "1e-3",
    "--use_cpu",
]


def run(tiny_model_dir, train, out, *extra):
    return main(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--train_file",
            str(train),
            "--output_dir",
            str(out),
            *COMMON,
            *extra,
        ]
    )


@pytest.mark.parametrize("variant", ["ebae", "ebar", "joint"])
def test_variants_train_and_log_parts(tiny_model_dir, tmp_path, variant):
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(6))
    out = tmp_path / "out"
    run(tiny_model_dir, train, out, "--variant", variant, "--max_steps", "3")
    cfg = json.loads((out / "llara_config.json").read_text())
    assert cfg["variant"] == variant and cfg["global_step"] == 3 and cfg["rows_used"] == 6
    logged = set().union(*(set(h) for h in cfg["log_history"]))
    want = {"lm"} | ({"bow_ebae", "bow_ebar"} if variant == "joint" else {f"bow_{variant}"})
    assert want <= logged
    tok = AutoTokenizer.from_pretrained(out)
    assert "<s16>" in tok.get_vocab()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert not (tmp_path / "out.partial").exists()


def test_official_toy_file_loads_as_is(tiny_model_dir, tmp_path):
    toy = shared_path("data", "pretrain", "llara_toy_pretrain.jsonl")
    out = tmp_path / "out"
    run(tiny_model_dir, toy, out, "--variant", "joint", "--max_steps", "1", "--lm_weight", "0")
    cfg = json.loads((out / "llara_config.json").read_text())
    assert cfg["rows_used"] == 11


def test_none_passes_base_model_through(tiny_model_dir, tmp_path):
    out = tmp_path / "none"
    main(["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--variant", "none"])
    base = load_file(tiny_model_dir / "model.safetensors")
    new = load_file(out / "model.safetensors")
    w = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(base[w], new[w], rtol=0, atol=0)
    assert "<s1>" in AutoTokenizer.from_pretrained(out).get_vocab()


def test_lora_adaptation_writes_plain_model(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(4))
    out = tmp_path / "lora"
    run(
        tiny_model_dir,
        train,
        out,
        "--variant",
        "ebar",
        "--max_steps",
        "2",
        "--use_lora",
        "--lora_r",
        "4",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    )
    assert not (out / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(out)


def test_row_with_empty_target_still_trains_its_other_half_and_lm(tiny_model_dir, tmp_path):
    """As the official code: a row whose EBAR target is empty after stop-word removal is left out of the
    EBAR mean only; its EBAE target and LM term still count (it is not dropped whole)."""
    from llara.model import LlaraModel

    rows = pretrain_rows(4)
    rows[1]["output_predict"] = "the of and. it , ?"  # only stop words and punctuation
    llara = LlaraModel.from_pretrained(tiny_model_dir, head=True, allow_untrained_slots=True)
    kw = dict(max_length=64, target_max_length=64, remove_stop_words=True)
    batch = llara.adaptation_batch(rows, "joint", **kw)
    assert (batch["ebar_targets"][1] < 0).all() and (batch["ebae_targets"][1] >= 0).any()
    out = llara.adaptation_loss(batch)
    others = [0, 2, 3]
    sub = llara.adaptation_loss({k: v[others] for k, v in batch.items()})
    torch.testing.assert_close(out.bow_ebar, sub.bow_ebar)  # row 1 left out of the EBAR mean
    assert not torch.isclose(out.bow_ebae, sub.bow_ebae)  # but in the EBAE mean
    assert not torch.isclose(out.lm, sub.lm)  # and in the LM term
    # end to end: every row is used, losses finite
    train = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out_dir = tmp_path / "out"
    run(tiny_model_dir, train, out_dir, "--variant", "joint", "--max_steps", "2", "--remove_stop_words")
    cfg = json.loads((out_dir / "llara_config.json").read_text())
    assert cfg["rows_used"] == 4
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in cfg["log_history"] if "loss" in h)


def test_resume_after_interruption_matches_uninterrupted(tiny_model_dir, tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(8))
    args = ["--variant", "joint", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    run(tiny_model_dir, train, tmp_path / "straight", *args)

    import llara.training as training

    calls = {"n": 0}
    original = training.LlaraTrainer.training_step

    def crash_on_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *a, **k)

    monkeypatch.setattr(training.LlaraTrainer, "training_step", crash_on_third)
    assert run(tiny_model_dir, train, tmp_path / "resumed", *args) == 130  # the CLI's status for Ctrl-C
    assert not (tmp_path / "resumed").exists()  # nothing final after an interruption
    assert (tmp_path / "resumed.partial" / "checkpoints" / "checkpoint-2").is_dir()
    calls["n"] = 10  # count the steps of the rerun from here: it must only run steps 3 and 4
    run(tiny_model_dir, train, tmp_path / "resumed", *args)
    assert calls["n"] == 12, f"the rerun trained {calls['n'] - 10} steps instead of resuming at step 3"
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    # Same weights up to float noise: CPU kernels are not bit-reproducible run to run, and Adam turns
    # 1e-9 gradient noise into lr-sized steps on near-zero gradients (lr 1e-3 here, 4 steps).
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=5e-3)

    def logged(d):
        return [
            h["loss"] for h in json.loads((d / "llara_config.json").read_text())["log_history"] if "loss" in h
        ]

    assert logged(tmp_path / "resumed")[-2:] == pytest.approx(logged(tmp_path / "straight")[-2:], abs=1e-3)


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_a_signal_saves_the_current_step_and_the_rerun_resumes_there(
    tiny_model_dir, tmp_path, monkeypatch, signum
):
    """SLURM's warning (USR2) or a preemption's SIGTERM during step 3: the stage saves checkpoint-3 (not
    the last periodic one, 2), exits with status 75 (requeue me), and the rerun trains step 4 only,
    ending with the uninterrupted run's weights."""
    import llara.training as training
    from llara.io import PREEMPTED

    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(8))
    args = ["--variant", "joint", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    run(tiny_model_dir, train, tmp_path / "straight", *args)
    calls = {"n": 0}
    original = training.LlaraTrainer.training_step

    def signal_on_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signum)  # delivered now; the step still ends normally
        return original(self, *a, **k)

    monkeypatch.setattr(training.LlaraTrainer, "training_step", signal_on_third)
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as stopped:
        run(tiny_model_dir, train, tmp_path / "resumed", *args)
    assert stopped.value.code == PREEMPTED
    assert signal.getsignal(signum) == before  # the handler is only there while training
    assert not (tmp_path / "resumed").exists()
    saved = tmp_path / "resumed.partial" / "checkpoints" / "checkpoint-3"
    assert (saved / "trainer_state.json").is_file()  # the step the signal came in, saved whole
    calls["n"] = 10
    run(tiny_model_dir, train, tmp_path / "resumed", *args)
    assert calls["n"] == 11, f"the rerun trained {calls['n'] - 10} steps instead of step 4 only"
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=5e-3)


def test_checkpoints_of_another_config_are_not_resumed(tiny_model_dir, tmp_path, caplog):
    stale = tmp_path / "out.partial" / "checkpoints" / "checkpoint-7"
    stale.mkdir(parents=True)
    (tmp_path / "out.partial" / "llara_config.json").write_text(json.dumps({"variant": "ebae"}))
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(2))
    run(tiny_model_dir, train, tmp_path / "out", "--variant", "joint", "--max_steps", "1")
    assert "another configuration" in caplog.text and "differs in" in caplog.text
    assert json.loads((tmp_path / "out" / "llara_config.json").read_text())["global_step"] == 1


def test_bad_inputs_name_file_line_and_field(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output_summarize": "a", "output_predict": "b"}\n{"input": "x", oops}\n')
    assert run(tiny_model_dir, bad, tmp_path / "o", "--variant", "joint", "--max_steps", "1") == 2
    assert f"error: {bad}:2: malformed JSON" in capsys.readouterr().err
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"input": "a", "output_summarize": "b"}])
    assert run(tiny_model_dir, missing, tmp_path / "o", "--variant", "ebar", "--max_steps", "1") == 2
    assert f"error: {missing}:1: row has no field 'output_predict'" in capsys.readouterr().err
    # ebae needs no output_predict: the same file is fine for it
    assert run(tiny_model_dir, missing, tmp_path / "ok", "--variant", "ebae", "--max_steps", "1") == 0
    # the errors are DataErrors (a RowError is one), which the CLI wrapper turns into that line
    from llara.rows import PRETRAIN_FIELDS, validate_jsonl

    with pytest.raises(RowError, match="row has no field 'output_predict'"):
        validate_jsonl(missing, PRETRAIN_FIELDS)
    with pytest.raises(DataError, match="malformed JSON"):
        validate_jsonl(bad, PRETRAIN_FIELDS)


@pytest.mark.slow  # a subprocess per case, ~10-25 s each: `make test-slow` (CI when time allows)
@pytest.mark.parametrize("case", ["truncated last line", "empty file", "max_steps 0"])
def test_cli_bad_input_is_one_line_and_exit_status_2(tiny_model_dir, tmp_path, case):
    rows = "".join(json.dumps(r) + "\n" for r in pretrain_rows(2))
    train = tmp_path / "pairs.jsonl"
    train.write_text({"truncated last line": rows + rows[:40], "empty file": ""}.get(case, rows))
    steps = "0" if case == "max_steps 0" else "1"
    args = ["--model_name_or_path", tiny_model_dir, "--train_file", train, "--output_dir", tmp_path / "out"]
    done = run_cli("adapt", *args, "--variant", "joint", "--max_steps", steps, *COMMON)
    if case == "max_steps 0":
        assert_bad_input(done, "--max_steps must be a positive number of steps, or -1", "got 0")
    else:
        assert_bad_input(
            done, train, "malformed JSON" if case == "truncated last line" else "the file is empty"
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max_steps", "-2"], "--max_steps must be a positive number of steps, or -1 to train"),
        (["--num_train_epochs", "0"], "--num_train_epochs must be > 0 when --max_steps is -1"),
    ],
)
def test_step_counts_that_train_nothing_are_refused(tiny_model_dir, tmp_path, capsys, flags, message):
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(2))
    with pytest.raises(SystemExit) as exit_:
        run(tiny_model_dir, train, tmp_path / "out", "--variant", "joint", *flags)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {message}") and not any("usage:" in line for line in err)


def test_a_run_that_trains_zero_steps_writes_no_model(tiny_model_dir, tmp_path, capsys):
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(2))  # fewer rows than one batch ...
    out = tmp_path / "out"
    extra = ["--dataloader_drop_last", "--per_device_train_batch_size", "4"]  # ... and that batch dropped
    assert run(tiny_model_dir, train, out, "--variant", "ebae", "--max_steps", "1", *extra) == 2
    assert f"error: {out}: adapt trained 0 steps on 2 rows" in capsys.readouterr().err
    assert not out.exists()


def test_empty_training_texts_are_warned_and_a_mostly_empty_file_refused(tmp_path):
    from llara.io import DataWarning
    from llara.rows import FINETUNE_FIELDS, PRETRAIN_FIELDS, validate_jsonl

    rows = pretrain_rows(5)
    rows[1]["input"] = ""
    rows[3]["input"] = "  "
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.warns(
        DataWarning, match=r"pairs.jsonl: 2 of 5 rows have an empty text \('input'; lines 2, 4\)"
    ):
        assert validate_jsonl(path, PRETRAIN_FIELDS) == 5
    rows[0]["input"] = ""
    with pytest.raises(
        RowError, match=r"pairs.jsonl: 3 of 5 rows have an empty text .*lines 1, 2, 4.*mostly"
    ):
        validate_jsonl(write_jsonl(path, rows), PRETRAIN_FIELDS)
    ft = [
        {"query": "", "pos": ["p"], "neg": []},
        {"query": "q", "pos": ["p", ""], "neg": []},
        {"query": "q", "pos": ["p"], "neg": [""]},  # an empty negative is not a training text
        {"query": "q", "pos": ["p"], "neg": []},
    ]
    with pytest.warns(DataWarning, match=r"2 of 4 rows have an empty text \('query', 'pos'; lines 1, 2\)"):
        validate_jsonl(write_jsonl(tmp_path / "ft.jsonl", ft), FINETUNE_FIELDS)


def test_unknown_variant_lists_valid_ones(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit, match="2"):
        main(
            [
                "--model_name_or_path",
                str(tiny_model_dir),
                "--output_dir",
                str(tmp_path / "x"),
                "--variant",
                "both",
            ]
        )
    assert "valid: none, ebae, ebar, joint" in capsys.readouterr().err


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_with_joint_mask(tiny_model_dir, tmp_path, lora):
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(4))
    out = tmp_path / "gc"
    extra = ["--use_lora", "--lora_r", "4"] if lora else []
    run(
        tiny_model_dir,
        train,
        out,
        "--variant",
        "joint",
        "--max_steps",
        "2",
        "--gradient_checkpointing",
        *extra,
    )
    cfg = json.loads((out / "llara_config.json").read_text())
    assert cfg["training"]["gradient_checkpointing"] is True and cfg["global_step"] == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in cfg["log_history"] if "loss" in h)


def test_last_checkpoint_skips_one_killed_while_written(tmp_path):
    from llara.training import last_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_checkpoint(tmp_path / "missing") is None


@pytest.mark.extended
def test_a_second_trainer_on_the_same_partial_folder_is_refused(tiny_model_dir, tmp_path):
    """An orphaned trainer (its Snakemake killed) still holds <out>.partial: a new run of the same
    output is refused in one line instead of sharing (and later deleting) its checkpoints."""
    import fcntl

    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(4))
    work = tmp_path / "out.partial"
    work.mkdir()
    holder = open(work / ".lock", "a")  # noqa: SIM115
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's lock: flock is per open file
    (work / "owner.json").write_text('{"slurm_job_id": null, "host": "h", "pid": 1}')
    done = run_cli("adapt", "--model_name_or_path", str(tiny_model_dir), "--train_file", str(train),
                   "--output_dir", str(tmp_path / "out"), "--variant", "joint", "--max_steps", "1")  # fmt: skip
    assert done.returncode == 2 and "another trainer holds this folder" in done.stderr, done.stderr[-2000:]
    holder.close()  # the other trainer is gone: the folder is free again
    run(tiny_model_dir, train, tmp_path / "out", "--variant", "joint", "--max_steps", "1")
    assert (tmp_path / "out" / "model.safetensors").is_file() and not work.exists()
