"""RepLLaMA (Ma et al. 2023, arXiv 2310.08319) as a prompt layout of the LLaRA model code.

``"query: " + q`` / ``"passage: " + p`` tokenized as the tokenizer does (BOS for Llama), the text cut so
that the EOS fits, EOS appended, the L2-normalised final hidden state at that EOS. Checked against
computations by hand on tiny models (the EOS row found by hand, either padding side), through the
contrastive loss, and through the fine-tuning and encoding CLIs from a plain base model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_tokenizer, run_cli, shared_path, tiny_model, write_jsonl
from test_encode import texts_of
from transformers import AutoModel, AutoTokenizer

from llara.layout import LAYOUT_FILE, PRESETS, PromptLayout, layout_flags
from llara.model import LlaraModel, adds_eos, plain_rows
from llara.pooling import pool_hidden
from llara.prompts import SLOT_TOKENS

QUERY, PASSAGE = "query: ", "passage: "
TEXTS = ["the river city", "a", "music school " * 40, "king of the island was born in the war"]


@pytest.fixture
def base_dir(tokenizer_dirs, arch, tmp_path):
    """A plain tiny decoder (Llama-style with BOS, or Qwen2-style without): no slot tokens, no layout."""
    tok = load_tokenizer(tokenizer_dirs, arch)
    path = tmp_path / f"base-{arch}"
    tiny_model(arch, vocab_size=len(tok), seed=3).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def repllama_dir(base, query_max_length=12, passage_max_length=20):
    PromptLayout.repllama(query_max_length=query_max_length, passage_max_length=passage_max_length).save(base)
    return base


def hand_rows(tok, texts, prefix, max_length):
    """RepLLaMA's rows written out: the tokenizer's own tokens of prefix + text (BOS for Llama), cut to
    ``max_length - 1``, then the EOS."""
    rows = []
    for t in texts:
        ids = tok(prefix + t)["input_ids"][: max_length - 1]  # right truncation keeps BOS and prefix
        rows.append(ids + [tok.eos_token_id])
    return rows


def hand_embeddings(model, rows, side):
    """The final hidden state at each row's EOS, found by hand, L2-normalised: one padded batch
    (``side`` padding, positions counted from each row's first token) or each row alone (``None``)."""
    if side is None:
        states = [model(input_ids=torch.tensor([r])).last_hidden_state[0, -1] for r in rows]
        return F.normalize(torch.stack(states), dim=-1)
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    eos_col = []
    for i, r in enumerate(rows):
        start = width - len(r) if side == "left" else 0
        ids[i, start : start + len(r)] = torch.tensor(r)
        mask[i, start : start + len(r)] = 1
        eos_col.append(start + len(r) - 1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # 0 at each row's first real token
    hidden = model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    return F.normalize(hidden[torch.arange(len(rows)), torch.tensor(eos_col)], dim=-1)


# ---- the layout file --------------------------------------------------------------------------------
def test_old_layout_files_load_exactly_as_before(tmp_path):
    old = {
        "style": "paper",
        "query_prompt": "ebae",
        "passage_prompt": "ebar",
        "query_max_length": 32,
        "passage_max_length": 48,
        "trained_prompts": ["ebae", "ebar"],
    }
    (tmp_path / LAYOUT_FILE).write_text(json.dumps(old))
    layout = PromptLayout.read(tmp_path)
    assert layout == PromptLayout("paper", "ebae", "ebar", 32, 48, ("ebae", "ebar"))
    assert (layout.pooling, layout.query_prefix, layout.passage_prefix, layout.append_eos) == (
        "slots",
        "",
        "",
        False,
    )
    assert layout.uses_slots and layout.prompt_for("query") == "ebae" and layout.n_slots == 1


def test_repllama_layout_round_trips_under_its_json_names(tmp_path):
    layout = PromptLayout.repllama(query_max_length=32, passage_max_length=156)
    layout.save(tmp_path)
    saved = json.loads((tmp_path / LAYOUT_FILE).read_text())
    assert {k: saved[k] for k in ("pooling", "query_prefix", "passage_prefix", "append_eos")} == {
        "pooling": "last",
        "query_prefix": QUERY,
        "passage_prefix": PASSAGE,
        "append_eos": True,
    }
    assert PromptLayout.read(tmp_path) == layout
    assert dataclasses.replace(PromptLayout(), **PRESETS["repllama"]) == PromptLayout.repllama()
    # without slots, prompts are roles and the slots' history does not matter
    assert (layout.prompt_for("query"), layout.prompt_for("passage")) == ("query", "passage")
    assert (layout.prefix_for("query"), layout.prefix_for("passage")) == (QUERY, PASSAGE)
    trained = dataclasses.replace(layout, trained_prompts=("ebae",))
    trained.check_trained("ckpt")  # an ebae-only history: no complaint, there are no slots to use
    settings = layout.encoder_settings()  # what the shard metas of an encoding record
    assert settings == {
        "prompt_style": None,  # no LLaRA prompt: scoring records none, as for a plain encoder
        "query_prompt": None,
        "passage_prompt": None,
        "query_max_length": 32,
        "passage_max_length": 156,
        "pooling": "last",
        "query_prefix": QUERY,
        "passage_prefix": PASSAGE,
        "append_eos": True,
    }
    assert PromptLayout().encoder_settings()["prompt_style"] == "released"


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"append_eos": True}, "query_prefix, passage_prefix and append_eos need pooling last or mean"),
        ({"query_prefix": "q: "}, "query_prefix, passage_prefix and append_eos need pooling last or mean"),
        ({"pooling": "cls"}, "unknown pooling 'cls'; valid: slots, last, mean"),
        ({"pooling": "last", "query_prefix": 3}, "query_prefix must be a string"),
        ({"pooling": "last", "append_eos": "yes"}, "append_eos must be true or false"),
    ],
)
def test_bad_pooling_fields_are_refused(tmp_path, fields, match):
    with pytest.raises(ValueError, match=match):
        PromptLayout(**fields)
    (tmp_path / LAYOUT_FILE).write_text(json.dumps(fields))
    with pytest.raises(ValueError, match=f"{LAYOUT_FILE}: .*{match}"):  # a DataError naming the file
        PromptLayout.read(tmp_path)


def test_preset_then_fields_override_the_checkpoints_layout_with_warnings(tmp_path, caplog):
    PromptLayout(trained_prompts=("ebae", "ebar")).save(tmp_path)
    args = argparse.Namespace(layout_preset="repllama", query_prefix="question: ", pooling=None)
    flags = layout_flags(args)
    assert (
        flags["pooling"] == "last" and flags["query_prefix"] == "question: " and flags["append_eos"] is True
    )
    with caplog.at_level(logging.WARNING, logger="llara.layout"):
        layout = PromptLayout.resolve(tmp_path, **flags)
    assert (layout.pooling, layout.query_prefix, layout.passage_prefix) == ("last", "question: ", PASSAGE)
    assert "pooling='slots'; overridden with 'last'" in caplog.text
    assert "pooling" not in layout_flags(argparse.Namespace())  # no flag: the checkpoint's
    back = PromptLayout.resolve(tmp_path, **layout_flags(argparse.Namespace(layout_preset="llara")))
    assert back == PromptLayout(trained_prompts=("ebae", "ebar"))


# ---- rows and embeddings ----------------------------------------------------------------------------
def test_loading_a_plain_base_adds_no_slot_tokens(base_dir, arch):
    tok = AutoTokenizer.from_pretrained(base_dir)
    rows_before = AutoModel.from_pretrained(base_dir).get_input_embeddings().weight.shape[0]
    model = LlaraModel.from_pretrained(repllama_dir(base_dir))
    assert len(model.tokenizer) == len(tok) and not any(t in model.tokenizer.get_vocab() for t in SLOT_TOKENS)
    assert model.model.get_input_embeddings().weight.shape[0] == rows_before
    assert model.prompter is None and model.tokenizer.pad_token is not None


def test_rows_are_prefix_text_eos_and_truncation_keeps_the_eos(base_dir, arch):
    model = LlaraModel.from_pretrained(repllama_dir(base_dir))
    tok, eos = AutoTokenizer.from_pretrained(base_dir), model.tokenizer.eos_token_id
    batch = model.prompt_batch(TEXTS, "query", 12)
    rows = [r[m.bool()].tolist() for r, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    assert rows == hand_rows(tok, TEXTS, QUERY, 12)
    assert all(r[-1] == eos for r in rows) and len(rows[2]) == 12  # the long text is cut, not the EOS
    bos = [tok.bos_token_id] if arch == "llama" else []
    assert rows[0] == [*bos, *tok(QUERY + TEXTS[0], add_special_tokens=False)["input_ids"], eos]
    assert batch["attention_mask"][:, -1].all()  # left padded: every row ends in the last column
    passages = model.prompt_batch(TEXTS, "passage", 20)
    assert passages["input_ids"][0, -1] == eos and passages["input_ids"].shape[1] == 20
    with pytest.raises(ValueError, match="embeds roles \\(query, passage\\), not prompt 'ebae'"):
        model.prompt_batch(TEXTS, "ebae", 12)
    with pytest.raises(ValueError, match="leaves no room for text before the EOS"):
        model.prompt_batch(TEXTS, "query", 1)


@pytest.mark.parametrize("side", [None, "left", "right"])
def test_embedding_is_the_normalised_state_at_the_eos(base_dir, arch, side):
    model = LlaraModel.from_pretrained(repllama_dir(base_dir))
    plain = AutoModel.from_pretrained(base_dir).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    with torch.no_grad():
        for role, prefix, length in (("query", QUERY, 12), ("passage", PASSAGE, 20)):
            want = hand_embeddings(plain, hand_rows(tok, TEXTS, prefix, length), side)
            torch.testing.assert_close(model.encode(TEXTS, role, batch_size=3), want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(model.embed_texts(TEXTS, role, length), want, atol=1e-5, rtol=1e-4)
    q, p = model.encode(TEXTS[:1], "query"), model.encode(TEXTS[:1], "passage")
    assert not torch.allclose(q, p, atol=1e-4)  # the prefixes differ


def test_llara_encoder_gives_the_hf_encoders_repllama_vectors(base_dir, arch):
    """The LLaRA encoder on a RepLLaMA checkpoint = the plain encoder with last-token pooling, the EOS
    and the same prefixes (two implementations of Tevatron's recipe)."""
    from llara.encode import HFEncoder, LlaraEncoder

    ours = LlaraEncoder(repllama_dir(base_dir, 12, 20), device="cpu", progress=False, batch_size=3)
    theirs = HFEncoder(
        base_dir, pooling="last", max_length=20, query_max_length=12, query_prefix=QUERY,
        passage_prefix=PASSAGE, device="cpu", progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(ours.encode_queries(TEXTS), theirs.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(ours.encode_corpus(TEXTS), theirs.encode_corpus(TEXTS), atol=1e-5)


def test_a_tokenizer_that_ends_texts_with_eos_itself_gets_no_second(base_dir, arch):
    from llara.st import eos_tokenizer

    tok = LlaraModel.from_pretrained(repllama_dir(base_dir)).tokenizer
    own = eos_tokenizer(tok)
    assert adds_eos(own) and not adds_eos(tok)
    assert plain_rows(own, TEXTS, 12, True) == plain_rows(tok, TEXTS, 12, True)
    assert plain_rows(tok, TEXTS, 12, False) == tok(TEXTS, truncation=True, max_length=12)["input_ids"]


def test_llama2_tokenizer_made_to_end_with_eos_keeps_its_bos_after_saving(tmp_path):
    """The real LLaMA-2 SentencePiece tokenizer (the official fixtures'): BOS first, EOS last, truncation
    keeps both, and so after save + reload (what a stock sentence-transformers folder loads)."""
    from llara.st import eos_tokenizer

    tok = AutoTokenizer.from_pretrained(shared_path("fixtures", "official-llara", "tokenizer"))
    eos_tokenizer(tok).save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    texts = [QUERY + t for t in TEXTS]
    rows = again(texts, truncation=True, max_length=12)["input_ids"]
    assert rows[0] == [
        tok.bos_token_id,
        *tok(texts[0], add_special_tokens=False)["input_ids"],
        tok.eos_token_id,
    ]
    assert len(rows[2]) == 12 and rows[2][0] == tok.bos_token_id and rows[2][-1] == tok.eos_token_id
    assert rows == plain_rows(tok, texts, 12, True)


# ---- training ---------------------------------------------------------------------------------------
def test_contrastive_loss_is_infonce_over_eos_states(base_dir, arch):
    from llara.finetune import PairCollator

    model = LlaraModel.from_pretrained(repllama_dir(base_dir))
    items = [
        {"query": "where is the river city", "passages": ["the river city", "a king", "music school"]},
        {"query": "who was king", "passages": ["the king of the island", "a river", "the war"]},
    ]
    batch = PairCollator(model)(items)
    out = model.contrastive_loss(batch["queries"], batch["passages"], temperature=0.05, group_size=3)

    def states(b):
        hidden = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             position_ids=b["position_ids"]).last_hidden_state  # fmt: skip
        return pool_hidden(hidden, b["attention_mask"], "last")

    q, p = states(batch["queries"]), states(batch["passages"])  # (2, H), (6, H)
    tok = AutoTokenizer.from_pretrained(base_dir)
    rows = hand_rows(tok, [x["query"] for x in items], QUERY, 12)
    torch.testing.assert_close(
        q, hand_embeddings(AutoModel.from_pretrained(base_dir), rows, None), atol=1e-5, rtol=1e-4
    )
    scores = q @ p.T / 0.05  # (2, 6): each query against every passage of the batch
    want = F.cross_entropy(scores, torch.tensor([0, 3]))  # the positive opens each group of 3
    torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert model.model.get_input_embeddings().weight.grad is not None


def test_adaptation_refuses_a_layout_without_slots(base_dir, arch):
    model = LlaraModel.from_pretrained(repllama_dir(base_dir))
    row = {"input": "the river city", "output_summarize": "the river city", "output_predict": "a king"}
    with pytest.raises(ValueError, match="adaptation trains the slot tokens.*pools 'last'"):
        model.adaptation_batch([row], "ebae", max_length=32, target_max_length=32)


FT_ROWS = [
    {
        "query": f"where is the {t}",
        "pos": [f"the {t} was founded near the river"],
        "neg": [f"the {t} played music"],
    }
    for t in ("river city", "music school", "king war", "island mountain")
]
FT_ARGS = [
    "--per_device_train_batch_size", "2", "--group_size", "2", "--max_steps", "2",
    "--query_max_length", "12", "--passage_max_length", "20", "--learning_rate", "1e-3",
    "--lora_r", "4", "--lora_alpha", "8", "--use_cpu", "--seed", "0", "--report_to", "none",
    "--save_strategy", "no", "--logging_steps", "1",
]  # fmt: skip


def test_finetune_flags_give_the_presets_layout(tiny_model_dir, tmp_path):
    """From a plain base (no llara_prompt.json, no slot tokens): the fields one by one give what
    ``--layout_preset repllama`` gives, written into the output; LoRA as for LLaRA."""
    from llara.finetune import main

    train = write_jsonl(tmp_path / "ft.jsonl", FT_ROWS)
    common = ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(train), *FT_ARGS]
    fields = [
        "--pooling",
        "last",
        "--query_prefix",
        QUERY,
        "--passage_prefix",
        PASSAGE,
        "--append_eos",
        "true",
    ]
    assert main([*common, "--output_dir", str(tmp_path / "a"), *fields]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "b"), "--layout_preset", "repllama"]) == 0
    layout = PromptLayout.read(tmp_path / "a")
    assert (
        layout
        == PromptLayout.read(tmp_path / "b")
        == PromptLayout.repllama(query_max_length=12, passage_max_length=20)
    )
    assert (tmp_path / "a" / "adapter_config.json").exists()
    cfg = json.loads((tmp_path / "a" / "llara_config.json").read_text())
    assert cfg["layout"]["pooling"] == "last" and cfg["global_step"] == 2
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert not any(t in tok.get_vocab() for t in SLOT_TOKENS)


def test_finetune_refuses_an_eos_after_slots(tiny_model_dir, tmp_path, capsys):
    from llara.finetune import main

    args = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--train_file",
        "x.jsonl",
        "--output_dir",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--pooling", "slots", "--append_eos", "true"])
    assert exit_.value.code == 2
    assert "error: --append_eos need --pooling last or mean" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--layout_preset", "tevatron"])
    assert "unknown --layout_preset 'tevatron'; valid: llara, repllama" in capsys.readouterr().err


@pytest.mark.slow  # two subprocesses, ~30 s: `make test-slow` (CI when time allows)
def test_finetune_then_encode_clis_from_a_plain_base(tiny_model_dir, tmp_path):
    """``python -m llara.finetune --layout_preset repllama`` on a plain base, then ``python -m llara.encode
    --encoder llara`` with no layout flag: the vectors are the merged model's EOS states by hand."""
    from peft import PeftModel

    from llara.beir import join_title_text
    from llara.shards import load_embeddings

    train = write_jsonl(tmp_path / "ft.jsonl", FT_ROWS)
    out = tmp_path / "repllama"
    done = run_cli(
        "finetune", "--model_name_or_path", tiny_model_dir, "--train_file", train, "--output_dir", out,
        *FT_ARGS, "--layout_preset", "repllama",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    layout = json.loads((out / LAYOUT_FILE).read_text())
    assert (layout["pooling"], layout["query_prefix"], layout["append_eos"]) == ("last", QUERY, True)

    beir_dir = tmp_path / "beir"
    (beir_dir / "qrels").mkdir(parents=True)
    docs = [
        {"_id": f"d{i}", "title": f"title {i}" if i % 2 else "", "text": t}
        for i, t in enumerate(texts_of(9, 5))
    ]
    (beir_dir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (beir_dir / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "where is the river"}) + "\n")
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\n")
    enc = tmp_path / "enc"
    done = run_cli(
        "encode", "--encoder", "llara", "--model", out, "--beir-dir", beir_dir, "--what", "corpus",
        "--output", enc, "--device", "cpu", "--no-progress", "--store-dtype", "float32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ids, vecs = load_embeddings(enc, "corpus")

    assert ids == [d["_id"] for d in docs]
    texts = [join_title_text(d["title"], d["text"]) for d in docs]  # "title text", BEIR's join
    merged = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), out).merge_and_unload()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        want = hand_embeddings(merged.eval(), hand_rows(tok, texts, PASSAGE, 20), None)
    np.testing.assert_allclose(vecs, want.numpy(), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # and the adapter took part: the base model alone gives other vectors
        untuned = hand_embeddings(
            AutoModel.from_pretrained(tiny_model_dir).eval(), hand_rows(tok, texts, PASSAGE, 20), None
        )
    assert not np.allclose(vecs, untuned.numpy(), atol=1e-4)


def test_hf_encoder_appends_no_second_eos_to_a_tokenizer_that_ends_with_one(base_dir, arch):
    """HFEncoder on a RepLLaMA folder whose tokenizer ends texts with EOS itself (the stock
    sentence-transformers export) gives the rows it gives on the plain tokenizer: one EOS each."""
    from llara.encode import HFEncoder
    from llara.st import eos_tokenizer

    model = LlaraModel.from_pretrained(repllama_dir(base_dir))
    plain = HFEncoder(model.model, tokenizer=model.tokenizer, pooling="last", max_length=12, device="cpu")
    own = HFEncoder(
        model.model, tokenizer=eos_tokenizer(model.tokenizer), pooling="last", max_length=12, device="cpu"
    )
    rows_plain, rows_own = plain.tokenize(TEXTS, 12), own.tokenize(TEXTS, 12)
    assert [r["input_ids"] for r in rows_own] == [r["input_ids"] for r in rows_plain]
    eos = model.tokenizer.eos_token_id
    assert all(r["input_ids"][-1] == eos and r["input_ids"][-2] != eos for r in rows_own)
