"""DeepSpeed configs (config/deepspeed/*.json) and two-process ZeRO-2 / ZeRO-3 adaptation runs on the CPU.

The fast tests fill every "auto" value the way the transformers Trainer does (``HfTrainerDeepSpeedConfig``
``trainer_config_process`` at TrainingArguments time, ``trainer_config_finalize`` once the model and the
number of steps are known) and parse the result with DeepSpeed's own ``DeepSpeedConfig``: no process
group, no training, well under a second per file (stack-notes.md, "DeepSpeed on CPU").

The slow tests launch ``torchrun --nproc_per_node=2 -m llara.adapt ... --deepspeed zero2.json --use_cpu``
(CPU accelerator, gloo), and the same with zero3.json. DeepSpeed compiles its ops at first use
(``deepspeed_shm_comm`` and ``fused_adam``: 2 minutes at load average 6, 7 minutes at 8); they
are kept under ``.torch_extensions/cpu`` (gitignored) and reused by later runs (about 20 s a run).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import pretrain_rows, write_jsonl

pytest.importorskip("deepspeed", reason="deepspeed is not installed: pip install -e '.[deepspeed]'")

from deepspeed.runtime.config import DeepSpeedConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments  # noqa: E402
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config" / "deepspeed"
CONFIGS = sorted(CONFIG_DIR.glob("*.json"))
EXTENSIONS_DIR = REPO / ".torch_extensions" / "cpu"  # compiled DeepSpeed ops, reused between runs
STAGES = {"zero1.json": 1, "zero2.json": 2, "zero3.json": 3, "zero3_offload.json": 3}

# What the Trainer would be given; the checks below derive every filled value from these.
MICRO, ACCUM, LR, CLIP, STEPS, WARMUP_RATIO = 4, 2, 1e-5, 1.0, 100, 0.1
HIDDEN = 32  # the model's hidden size: "auto" bucket sizes are derived from it


def training_args(tmp_path: Path, **overrides) -> TrainingArguments:
    kw = dict(
        output_dir=str(tmp_path / "unused"),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=ACCUM,
        learning_rate=LR,
        max_grad_norm=CLIP,
        warmup_steps=WARMUP_RATIO,  # a float < 1 is a ratio of the total steps in transformers 5
    )
    return TrainingArguments(**{**kw, **overrides})


def fill(config: dict, args: TrainingArguments) -> HfTrainerDeepSpeedConfig:
    """Fill the "auto" values exactly as the Trainer does (both stages); raises on a mismatch."""
    hf = HfTrainerDeepSpeedConfig(copy.deepcopy(config))
    hf.trainer_config_process(args)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=HIDDEN))  # all finalize reads of it
    hf.trainer_config_finalize(args, model, num_training_steps=STEPS)
    return hf


def autos(node, where: str = "") -> list[str]:
    """Keys still set to "auto" anywhere in a (nested) config."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in autos(v, f"{where}.{key}".lstrip("."))]
    return [where] if node == "auto" else []


def load(name: str) -> dict:
    return json.loads((CONFIG_DIR / name).read_text())


def test_config_folder_holds_every_stage():
    names = {p.name for p in CONFIGS}
    assert {"zero1.json", "zero2.json", "zero3.json"} <= names, f"found only {sorted(names)}"
    unknown = names - set(STAGES)
    assert not unknown, f"add the expected ZeRO stage of {sorted(unknown)} to STAGES in this test"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_config_fills_and_parses(path, precision, tmp_path):
    args = training_args(tmp_path, bf16=precision == "bf16")
    hf = fill(json.loads(path.read_text()), args)
    assert autos(hf.config) == []  # nothing left for DeepSpeed to choke on

    ds = DeepSpeedConfig(copy.deepcopy(hf.config))  # no process group: world size 1, like args
    assert ds.zero_optimization_stage == STAGES[path.name]
    assert (ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (MICRO, ACCUM)
    assert ds.train_batch_size == MICRO * ACCUM * args.world_size
    assert ds.gradient_clipping == CLIP
    assert ds.bfloat16_config.enabled is (precision == "bf16")
    assert ds.float16_config.enabled is False
    assert hf.config["optimizer"]["params"]["lr"] == LR
    assert hf.config["optimizer"]["params"]["betas"] == [args.adam_beta1, args.adam_beta2]
    sched = hf.config["scheduler"]["params"]
    assert (sched["warmup_max_lr"], sched["total_num_steps"]) == (LR, STEPS)
    assert sched["warmup_num_steps"] == 10  # ceil(0.1 x 100)
    assert sched["warmup_type"] == "linear"  # DeepSpeed's default is "log"; HF's linear warm-up is linear
    zero = hf.config["zero_optimization"]
    if ds.zero_optimization_stage == 3:
        # without it trainer.save_model() writes no usable weights under ZeRO-3
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert zero["stage3_param_persistence_threshold"] == 10 * HIDDEN
    if "reduce_bucket_size" in zero and ds.zero_optimization_stage >= 2:
        assert zero["reduce_bucket_size"] == HIDDEN * HIDDEN


def test_bad_stage_is_rejected(tmp_path):
    config = load("zero2.json")
    config["zero_optimization"]["stage"] = 4
    hf = fill(config, training_args(tmp_path))
    with pytest.raises(Exception, match=r"(?s)stage.*Input should be 0, 1, 2, 3"):
        DeepSpeedConfig(hf.config)


def test_unknown_zero_key_is_rejected(tmp_path):
    config = load("zero2.json")
    config["zero_optimization"]["stage3_prefetch_bucket"] = 1000  # misspelt key
    hf = fill(config, training_args(tmp_path))
    with pytest.raises(Exception, match="Extra inputs are not permitted"):
        DeepSpeedConfig(hf.config)


def test_inconsistent_batch_size_is_rejected(tmp_path):
    config = load("zero2.json")
    config["train_batch_size"] = MICRO * ACCUM + 1  # not "auto" and not micro x accumulation x world
    with pytest.raises(ValueError, match=r"train_batch_size=9 vs hf train_batch_size \(calculated\)=8"):
        fill(config, training_args(tmp_path))
    # DeepSpeed alone (no Trainer in between) refuses it as well
    hf = HfTrainerDeepSpeedConfig(copy.deepcopy(config))
    hf.trainer_config_process(training_args(tmp_path))
    with pytest.raises(AssertionError, match="Check batch related parameters"):
        DeepSpeedConfig(hf.config)


def test_value_that_contradicts_training_arguments_is_rejected(tmp_path):
    config = load("zero1.json")
    config["optimizer"]["params"]["lr"] = 3e-4  # fixed in the file, while --learning_rate says 1e-5
    with pytest.raises(ValueError, match=r"optimizer.params.lr=0.0003 vs hf learning_rate=1e-05"):
        fill(config, training_args(tmp_path))


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2.json", "zero3.json"])
def test_adaptation_two_processes_on_cpu(config, tiny_model_dir, tmp_path):
    """ZeRO-2 (the case asked for) and ZeRO-3 (weights partitioned inside from_pretrained)."""
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(8))
    out = tmp_path / "out"
    EXTENSIONS_DIR.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TORCH_EXTENSIONS_DIR": str(EXTENSIONS_DIR),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "llara.adapt", "--model_name_or_path", str(tiny_model_dir), "--train_file", str(train)),
        *("--output_dir", str(out), "--variant", "joint", "--max_steps", "3"),
        *("--per_device_train_batch_size", "2", "--max_length", "64", "--target_max_length", "64"),
        *("--learning_rate", "1e-3", "--logging_steps", "1", "--save_strategy", "no"),
        *("--report_to", "none", "--seed", "0", "--use_cpu"),
        *("--deepspeed", str(CONFIG_DIR / config)),
    ]
    log_path = tmp_path / "torchrun.log"
    start = time.monotonic()
    with log_path.open("w") as log_file:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=1800, check=False
        )
    elapsed = time.monotonic() - start
    log = log_path.read_text(errors="replace")
    print(f"torchrun {config} adaptation: {elapsed:.1f} s, exit code {proc.returncode}")

    complete = (out / "llara_config.json").is_file() and (out / "model.safetensors").is_file()
    trained = "train_runtime" in log  # the Trainer prints it once training has finished
    if proc.returncode != 0:
        if not (complete and trained):
            pytest.fail(f"torchrun exited {proc.returncode} after {elapsed:.0f} s; log tail:\n{_tail(log)}")
        # Known flake (stack-notes.md): in about 1 of 20 two-process CPU runs one process aborts
        # *after* training and saving ("terminate called without an active exception") and torchrun
        # exits 1. The output was written and renamed complete, so the run itself succeeded: accept it,
        # but say so in the test summary.
        warnings.warn(
            f"torchrun exited {proc.returncode} after training finished and the output was complete "
            "(known DeepSpeed-on-CPU abort at exit); accepted",
            stacklevel=1,
        )
    found = sorted(p.name for p in out.glob("*")) if out.exists() else "no output folder"
    assert complete, f"output incomplete ({found}); log tail:\n{_tail(log)}"
    assert not (tmp_path / "out.partial").exists()

    cfg = json.loads((out / "llara_config.json").read_text())
    assert cfg["global_step"] == 3 and cfg["variant"] == "joint"
    assert cfg["training"]["deepspeed"] == str(CONFIG_DIR / config)
    assert log.count("training rows;") == 2  # both ranks ran the stage
    losses = [h for h in cfg["log_history"] if "loss" in h]
    assert len(losses) == 3 and {"bow_ebae", "bow_ebar", "lm"} <= set(losses[0])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(out))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    trained_w, base_w = model.state_dict()[name], base.state_dict()[name]
    assert not torch.equal(trained_w, base_w)  # the saved weights are the trained ones, gathered whole


def test_several_cpu_processes_without_cuda_get_the_cpu_accelerator(monkeypatch):
    """A grid job on a node without CUDA (the local SLURM cluster) that runs as several ranks gets
    ``--use_cpu``: without it the Trainer counts 1 process on every rank (no gradient sync; every
    rank saves as the main one) and DeepSpeed's batch check stops the job. Nothing is added with
    CUDA, for one process (with or without DeepSpeed), or when already given."""
    import torch

    from llara.training import cpu_argv

    ds = ["--deepspeed", "config/deepspeed/zero1.json", "--max_steps", "3"]
    one, two = {"WORLD_SIZE": "1"}, {"WORLD_SIZE": "2", "RANK": "1"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cpu_argv(ds, two) == [*ds, "--use_cpu"]
    assert cpu_argv(ds, one) == ds and cpu_argv(["--deepspeed=zero1.json"], {}) == ["--deepspeed=zero1.json"]
    assert cpu_argv(["--max_steps", "3"], two) == ["--max_steps", "3", "--use_cpu"]
    assert cpu_argv([*ds, "--use_cpu"], two) == [*ds, "--use_cpu"]
    assert cpu_argv(["--max_steps", "3"], one) == ["--max_steps", "3"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_argv(ds, two) == ds


def _leave_worker(rank: int, port: int, folder: str) -> None:
    import datetime
    import time as clock

    import torch.distributed as dist

    from llara.training import leave_process_group

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    if rank == 0:  # rank 0 still writes the model when rank 1 is done
        clock.sleep(1.5)
        (Path(folder) / "saved").write_text("done")
    leave_process_group(None, together=True)
    assert not dist.is_initialized()
    if rank == 1:
        assert (Path(folder) / "saved").exists(), "rank 1 left before rank 0 had written the model"


@pytest.mark.extended
def test_ranks_leave_the_process_group_together(tmp_path):
    """A rank that finished waits for its peers before the group is destroyed (rank 0 writing the
    model must not see rank 1 tear down under it)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_leave_worker, args=(port, str(tmp_path)), nprocs=2, join=True)


def test_a_failed_rank_frees_its_trainer_before_leaving():
    """The DDP wrapper held by a failed stage's frames is freed before the group is destroyed (at the
    interpreter's exit it aborted the process: pytorch/pytorch#179291), and a failed rank does not
    wait for peers that may be gone (world size 1 here: nothing to wait for)."""
    import datetime
    import socket
    import weakref

    import torch.distributed as dist

    from llara.training import leave_process_group

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=30),
    )
    seen = []

    def stage() -> None:
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        ddp.cycle = ddp  # a reference cycle, as the Trainer's: only the collector frees it
        seen.append(weakref.ref(ddp))
        raise RuntimeError("the stage failed")

    try:
        stage()
    except RuntimeError as failed:
        leave_process_group(failed.__traceback__, together=False)
        assert seen[0]() is None, "the failed stage's DDP wrapper outlived leave_process_group"
    assert not dist.is_initialized()
