"""llara.basemodel: a tiny run that loads offline, BOS behaviour, learning, determinism, bad input."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from llara.basemodel import STATS_FILE, ModelShape, TrainSettings, build_base_model, lr_at, main  # noqa: E402
from llara.io import DataError  # noqa: E402
from llara.synthetic import generate  # noqa: E402

SHAPE = ModelShape(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
SETTINGS = TrainSettings(block_size=32, batch_size=8, max_steps=60, lr=1e-2, log_every=10, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: several times faster than two on shared, busy cores; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bm-corpus")
    generate(
        0,
        root / "wiki.parquet",
        root / "beir",
        n_articles=80,
        n_corpus_articles=10,
        n_test_queries=5,
        n_train_queries=5,
    )
    return root / "wiki.parquet"


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bm") / "model"
    return out, build_base_model(
        corpus, out, vocab_size=400, shape=SHAPE, settings=SETTINGS, eval_fraction=0.1
    )


def test_folder_loads_offline_with_auto_classes(run):
    out, stats = run
    assert not out.with_name("model.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tok) == stats["tokenizer"]["vocab_size"]
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert not model.config.tie_word_embeddings
    saved = json.loads((out / STATS_FILE).read_text())
    assert saved["args"]["model"]["hidden_size"] == 32 and saved["args"]["train"]["max_steps"] == 60
    assert saved["steps_done"] == 60 and saved["stopped_by"] == "max_steps"


def test_tokenizer_is_llama_like(run):
    tok = AutoTokenizer.from_pretrained(run[0])
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.pad_token is None  # like LLaMA-2; the method code picks its pad token
    text = 'The composer moved to "Tarnby" in 1834.'
    with_special = tok(text)["input_ids"]
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert with_special == [tok.bos_token_id, *plain]  # BOS added, no EOS
    assert tok.decode(plain) == text  # byte-level: lossless
    assert tok.unk_token_id not in tok("naïve — 数学", add_special_tokens=False)["input_ids"]


def test_loss_and_perplexity_go_down(run):
    stats = run[1]
    losses = [entry["loss"] for entry in stats["loss_log"]]
    assert [e["step"] for e in stats["loss_log"]] == [0, 10, 20, 30, 40, 50, 59]
    assert losses[0] == pytest.approx(math.log(stats["tokenizer"]["vocab_size"]), abs=0.1)  # uniform at first
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 1.0
    assert stats["perplexity"]["after"] < 0.25 * stats["perplexity"]["before"]


def test_same_seed_same_final_loss(corpus, run, tmp_path):
    again = build_base_model(corpus, tmp_path / "again", 400, SHAPE, SETTINGS, eval_fraction=0.1)
    assert abs(again["final_loss"] - run[1]["final_loss"]) < 1e-6
    assert again["perplexity"] == pytest.approx(run[1]["perplexity"], rel=1e-6)


def test_lr_schedule_warms_up_then_decays():
    s = TrainSettings(max_steps=100, lr=1.0, warmup_ratio=0.1)
    lrs = [lr_at(i, s) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] >= 0.1


def test_time_cap_stops_early(corpus, tmp_path):
    capped = TrainSettings(block_size=32, batch_size=8, max_steps=10_000, max_seconds=0.5, log_every=1000)
    stats = build_base_model(corpus, tmp_path / "capped", 400, SHAPE, capped, eval_fraction=0.1)
    assert stats["stopped_by"] == "max_seconds" and 0 < stats["steps_done"] < 10_000


def test_bad_inputs_fail_clearly(tmp_path, capsys):
    with pytest.raises(DataError, match="nope.parquet: not found"):
        build_base_model(tmp_path / "nope.parquet", tmp_path / "m", 400, SHAPE, SETTINGS)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "1", "url": "", "title": "", "text": ""}] * 3), empty)
    with pytest.raises(DataError, match="empty.parquet: no article has any text"):
        build_base_model(empty, tmp_path / "m", 400, SHAPE, SETTINGS)
    nocols = tmp_path / "nocols.parquet"
    pq.write_table(pa.Table.from_pylist([{"body": "x"}]), nocols)
    with pytest.raises(
        DataError, match=r"missing column\(s\) \['title', 'text'\]; columns present: \['body'\]"
    ):
        build_base_model(nocols, tmp_path / "m", 400, SHAPE, SETTINGS)
    tiny = tmp_path / "tiny.parquet"
    pq.write_table(pa.Table.from_pylist([{"title": "A", "text": "Short text."}] * 4), tiny)
    with pytest.raises(DataError, match="less than one block"):
        build_base_model(tiny, tmp_path / "m", 400, SHAPE, SETTINGS)
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()
    assert main(["--corpus", str(tmp_path / "nope.parquet"), "--output", str(tmp_path / "m")]) == 2
    assert "nope.parquet: not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="vocab_size must be >= 300"):
        build_base_model(tiny, tmp_path / "m", 100, SHAPE, SETTINGS)


def test_cli_small_run(corpus, tmp_path, capsys):
    out = tmp_path / "cli-model"
    argv = ["--corpus", str(corpus), "--output", str(out), "--vocab-size", "400", "--hidden-size", "32"]
    argv += ["--layers", "1", "--heads", "2", "--intermediate-size", "64", "--block-size", "32"]
    argv += ["--batch-size", "4", "--max-steps", "5", "--eval-fraction", "0.1", "--max-positions", "64"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["steps_done"] == 5
        and (out / "model.safetensors").exists()
        and (out / "tokenizer.json").exists()
    )
