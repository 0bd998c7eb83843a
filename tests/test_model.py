"""LlaraModel: prompt layout born in adaptation and read back, variants from the registry, ablation
prompts, untrained slots, LoRA slot rows, bf16, loading errors."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import pretrain_rows, write_jsonl
from test_finetune import COMMON as FT_COMMON
from test_finetune import rows as ft_rows

from llara import adapt, finetune, grid
from llara.layout import LAYOUT_FILE, PromptLayout
from llara.model import LlaraModel
from llara.prompts import SLOT_TOKENS
from llara.targets import stop_words, strip_stop_words

ADAPT = [
    "--max_length",
    "48",
    "--target_max_length",
    "48",
    "--per_device_train_batch_size",
    "2",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--use_cpu",
    "--seed",
    "0",
    "--logging_steps",
    "1",
]


def adapt_variant(base, tmp_path, variant, *extra):
    out = tmp_path / f"adapt-{variant}"
    train = write_jsonl(tmp_path / "pairs.jsonl", pretrain_rows(4))
    adapt.main(
        [
            "--model_name_or_path",
            str(base),
            "--train_file",
            str(train),
            "--output_dir",
            str(out),
            "--variant",
            variant,
            "--max_steps",
            "1",
            *ADAPT,
            *extra,
        ]
    )
    return out


def finetune_run(model, tmp_path, name, *extra):
    train = write_jsonl(tmp_path / "ft.jsonl", ft_rows())
    out = tmp_path / name
    finetune.main(
        [
            "--model_name_or_path",
            str(model),
            "--train_file",
            str(train),
            "--output_dir",
            str(out),
            "--group_size",
            "2",
            "--max_steps",
            "1",
            *FT_COMMON,
            *extra,
        ]
    )
    return out


def test_stop_words_as_the_official_code():
    assert len(stop_words()) == 183  # NLTK's 179 + ! , . ?
    assert strip_stop_words("Klau/Buena was Shaw's") == "Klau Buena Shaw"
    assert strip_stop_words("The_end, 42 times!") == "end 42 times"


@pytest.mark.parametrize(
    ("variant", "query", "passage", "trained"),
    [
        ("ebae", "ebae", "ebae", ["ebae"]),
        ("ebar", "ebar", "ebar", ["ebar"]),
        ("joint", "ebar", "ebae", ["ebae", "ebar"]),
        ("none", "ebar", "ebae", []),
    ],
)
def test_adaptation_writes_the_variants_prompt_layout(
    tiny_model_dir, tmp_path, variant, query, passage, trained
):
    out = adapt_variant(tiny_model_dir, tmp_path, variant)
    saved = json.loads((out / LAYOUT_FILE).read_text())
    assert (saved["query_prompt"], saved["passage_prompt"], saved["trained_prompts"]) == (
        query,
        passage,
        trained,
    )
    assert saved["style"] == "released"


def test_finetuning_refuses_slots_adaptation_never_trained(tiny_model_dir, tmp_path, capsys):
    adapted = adapt_variant(tiny_model_dir, tmp_path, "ebae")
    finetune_run(adapted, tmp_path, "bad", "--query_prompt", "ebar")  # bad input: one line, exit 2
    assert "query prompt 'ebar' uses slots this model's adaptation never trained" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    out = finetune_run(adapted, tmp_path, "ok")  # the layout's prompts: EBAE for both
    layout = PromptLayout.read(out)
    assert (layout.query_prompt, layout.passage_prompt) == ("ebae", "ebae")
    forced = finetune_run(adapted, tmp_path, "forced", "--query_prompt", "ebar", "--allow_untrained_slots")
    assert PromptLayout.read(forced).query_prompt == "ebar"


def test_checkpoint_without_slot_tokens_is_an_error_unless_allowed(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="lacks the slot tokens <s1>..<s16>.*--allow_untrained_slots"):
        LlaraModel.from_pretrained(tiny_model_dir)
    model = LlaraModel.from_pretrained(tiny_model_dir, allow_untrained_slots=True)
    assert all(t in model.tokenizer.get_vocab() for t in SLOT_TOKENS)
    LlaraModel.from_pretrained(tiny_model_dir, style="paper")  # the paper style needs no slot tokens


def test_encoding_reads_the_layout_and_a_flag_overrides_it_with_a_warning(
    slotted_model_dir, tmp_path, caplog
):
    model = LlaraModel.from_pretrained(slotted_model_dir)
    model.layout = PromptLayout(style="paper", query_prompt="ebae", passage_prompt="ebae")
    model.save_pretrained(tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING, logger="llara.layout"):
        loaded = LlaraModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.layout.style == "paper" and loaded.layout.query_prompt == "ebae"
    assert "overridden" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="llara.layout"):
        loaded = LlaraModel.from_pretrained(tmp_path / "ckpt", style="released")
    assert loaded.layout.style == "released"
    assert "style='paper'; overridden with 'released'" in caplog.text


def test_layout_is_born_in_adaptation_and_read_back_without_warnings(tiny_model_dir, tmp_path, caplog):
    """adapt --prompt_style/--query_prompt/--passage_prompt and the lengths write the layout; fine-tuning
    and encoding given none of them take it from the checkpoint and warn about nothing."""
    from llara.encode import LlaraEncoder

    lengths = ["--query_max_length", "32", "--passage_max_length", "48"]  # FT_COMMON's, so they agree
    prompts = ["--prompt_style", "paper", "--query_prompt", "ebae", "--passage_prompt", "ebar"]
    adapted = adapt_variant(tiny_model_dir, tmp_path, "joint", *prompts, *lengths)
    born = PromptLayout("paper", "ebae", "ebar", 32, 48, ("ebae", "ebar"))
    assert PromptLayout.read(adapted) == born
    with caplog.at_level(logging.WARNING, logger="llara.layout"):
        tuned = finetune_run(adapted, tmp_path, "ft")
        encoder = LlaraEncoder(tuned, device="cpu", progress=False)
    assert "overridden" not in caplog.text
    assert PromptLayout.read(tuned) == born and encoder.layout == born
    assert encoder.encode_queries(["where is the river city"]).shape == (1, 32)


def test_adaptation_refuses_a_prompt_its_variant_does_not_train(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        adapt_variant(tiny_model_dir, tmp_path, "ebae", "--query_prompt", "ebar")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --query_prompt 'ebar': variant 'ebae' does not train its slots; allowed: ebae"
    with pytest.raises(SystemExit):
        adapt_variant(tiny_model_dir, tmp_path, "joint", "--passage_prompt", "summary")
    assert "error: unknown passage_prompt 'summary'; valid: ebae, ebar" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        adapt_variant(tiny_model_dir, tmp_path, "joint", "--query_max_length", "0")
    assert "error: --query_max_length must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "trains", "like"), [("ebae2", ("ebae",), "ebae"), ("joint2", ("ebae", "ebar"), "joint")]
)
def test_a_registered_variant_adapts_like_the_one_with_its_halves(tiny_model_dir, name, trains, like):
    """adaptation_batch branches on the number of halves a variant trains, never on its name."""
    prompts = grid.variant(like).prompts
    grid.register_variant(name, trains, query=prompts["query"], passage=prompts["passage"])
    try:
        model = LlaraModel.from_pretrained(tiny_model_dir, head=True, allow_untrained_slots=True)
        kw = dict(max_length=48, target_max_length=48)
        ours, theirs = (model.adaptation_batch(pretrain_rows(3), v, **kw) for v in (name, like))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert model.adaptation_loss(ours).loss.item() == model.adaptation_loss(theirs).loss.item()
    finally:
        grid.unregister_variant(name)


def test_a_registered_variant_runs_through_the_adaptation_cli(tiny_model_dir, tmp_path):
    grid.register_variant("ebae2", ("ebae",), query="ebae", passage="ebae")
    try:
        out = adapt_variant(tiny_model_dir, tmp_path, "ebae2")
    finally:
        grid.unregister_variant("ebae2")
    saved = json.loads((out / LAYOUT_FILE).read_text())
    assert (saved["query_prompt"], saved["passage_prompt"], saved["trained_prompts"]) == (
        "ebae",
        "ebae",
        ["ebae"],
    )
    logged = set().union(
        *(set(h) for h in json.loads((out / "llara_config.json").read_text())["log_history"])
    )
    assert "bow_ebae" in logged and "bow_ebar" not in logged


def slot_rows(model_dir):
    """Embedding rows of the slot tokens of a (merged) fine-tuned model folder."""
    loaded = LlaraModel.from_pretrained(model_dir)
    ids = loaded.tokenizer.convert_tokens_to_ids(list(SLOT_TOKENS))
    return loaded.model.get_input_embeddings().weight[ids].detach().clone()


def test_lora_trains_slot_embeddings_only_when_asked(slotted_model_dir, tmp_path):
    before = slot_rows(slotted_model_dir)
    plain = finetune_run(slotted_model_dir, tmp_path, "plain", "--merge_lora")
    torch.testing.assert_close(slot_rows(plain), before, rtol=0, atol=0)
    trained = finetune_run(
        slotted_model_dir,
        tmp_path,
        "slots",
        "--merge_lora",
        "--train_slot_embeddings",
        "--max_steps",
        "3",
        "--learning_rate",
        "1e-2",
    )
    assert (slot_rows(trained) - before).abs().max() > 1e-4


def test_cross_device_negatives_without_process_group_is_an_error(slotted_model_dir, tmp_path):
    with pytest.raises(ValueError, match="--cross_device_negatives needs a process group"):
        finetune_run(slotted_model_dir, tmp_path, "xdev", "--cross_device_negatives")


def test_joint_mask_is_built_in_the_models_dtype(slotted_model_dir):
    model = LlaraModel.from_pretrained(slotted_model_dir, head=True, dtype=torch.bfloat16)
    seen = {}

    def grab(module, args, kwargs):
        seen["mask"] = kwargs["attention_mask"]

    hook = model.model.model.layers[0].self_attn.register_forward_pre_hook(grab, with_kwargs=True)
    batch = model.adaptation_batch(pretrain_rows(2), "joint", max_length=48, target_max_length=48)
    out = model.adaptation_loss(batch)
    hook.remove()
    assert seen["mask"].dtype == torch.bfloat16 and seen["mask"].dim() == 4
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("lm_weight", [1.0, 0.0])
def test_chunked_lm_path_equals_the_logits_path(slotted_model_dir, lm_weight):
    """The LM term from hidden states of labelled positions == logits from the model at every text
    column (values and gradients)."""
    model = LlaraModel.from_pretrained(slotted_model_dir, head=True)
    batch = model.adaptation_batch(pretrain_rows(3), "joint", max_length=96, target_max_length=40)
    grads = []
    for chunk in (7, None):
        model.model.zero_grad()
        out = model.adaptation_loss(batch, lm_weight=lm_weight, lm_chunk_size=chunk)
        out.loss.backward()
        grads.append((out.loss.detach(), [p.grad.clone() for p in model.model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_bf16_adaptation_finetuning_and_encoding_on_cpu(tiny_model_dir, tmp_path):
    adapted = adapt_variant(tiny_model_dir, tmp_path, "joint", "--bf16")
    cfg = json.loads((adapted / "llara_config.json").read_text())
    assert cfg["training"]["bf16"] and all(
        torch.isfinite(torch.tensor(h["loss"])) for h in cfg["log_history"] if "loss" in h
    )
    tuned = finetune_run(adapted, tmp_path, "ft-bf16", "--bf16")
    cfg = json.loads((tuned / "llara_config.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["infonce"])) for h in cfg["log_history"] if "infonce" in h)
    model = LlaraModel.from_pretrained(tuned, dtype=torch.bfloat16)
    vecs = model.encode(["where is the river city", "music"], "query")
    assert vecs.dtype == torch.float32 and torch.isfinite(vecs).all()
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(2), atol=1e-2, rtol=0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"style": "released", "colour": 1}', "unknown keys"),
        ('{"style": "fancy"}', "unknown prompt style 'fancy'"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_bad_layout_file_names_the_file(slotted_model_dir, tmp_path, text, match):
    from llara.io import DataError

    (tmp_path / LAYOUT_FILE).write_text(text)
    with pytest.raises(DataError, match=f"{LAYOUT_FILE}: .*{match}"):
        PromptLayout.read(tmp_path)


def test_loading_errors_name_the_path_and_the_fix(tiny_model_dir, tmp_path):
    """A missing folder, a folder without tokenizer files or whose tokenizer knows no word, truncated
    weights: one-line DataErrors naming the path (not transformers' "Repo id must be in the form...")."""
    import shutil

    from test_encode import specials_only_tokenizer

    from llara.io import DataError

    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: no such model folder"):
        LlaraModel.from_pretrained(tmp_path / "nope", style="paper")
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for f in folder.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(DataError, match=f"{folder}: no tokenizer files"):
        LlaraModel.from_pretrained(folder, style="paper")
    specials_only_tokenizer().save_pretrained(folder)
    with pytest.raises(DataError, match=f"{folder}: the tokenizer cannot encode ordinary text"):
        LlaraModel.from_pretrained(folder, style="paper")
    shutil.rmtree(folder)
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"{weights}: cannot read the weights .*truncated"):
        LlaraModel.from_pretrained(folder, style="paper")
