"""Fine-tuning stage on a tiny model, loading a released-checkpoint layout, and bad input (rows, model
folders) as one ``error:`` line with exit status 2."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_tokenizer, shared_path, tiny_model, write_jsonl
from transformers import AutoModel, AutoTokenizer

from llara.finetune import main
from llara.model import LlaraModel
from llara.prompts import SLOT_TOKENS

COMMON = [
    "--per_device_train_batch_size",
    "2",
    "--query_max_length",
    "32",
    "--passage_max_length",
    "48",
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
    "--lora_r",
    "4",
    "--lora_alpha",
    "8",
]


def rows(n: int = 6) -> list[dict]:
    topics = ["river city", "music school", "king war", "island mountain", "church history", "science team"]
    return [
        {
            "query": f"where is the {t}",
            "pos": [f"the {t} was founded near the river"],
            "neg": [f"the {o} played music" for o in topics if o != t],
        }
        for t in topics[:n]
    ]


def run(model_dir, train, out, *extra):
    return main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--train_file",
            str(train),
            "--output_dir",
            str(out),
            *COMMON,
            *extra,
        ]
    )


def test_finetune_lora_adapter_loads_for_encoding(slotted_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "ft.jsonl", rows())
    out = tmp_path / "ft"
    run(slotted_model_dir, train, out, "--group_size", "4", "--max_steps", "3")
    assert (out / "adapter_config.json").exists()
    cfg = json.loads((out / "llara_config.json").read_text())
    assert cfg["layout"]["query_prompt"] == "ebar" and cfg["layout"]["passage_prompt"] == "ebae"
    assert cfg["global_step"] == 3
    # the base model is recorded relative to the adapter folder: the tree can move
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not base.startswith("/") and (out / base).resolve() == slotted_model_dir.resolve()
    assert any("infonce" in h for h in cfg["log_history"])
    tuned = LlaraModel.from_pretrained(out).embed_texts(["where is the river city"], "ebar", 32)
    base = LlaraModel.from_pretrained(slotted_model_dir).embed_texts(["where is the river city"], "ebar", 32)
    assert tuned.shape == base.shape and not torch.allclose(tuned, base)
    torch.testing.assert_close(tuned.norm(dim=-1), torch.ones(1))


def test_training_lowers_the_contrastive_loss(slotted_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "ft.jsonl", rows())
    out = tmp_path / "ft"
    run(
        slotted_model_dir,
        train,
        out,
        "--group_size",
        "2",
        "--max_steps",
        "24",
        "--learning_rate",
        "5e-3",
        "--temperature",
        "0.05",
    )
    losses = [
        h["infonce"]
        for h in json.loads((out / "llara_config.json").read_text())["log_history"]
        if "infonce" in h
    ]
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4


def test_merge_lora_writes_full_model(slotted_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "ft.jsonl", rows(2))
    out = tmp_path / "merged"
    run(slotted_model_dir, train, out, "--group_size", "2", "--max_steps", "1", "--merge_lora")
    assert not (out / "adapter_config.json").exists()
    AutoModel.from_pretrained(out)


@pytest.mark.parametrize("name", ["llara_toy_finetune.jsonl", "msmarco_hn_sample.jsonl"])
def test_official_files_load_as_is(tiny_model_dir, tmp_path, name):
    train = shared_path("data", "finetune", name)
    out = tmp_path / "ft"
    run(tiny_model_dir, train, out, "--group_size", "4", "--max_steps", "1", "--prompt_style", "paper")
    assert json.loads((out / "llara_config.json").read_text())["rows_used"] >= 10


def test_bad_rows_are_named(tiny_model_dir, tmp_path, capsys):
    bad = rows(2)
    bad[1]["pos"] = []
    assert (
        run(tiny_model_dir, write_jsonl(tmp_path / "a.jsonl", bad), tmp_path / "o", "--max_steps", "1") == 2
    )
    assert "a.jsonl: row 2 has an empty 'pos'" in capsys.readouterr().err
    no_neg = rows(2)
    no_neg[0]["neg"] = []
    assert (
        run(tiny_model_dir, write_jsonl(tmp_path / "b.jsonl", no_neg), tmp_path / "o", "--max_steps", "1")
        == 2
    )
    assert "llara.mine" in capsys.readouterr().err
    wrong = [{"query": "q", "pos": "just a string", "neg": []}]
    assert (
        run(tiny_model_dir, write_jsonl(tmp_path / "c.jsonl", wrong), tmp_path / "o", "--max_steps", "1") == 2
    )
    assert "c.jsonl:1: field 'pos' must be a list" in capsys.readouterr().err
    mostly_empty = rows(3)
    for row in mostly_empty[:2]:
        row["query"] = ""
    path = write_jsonl(tmp_path / "d.jsonl", mostly_empty)
    assert run(tiny_model_dir, path, tmp_path / "o", "--max_steps", "1") == 2
    assert f"error: {path}: 2 of 3 rows have an empty text" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def broken_model(kind: str, tiny_model_dir, tmp_path):
    """A model folder that cannot load: missing, without tokenizer files, with truncated weights."""
    import shutil

    folder = tmp_path / "model"
    if kind == "missing":
        return folder, folder
    shutil.copytree(tiny_model_dir, folder)
    if kind == "no tokenizer":
        for f in folder.glob("tokenizer*"):
            f.unlink()
        return folder, folder
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return folder, weights


@pytest.mark.slow  # a subprocess per case, ~10-25 s each: `make test-slow` (CI when time allows)
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no such model folder"),
        ("no tokenizer", "no tokenizer files"),
        ("truncated weights", "cannot read the weights"),
    ],
)
def test_cli_model_that_cannot_load_is_one_line(tiny_model_dir, tmp_path, kind, message):
    from conftest import assert_bad_input, run_cli

    model, named = broken_model(kind, tiny_model_dir, tmp_path)
    train = write_jsonl(tmp_path / "ft.jsonl", rows(2))
    args = ["--model_name_or_path", model, "--train_file", train, "--output_dir", tmp_path / "out"]
    done = run_cli("finetune", *args, "--max_steps", "1", "--prompt_style", "paper", *COMMON)
    assert_bad_input(done, named, message)


@pytest.mark.slow  # a subprocess per case, ~10-25 s each: `make test-slow` (CI when time allows)
def test_cli_empty_positive_list_is_one_line(tiny_model_dir, tmp_path):
    from conftest import assert_bad_input, run_cli

    bad = rows(2)
    bad[0]["pos"] = []
    train = write_jsonl(tmp_path / "ft.jsonl", bad)
    args = ["--model_name_or_path", tiny_model_dir, "--train_file", train, "--output_dir", tmp_path / "out"]
    assert_bad_input(
        run_cli("finetune", *args, "--max_steps", "1", *COMMON), train, "row 1 has an empty 'pos'"
    )
    assert not (tmp_path / "out").exists()


def test_released_checkpoint_layout_matches_model_card_recipe(tokenizer_dirs, tmp_path):
    """A folder laid out as BAAI/LLARA-* (slot tokens in the tokenizer, resized model) is encoded by our
    encoder exactly as by the model cards' recipe: last 8 hidden states, mean, normalise."""
    tok = load_tokenizer(tokenizer_dirs, "llama")
    tok.add_special_tokens({"additional_special_tokens": list(SLOT_TOKENS)})
    tok.pad_token, tok.padding_side = tok.unk_token, "left"
    model = tiny_model("llama", vocab_size=len(tok), seed=3)
    ckpt = tmp_path / "LLARA-tiny"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    queries = ["where is the river city", "music"]

    # --- the model card recipe (BAAI/LLARA-passage), written out as the card does ---
    card_tok = AutoTokenizer.from_pretrained(ckpt)
    card_model = AutoModel.from_pretrained(ckpt).eval()
    prefix = '"'
    suffix = '", predict the following passage within eight words: <s9><s10><s11><s12><s13><s14><s15><s16>'
    prefix_ids = card_tok(prefix, return_tensors=None)["input_ids"]
    suffix_ids = card_tok(suffix, return_tensors=None)["input_ids"][1:]
    enc = card_tok(queries, return_tensors=None, max_length=64, truncation=True, add_special_tokens=False)
    enc["input_ids"] = [prefix_ids + ids + suffix_ids for ids in enc["input_ids"]]
    enc["attention_mask"] = [[1] * len(ids) for ids in enc["input_ids"]]
    batch = card_tok.pad(enc, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    with torch.no_grad():
        out = card_model(**batch, return_dict=True, output_hidden_states=True)
    card = torch.nn.functional.normalize(out.hidden_states[-1][:, -8:, :].mean(dim=1), dim=-1)

    ours = LlaraModel.from_pretrained(ckpt, style="released").embed_texts(queries, "ebar", 64 + 30)
    torch.testing.assert_close(ours, card, atol=1e-5, rtol=0)


def test_group_size_one_keeps_the_positive_alone():
    """In-batch negatives only: rows that do carry negatives still give groups of exactly one."""
    from llara.finetune import GroupDataset

    items = [GroupDataset(rows(), group_size, seed=0)[0] for group_size in (1, 3, 8)]
    assert [len(x["passages"]) for x in items] == [1, 3, 8]  # 8 > 1 + 5 negatives: drawn with replacement
    assert items[0]["passages"] == rows()[0]["pos"]
