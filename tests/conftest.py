"""Shared fixtures: tiny tokenizers and decoder models built offline, in code (no hub)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import (  # noqa: E402
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaTokenizer,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
WORDS = (
    "the a of and to in is was for on with as by at from that which this it its their "
    "river city music science history king war church school language island mountain team "
    "summarize above passage within eight words predict following next original sentence input "
    "born founded located known built played wrote studied discovered population capital"
).split()


def corpus_lines(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 30))]
        lines.append(f'"{" ".join(words).capitalize()}", {rng.choice(WORDS)}: {rng.randint(0, 2000)}. ?!')
    return lines


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"{path} is missing: put the project's shared/ folder beside the repository to run this test"
        )
    return path


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    """A Llama-style (SentencePiece-like, BOS) and a Qwen2-style (byte-level BPE, no BOS) tokenizer."""
    lines = corpus_lines()
    out = {}
    llama = LlamaTokenizer().train_new_from_iterator(lines, vocab_size=400)
    llama.add_bos_token = True
    out["llama"] = tmp_path_factory.mktemp("tok-llama")
    llama.save_pretrained(out["llama"])
    qwen = Qwen2Tokenizer().train_new_from_iterator(lines, vocab_size=600)
    out["qwen2"] = tmp_path_factory.mktemp("tok-qwen2")
    qwen.save_pretrained(out["qwen2"])
    return out


@pytest.fixture(params=["llama", "qwen2"])
def arch(request) -> str:
    return request.param


def load_tokenizer(tokenizer_dirs: dict[str, Path], arch: str):
    return AutoTokenizer.from_pretrained(tokenizer_dirs[arch])


def tiny_model(arch: str, vocab_size: int, attn: str = "sdpa", seed: int = 0, tie: bool = False):
    """A tiny random decoder (vocab as given, hidden 32, 2 layers, 4 heads), fp32, eval mode."""
    torch.manual_seed(seed)
    kw = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        attn_implementation=attn,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=None, **kw))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**kw))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dirs, tmp_path_factory) -> Path:
    """A tiny Llama-style causal LM + tokenizer saved as a Hugging Face folder (no slot tokens yet)."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = load_tokenizer(tokenizer_dirs, "llama")
    tiny_model("llama", vocab_size=len(tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def pretrain_rows(n: int = 8, seed: int = 0) -> list[dict[str, str]]:
    lines = corpus_lines(3 * n + 1, seed)
    return [
        {"input": lines[i], "output_summarize": lines[i], "output_predict": lines[i + 1]} for i in range(n)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def slotted_model_dir(tokenizer_dirs, tmp_path_factory) -> Path:
    """The tiny Llama laid out like a released BAAI LLARA checkpoint: <s1>..<s16> in the tokenizer,
    embeddings resized, no llara_prompt.json (history unknown)."""
    from llara.prompts import SLOT_TOKENS

    out = tmp_path_factory.mktemp("tiny-llama-slots")
    tok = load_tokenizer(tokenizer_dirs, "llama")
    tok.add_special_tokens({"additional_special_tokens": list(SLOT_TOKENS)})
    tiny_model("llama", vocab_size=len(tok), seed=1).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ---- stage CLIs run as the workflow runs them -------------------------------------------------------
def run_cli(stage: str, *args, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """``python -m llara.<stage> ARGS`` in a fresh interpreter (offline), its output captured."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", f"llara.{stage}", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False, cwd=cwd)


def assert_bad_input(done: subprocess.CompletedProcess, *names) -> str:
    """The CLI exited with status 2 (bad input), no traceback, one ``error:`` line naming ``names``."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]
