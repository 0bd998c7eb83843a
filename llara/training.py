"""Pieces shared by the two training stages (adaptation, fine-tuning).

* output folders are written as ``<out>.partial/`` (checkpoints + final model) and renamed to
  ``<out>`` only when complete, so an interrupted run is never taken for a finished one, and a rerun
  resumes from the last checkpoint in ``<out>.partial/``;
* the resolved configuration is written beside every artifact (``llara_config.json``);
* each loss part (``bow_ebae``, ``bow_ebar``, ``lm``...) is logged beside the total loss;
* on SIGUSR2 (SLURM's warning before a time limit or a preemption with ``send_user_signal``) or
  SIGTERM (a preemption without it), :class:`SaveOnSignal` has the Trainer save a checkpoint at the
  current step and stop; the stage then exits with :data:`PREEMPTED` and the requeued job resumes from
  that step, not from the last periodic checkpoint;
* the command line is checked before anything loads: a bad value of a stage's own arguments, a step
  count that trains nothing (``--max_steps 0``, ``--num_train_epochs 0``) are one ``error:`` line and
  exit status 2 (:data:`llara.io.BAD_INPUT`); a run that trained 0 steps writes no model.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed

from llara.io import BAD_INPUT, PREEMPTED, DataError, atomic_folder, atomic_write_json, code_version, jsonable

CONFIG_NAME = "llara_config.json"
log = logging.getLogger("llara.training")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class SaveOnSignal(TrainerCallback):
    """Save at the current step and stop when SIGUSR2 or SIGTERM arrives (from SLURM, or the launcher
    stopping the job before a requeue). With several processes the ranks agree at every step end
    (an all-reduce of one flag), so all of them save the same step."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.received: int | None = None
        self.saved_step: int | None = None
        self._previous = {signum: signal.signal(signum, self._note) for signum in signals}

    def restore(self) -> None:
        """The handlers from before (training is over: a signal now means what it meant before)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum

    def _any_rank(self) -> bool:
        flag = self.received is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([int(flag)])
            if torch.distributed.get_backend() == "nccl":
                t = t.cuda()
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            return control  # the last step: training ends and the model is written as usual
        if self._any_rank():
            control.should_save = True
            control.should_training_stop = True
            self.saved_step = state.global_step
        return control


def resolve_precision(args: TrainingArguments, precision: str) -> TrainingArguments:
    """``auto``: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        if args.bf16 or args.fp16:
            return args  # chosen explicitly with --bf16 / --fp16
        if not torch.cuda.is_available():
            return args
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return dataclasses.replace(args, bf16=precision == "bf16", fp16=precision == "fp16")


def work_dir(output: str | Path) -> Path:
    return Path(f"{output}.partial")


def prepare_output(output: str | Path, config: dict[str, Any]) -> Path:
    """Refuse a finished ``output``; reuse ``<output>.partial`` when it was made with the same
    configuration (resume), start it over when not; return the checkpoint folder."""
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} already exists and is complete; delete it to train again")
    work = work_dir(output)
    if work.is_dir():
        claim(work)  # before anything is reused or deleted: another live trainer keeps its folder
    previous = work / CONFIG_NAME
    stage_config = {k: v for k, v in config.items() if k != "code_version"}
    if previous.exists():
        before = {k: v for k, v in json.loads(previous.read_text()).items() if k != "code_version"}
        if before != stage_config:
            changed = sorted(
                k for k in set(before) | set(stage_config) if before.get(k) != stage_config.get(k)
            )
            log.warning(
                "%s holds checkpoints of a run with another configuration (differs in: %s); starting over",
                work,
                ", ".join(changed),
            )
            shutil.rmtree(work)
            release(work)
    work.mkdir(parents=True, exist_ok=True)
    claim(work)
    atomic_write_json(previous, jsonable(config))
    return work / "checkpoints"


OWNER = "owner.json"  # who trains in a .partial folder: a SLURM job id, or a process on a host
_HELD: dict[str, Any] = {}  # .partial folder -> the lock file this process holds on it


def claim(work: Path) -> None:
    """Make ``work`` (a ``.partial`` folder) this job's, or refuse in one line when another job still
    trains there: an orphaned trainer (Snakemake killed, its job left running) and a new one must not
    share checkpoints. On SLURM the owner is the job id (a requeued job is the same job), checked with
    ``squeue``; elsewhere rank 0 holds an ``flock`` on ``work/.lock`` while it lives."""
    import fcntl
    import os
    import socket
    import subprocess

    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 claims for the job
    job = os.environ.get("SLURM_JOB_ID")
    owner_file = work / OWNER
    if job and owner_file.is_file():
        try:
            other = str(json.loads(owner_file.read_text()).get("slurm_job_id") or "")
        except (OSError, json.JSONDecodeError):
            other = ""
        if other and other != job:
            try:
                state = subprocess.run(
                    ["squeue", "-h", "-j", other, "-o", "%T"], capture_output=True, text=True, timeout=30
                ).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                state = ""
            if state:
                raise DataError(
                    f"{work}: SLURM job {other} ({state.lower()}) still trains here; wait for it or "
                    f"`scancel {other}`, then rerun"
                )
    if str(work) in _HELD:  # this process already trains here (a rerun in one interpreter)
        return
    lock = open(work / ".lock", "a")  # noqa: SIM115 (held until training ends or the process does)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        held_by = owner_file.read_text().strip() if owner_file.is_file() else "another process"
        raise DataError(
            f"{work}: another trainer holds this folder ({held_by}); wait for it or stop it, then rerun"
        ) from None
    _HELD[str(work)] = lock
    atomic_write_json(owner_file, {"slurm_job_id": job, "host": socket.gethostname(), "pid": os.getpid()})


def last_checkpoint(checkpoints: Path) -> str | None:
    """The newest complete checkpoint: one killed while being written has no ``trainer_state.json``."""
    if not checkpoints.is_dir():
        return None
    done = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    done = [p for p in done if p.name.split("-")[-1].isdigit()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def finalize_output(output: str | Path, final: Path, config: dict[str, Any]) -> None:
    """Write the config into ``final`` (filled by every rank), move it to ``output`` and drop
    ``<output>.partial``."""
    with atomic_folder(output, staged=final) as folder:
        atomic_write_json(folder / CONFIG_NAME, jsonable(config))
    shutil.rmtree(work_dir(output), ignore_errors=True)
    release(work_dir(output))


def release(work: Path) -> None:
    """Let go of ``work``'s lock (its training is over, or the folder was deleted)."""
    lock = _HELD.pop(str(work), None)
    if lock is not None:
        lock.close()


def training_config(stage: str, stage_args: Any, args: TrainingArguments, **extra: Any) -> dict[str, Any]:
    """The resolved configuration written beside an artifact and checked on resume."""
    keep = (
        "max_steps num_train_epochs per_device_train_batch_size gradient_accumulation_steps learning_rate "
        "weight_decay warmup_steps lr_scheduler_type seed bf16 fp16 gradient_checkpointing deepspeed"
    ).split()
    train = {k: v for k, v in args.to_dict().items() if k in keep}
    return {
        "stage": stage,
        **dataclasses.asdict(stage_args),
        "training": train,
        **extra,
        "code_version": code_version(),
    }


class PartsLoggingTrainer(Trainer):
    """A Trainer that logs the averaged loss parts recorded by ``compute_loss`` beside ``loss``."""

    def record_parts(self, parts: dict[str, torch.Tensor]) -> None:
        sums = self.__dict__.setdefault("_part_sums", {})
        for name, value in parts.items():
            total, count = sums.get(name, (0.0, 0))
            sums[name] = (total + float(value.detach()), count + 1)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        sums = self.__dict__.get("_part_sums", {})
        if "loss" in logs and sums:
            logs.update({name: round(total / count, 6) for name, (total, count) in sums.items()})
            sums.clear()
        super().log(logs, *args, **kwargs)


def check_steps(args: TrainingArguments) -> None:
    """A step count that trains something: ``max_steps`` > 0, or -1 with ``num_train_epochs`` > 0
    (the Trainer takes ``--max_steps 0`` as "train the epochs" and ``--num_train_epochs 0`` as none)."""
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(
            f"--max_steps must be a positive number of steps, or -1 to train --num_train_epochs epochs; "
            f"got {args.max_steps}"
        )
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise ValueError(
            f"--num_train_epochs must be > 0 when --max_steps is -1 (its default); got {args.num_train_epochs}"
        )


def parse_stage_args(stage_class: type, argv: list[str] | None) -> tuple[Any, TrainingArguments]:
    """The stage's own dataclass and ``TrainingArguments`` from the command line. Unknown flags fail
    as argparse does; a bad value (a dataclass's ``__post_init__`` check, a step count that trains
    nothing) prints one ``error:`` line and exits with :data:`llara.io.BAD_INPUT`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = HfArgumentParser((stage_class, TrainingArguments))
    argv = cpu_argv(sys.argv[1:] if argv is None else list(argv))
    try:
        stage_args, training_args = parser.parse_args_into_dataclasses(args=argv)
        check_steps(training_args)
    except ValueError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(BAD_INPUT) from None
    return stage_args, training_args


def cpu_argv(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """``argv`` with ``--use_cpu`` added on a machine without CUDA when the stage runs as several
    processes (``WORLD_SIZE`` > 1: srun/submitit or torchrun ranks): a CPU job of the grid, as on
    the local SLURM cluster. Without it accelerate sets up no process group for the
    Trainer (world size 1 on every rank: no gradient sync, every rank saving as the main process),
    and under DeepSpeed, whose own comm layer counts every rank, the job stops at DeepSpeed's batch
    check ("... 4 != 4 * 1 * 2"); with it the ranks join one gloo group. A single process is left as
    it is (DeepSpeed's own discovery would then look for MPI)."""
    env = os.environ if env is None else env
    ranks = int(env.get("WORLD_SIZE") or 1)
    if ranks > 1 and "--use_cpu" not in argv and not torch.cuda.is_available():
        log.info("no CUDA, %d processes: --use_cpu added (gloo)", ranks)
        return [*argv, "--use_cpu"]
    return argv


def wrap_lora(
    model: Any,
    tokenizer: Any,
    task_type: str,
    r: int,
    alpha: int,
    dropout: float,
    targets: list[str],
    train_slot_embeddings: bool = False,
) -> Any:
    """LoRA adapters on the ``targets`` linear layers. With ``train_slot_embeddings`` the slot tokens
    ``<s1>``..``<s16>`` (when the tokenizer has them) also get trainable embedding rows (peft
    ``trainable_token_indices``); the official fine-tuning trains LoRA linear layers only."""
    from peft import LoraConfig, get_peft_model

    from llara.prompts import SLOT_TOKENS

    slots = [tokenizer.convert_tokens_to_ids(t) for t in SLOT_TOKENS if t in tokenizer.get_vocab()]
    config = LoraConfig(
        task_type=task_type,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        trainable_token_indices=(slots or None) if train_slot_embeddings else None,
    )
    return get_peft_model(model, config)


def lora_wrapper(
    task_type: str, *, r: int, alpha: int, dropout: float, targets: list[str], train_slot_embeddings: bool
) -> Callable[[Any], Any]:
    """The ``lora`` of :func:`run_stage`: a :class:`llara.model.LlaraModel` -> its stock module with
    LoRA adapters (:func:`wrap_lora`)."""

    def lora(llara: Any) -> Any:
        return wrap_lora(
            llara.model, llara.tokenizer, task_type, r, alpha, dropout, targets, train_slot_embeddings
        )

    return lora


# ---- the one driver of the two training stages ----------------------------------------------------
class LlaraTrainer(PartsLoggingTrainer):
    """A Trainer whose only change is ``compute_loss``: ``loss_fn(model, inputs)`` returns an output
    with ``loss`` and ``parts()`` (:class:`llara.model.AdaptOutput` / ``ContrastOutput``)."""

    def __init__(self, *args: Any, loss_fn: Callable[[Any, dict], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.loss_fn(model, inputs)
        self.record_parts(out.parts())
        return (out.loss, out) if return_outputs else out.loss


@dataclass
class StagePlan:
    """What a stage hands the driver: its data, collator, loss and extra config to record."""

    dataset: Any
    collator: Callable[[list], dict]
    loss_fn: Callable[[Any, dict], Any]
    callbacks: list = dataclasses.field(default_factory=list)
    record: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_stage(
    stage: str,
    args: Any,
    training_args: TrainingArguments,
    *,
    load: Callable[[TrainingArguments], Any],
    plan: Callable[[Any, TrainingArguments], StagePlan | None],
    lora: Callable[[Any], Any] | None = None,
    merge_lora: bool = False,
) -> Path:
    """arguments -> model -> data -> trainer -> ``OUT`` (weights, tokenizer, prompt layout, config).

    ``load`` returns a :class:`llara.model.LlaraModel`; ``plan`` returns the stage's data and loss, or
    None when there is nothing to train (the model is written as loaded); ``lora`` wraps the stock
    module. Training happens in ``OUT.partial`` and resumes from its last checkpoint. However it ends
    (done, saved at a signal: exit 75, or failed), the process group is left first
    (:func:`leave_process_group`)."""
    try:
        out = _run_stage(stage, args, training_args, load=load, plan=plan, lora=lora, merge_lora=merge_lora)
    except SystemExit as stopped:  # saved at a signal: every rank saved the same step and stops
        leave_process_group(stopped.__traceback__, together=stopped.code == PREEMPTED)
        raise
    except BaseException as failed:  # a peer may be gone: no collective before leaving
        leave_process_group(failed.__traceback__, together=False)
        raise
    leave_process_group(None, together=True)
    return out


def leave_process_group(tb: TracebackType | None, *, together: bool) -> None:
    """Leave the default process group, if any, while the interpreter is fully alive: a rank whose
    DDP wrapper and gloo work objects were still alive at its exit was seen to abort in teardown after
    its work was done ("terminate called without an active exception", SIGABRT), failing the job
    (torch's own analysis: pytorch/pytorch#179291). So the trainer is freed first (the locals of a
    failure's frames too, ``tb``), then, when every rank got here the same way (``together``: done, or
    saved at a signal), the ranks wait for each other (rank 0 may still be writing the model), and
    the group is destroyed. A failed rank does not wait: its peers may be gone."""
    if tb is not None:
        traceback.clear_frames(tb)
    gc.collect()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if together and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    gc.collect()


def _run_stage(
    stage: str,
    args: Any,
    training_args: TrainingArguments,
    *,
    load: Callable[[TrainingArguments], Any],
    plan: Callable[[Any, TrainingArguments], StagePlan | None],
    lora: Callable[[Any], Any] | None,
    merge_lora: bool,
) -> Path:
    output = Path(training_args.output_dir)
    training_args = resolve_precision(training_args, args.precision)
    config = training_config(stage, args, training_args)
    checkpoints = prepare_output(output, config)
    set_seed(training_args.seed)  # new slot-token rows are drawn when the embeddings are resized
    llara = load(training_args)
    final = work_dir(output) / "final"
    stage_plan = plan(llara, training_args)
    if stage_plan is None:
        llara.save_pretrained(final)
        finalize_output(output, final, {**config, "rows_used": 0})
        return output
    if lora is not None:
        llara.model = lora(llara)
    log.info(
        "%s: %d training rows; rank %d starts", stage, len(stage_plan.dataset), training_args.process_index
    )
    training_args = dataclasses.replace(
        training_args, output_dir=str(checkpoints), remove_unused_columns=False
    )
    trainer = LlaraTrainer(
        model=llara.model,
        args=training_args,
        train_dataset=stage_plan.dataset,
        data_collator=stage_plan.collator,
        processing_class=llara.tokenizer,
        callbacks=stage_plan.callbacks,
        loss_fn=stage_plan.loss_fn,
    )
    stop = SaveOnSignal()
    trainer.add_callback(stop)
    resume = last_checkpoint(checkpoints)
    if resume is not None:  # a requeued job (or a rerun) goes on from the step its last attempt saved
        log.info(
            "%s: resuming from %s (step %s)", stage, resume, Path(resume).name.removeprefix("checkpoint-")
        )
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        stop.restore()
    if stop.saved_step is not None:
        log.warning(
            "%s: signal %s: saved a checkpoint at step %d in %s; stopping for a requeue (exit %d)",
            stage,
            signal.Signals(stop.received).name if stop.received else "on another rank",
            stop.saved_step,
            checkpoints,
            PREEMPTED,
        )
        raise SystemExit(PREEMPTED)
    if trainer.state.global_step == 0:  # e.g. fewer rows than one batch with --dataloader_drop_last
        raise DataError(
            f"{output}: {stage} trained 0 steps on {len(stage_plan.dataset)} rows (per-device batch "
            f"{training_args.per_device_train_batch_size}); no model is written: give more rows, a "
            "smaller batch, or drop --dataloader_drop_last"
        )
    if lora is not None and merge_lora:
        trainer.model = trainer.model.merge_and_unload()  # downstream stages read a plain HF model
    trainer.save_model(str(final))  # all ranks take part (DeepSpeed gathers)
    if trainer.is_world_process_zero():
        llara.save_layout(final, home=output)
        state = trainer.state
        finalize_output(
            output,
            final,
            {
                **config,
                **stage_plan.record,
                "rows_used": len(stage_plan.dataset),
                "train_loss": result.training_loss,
                "global_step": state.global_step,
                "log_history": state.log_history,
            },
        )
    return output
