"""The released RepLLaMA (castorini/repllama-v1-7b-lora-passage: a LoRA adapter only, no tokenizer and
no base weights, on meta-llama/Llama-2-7b-hf) scored as config/released.yaml scores it.

A tiny Llama stands in for LLaMA-2-7B and a tiny LoRA adapter (random non-zero B weights, so the merge
changes the vectors) for RepLLaMA's, saved adapter-only with a hub id that does not exist as its base.
``python -m llara.encode --encoder hf --base-model BASE`` (a subprocess, offline) must give the vectors
of the model card's recipe: ``PeftModel.from_pretrained(base, adapter).merge_and_unload()``, the base's
tokenizer on ``f"query: {q}</s>"`` / ``f"passage: {title} {text}</s>"``, the last hidden state at that
last (EOS) token, L2-normalised. Then the bad inputs (no base, a base the adapter does not fit) and the
plan of config/released.yaml (both folders fetched, the entry encoded, searched and scored).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_bad_input, load_tokenizer, tiny_model
from transformers import AutoModel, LlamaConfig, LlamaForCausalLM

from llara.shards import load_embeddings, shard_paths

pytestmark = pytest.mark.extended  # seconds of subprocesses each: `make test-extended` (CI runs it)


REPO = Path(__file__).resolve().parents[1]
FAKE_BASE = "no-such-org/tiny-llama-2-base"  # what adapter_config.json names: never looked up
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DOCS = [
    ("Nile", "the river city was founded by the king"),
    ("Music school", " ".join(["music science history"] * 6)),  # no space at either end: see DOCS_NOTE
    ("Island", "a mountain island with its capital and language"),
    ("War", "the war was played and the team discovered it"),
    ("Church", "born in the church school of the city"),
]
# DOCS_NOTE: our passage text is (title + " " + text).strip() (llara.beir.join_title_text, BEIR's), the
# card's f"{title} {passage}": the same for a title and a text without spaces at its ends
QUERIES = ["where was the river city", "music school history", "the island capital"]


def save_base(path: Path, tok, **changes) -> Path:
    """A tiny Llama (or, with ``changes``, one whose shapes differ) + the tokenizer, as a HF folder."""
    if changes:
        torch.manual_seed(7)
        kw = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)  # fmt: skip
        LlamaForCausalLM(LlamaConfig(**{**kw, **changes})).save_pretrained(path)
    else:
        tiny_model("llama", vocab_size=len(tok), seed=4).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folders(tokenizer_dirs, tmp_path_factory) -> dict[str, Path]:
    """base: the tiny Llama; adapter: a LoRA adapter on its AutoModel (as Tevatron trains RepLLaMA and
    its card loads it), saved adapter-only, naming FAKE_BASE; beir: a tiny BEIR folder with titles."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("repllama-released")
    tok = load_tokenizer(tokenizer_dirs, "llama")
    base = save_base(root / "base", tok)
    net = AutoModel.from_pretrained(base)
    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="FEATURE_EXTRACTION"
    )
    peft_model = get_peft_model(net, lora)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # zero at init: the adapter would change nothing
                param.normal_(0.0, 0.5)
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = FAKE_BASE
    config_path.write_text(json.dumps(config, indent=2))
    assert not any(adapter.glob("tokenizer*")) and not any(adapter.glob("model*.safetensors"))
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": t, "text": x}) + "\n" for i, (t, x) in enumerate(DOCS))
    )
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES))
    )
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(QUERIES)))
    )
    return {
        "root": root,
        "base": base,
        "adapter": adapter,
        "beir": beir,
        "wide": save_base(root / "wide-base", tok, hidden_size=48, intermediate_size=96),
        "shallow": save_base(root / "shallow-base", tok, num_hidden_layers=1),
    }


def start_encode(*args) -> subprocess.Popen:
    """``python -m llara.encode ARGS`` in a fresh interpreter, offline (started, not waited for)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "llara.encode", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def repllama_args(folders, what: str, output: Path, *, base: Path | None) -> list:
    """The arguments config/released.yaml gives llara.encode for repllama-released (common.smk's
    encoder_args), lengths shrunk to the tiny model, vectors stored as float32."""
    return [
        "--encoder", "hf", "--model", folders["adapter"], *(["--base-model", base] if base else []),
        "--beir-dir", folders["beir"], "--pooling", "last", "--append-eos", "--query-prefix", "query: ",
        "--passage-prefix", "passage: ", "--max-length", "256", "--query-max-length", "64", "--what", what,
        "--output", output, "--store-dtype", "float32", "--dtype", "fp32", "--device", "cpu", "--no-progress",
    ]  # fmt: skip


def card_rows(tok, texts: list[str]) -> list[list[int]]:
    """The card's input ids: the text with "</s>" written after it, tokenized as the tokenizer does."""
    rows = [tok(t + "</s>")["input_ids"] for t in texts]
    # the tiny tokenizer reads "</s>" as its EOS token, as LLaMA-2's does (else the card's recipe and
    # "append the EOS id" would not be the same rows)
    assert all(r[-1] == tok.eos_token_id and r.count(tok.eos_token_id) == 1 for r in rows), rows
    return rows


@torch.inference_mode()
def card_vectors(model, rows: list[list[int]]) -> np.ndarray:
    """Each row alone (no padding): the last hidden state at its last token, L2-normalised."""
    out = [model(input_ids=torch.tensor([r])).last_hidden_state[0, -1] for r in rows]
    return F.normalize(torch.stack(out).float(), dim=-1).numpy()


def test_encode_cli_merges_the_adapter_as_the_model_card_does(folders, tokenizer_dirs):
    from peft import PeftModel

    out = folders["root"] / "encoded"
    runs = {
        w: start_encode(*repllama_args(folders, w, out, base=folders["base"])) for w in ("corpus", "queries")
    }
    done = {w: finish(p) for w, p in runs.items()}  # both CLIs at once
    for what, r in done.items():
        assert r.returncode == 0, (what, r.stderr[-3000:])

    tok = load_tokenizer(tokenizer_dirs, "llama")  # the base model's: the adapter has none
    card = PeftModel.from_pretrained(AutoModel.from_pretrained(folders["base"]), folders["adapter"])
    card = card.merge_and_unload().eval()
    passages = card_rows(tok, [f"passage: {title} {text}" for title, text in DOCS])
    queries = card_rows(tok, [f"query: {q}" for q in QUERIES])
    assert max(map(len, passages)) < 256 and max(map(len, queries)) < 64  # nothing truncated

    ids, ours = load_embeddings(out, "corpus")
    assert ids == [f"d{i}" for i in range(len(DOCS))]
    np.testing.assert_allclose(ours, card_vectors(card, passages), atol=1e-5)
    qids, ours_q = load_embeddings(out, "queries")
    assert qids == [f"q{i}" for i in range(len(QUERIES))]
    np.testing.assert_allclose(ours_q, card_vectors(card, queries), atol=1e-5)

    # the merge matters: the base model alone gives other vectors
    plain = card_vectors(AutoModel.from_pretrained(folders["base"]).eval(), passages)
    assert np.abs(plain - ours).max() > 0.05
    meta = json.loads(shard_paths(out, "corpus", 0, 1)["meta"].read_text())
    assert meta["config"]["base_model"] == str(folders["base"])
    assert meta["encoder"]["base_model"] == str(folders["base"]) and meta["encoder"]["append_eos"] is True


def test_an_adapter_needs_a_base_that_fits_it(folders):
    out = folders["root"] / "bad"
    adapter = folders["adapter"]
    full = repllama_args(folders, "queries", out, base=folders["base"])
    full[full.index("--model") + 1] = folders["base"]  # a full model, with a base model all the same
    cases = {
        "no base": (repllama_args(folders, "queries", out, base=None), (adapter, "--base-model", FAKE_BASE)),
        "other widths": (
            repllama_args(folders, "queries", out, base=folders["wide"]),
            (adapter, folders["wide"], "does not fit", "--base-model"),
        ),
        "fewer layers": (
            repllama_args(folders, "queries", out, base=folders["shallow"]),
            (adapter, folders["shallow"], "does not fit", "have no layer there"),
        ),
        "a base for a full model": (full, (folders["base"], "not an adapter folder", "drop --base-model")),
    }
    runs = {name: start_encode(*argv) for name, (argv, _) in cases.items()}
    for name, process in runs.items():
        done = finish(process)
        line = assert_bad_input(done, *cases[name][1])
        assert len(line) < 600, (name, line)
    assert not out.exists()  # nothing written


def test_released_config_plans_the_repllama_entry(tmp_path):
    """config/released.yaml: the adapter and its base fetched on the login node, the entry encoded by
    the hf encoder with the base folder, searched and scored as a fine-tuned checkpoint row."""
    from test_workflow import shell_commands, snakemake

    r = snakemake(tmp_path, REPO / "config" / "released.yaml", "-n", "-p")
    commands = shell_commands(r)
    fetches = [c for c in commands if "llara.fetch " in c]
    adapter, base = "castorini--repllama-v1-7b-lora-passage/main", "meta-llama--Llama-2-7b-hf/main"
    for repo, folder in (
        ("castorini/repllama-v1-7b-lora-passage", adapter),
        ("meta-llama/Llama-2-7b-hf", base),
    ):
        assert any(
            f"--repo-id {repo} --revision main --output resources/models/{folder} " in c for c in fetches
        )
    system = "checkpoint/repllama-released/finetuned/file"
    datasets = ("trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020", "quora",
                "dbpedia-entity", "scidocs", "fever", "climate-fever", "scifact")  # fmt: skip
    encodes = [c for c in commands if "llara.encode " in c and f"results/encode/{system}/" in c]
    assert {d for d in datasets if any(f"/{system}/{d}/" in c for c in encodes)} == set(datasets)
    assert encodes and all(
        f"--encoder hf --model resources/models/{adapter} --base-model resources/models/{base} " in c
        and "--pooling last --append-eos --query-prefix 'query: ' --passage-prefix 'passage: ' " in c
        and "--max-length 512 --query-max-length 64 " in c
        for c in encodes
    )
    searches = [c for c in commands if "llara.search " in c and f"results/encode/{system}/" in c]
    assert len(searches) == len(datasets)
    (score,) = [c for c in commands if "llara.score " in c and f"{system}/scifact" in c]
    assert "--model castorini/repllama-v1-7b-lora-passage " in score
    (tables,) = [c for c in commands if "llara.tables " in c]
    assert all(f"results/metrics/{system}/{d}/test.json" in tables for d in datasets)


def test_plain_retriever_keys_need_a_plain_pooling():
    import copy

    import yaml

    from llara import gridconfig

    cfg = yaml.safe_load((REPO / "config" / "released.yaml").read_text())
    gridconfig.validate(copy.deepcopy(cfg))
    assert gridconfig.check_config(gridconfig.validate(copy.deepcopy(cfg))) == []
    bad = copy.deepcopy(cfg)
    del bad["checkpoints"]["repllama-released"]["pooling"]  # slots: a LLaRA checkpoint
    with pytest.raises(
        gridconfig.ConfigError, match=r"checkpoints\.repllama-released\.query_prefix .*pooling"
    ):
        gridconfig.check_config(gridconfig.validate(bad))
    bad = copy.deepcopy(cfg)
    del bad["checkpoints"]["repllama-released"]["base_model"]
    bad["checkpoints"]["repllama-released"]["base_revision"] = "abc"
    with pytest.raises(gridconfig.ConfigError, match="base_revision is given without base_model"):
        gridconfig.check_config(gridconfig.validate(bad))
