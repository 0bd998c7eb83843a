"""A checkpoint as a SentenceTransformer (llara.st) and through MTEB: the same numbers as our own path.

One tiny grid-like checkpoint (a random Llama with the slot tokens, a tokenizer trained on the texts,
LoRA fine-tuned for 2 steps by ``llara.finetune`` on SciFact train rows: an adapter folder whose base
is recorded relative to it) is scored on a fixed SciFact subsample three ways: ``llara.encode`` +
``llara.search`` + ``llara.score`` CLIs; the SentenceTransformer that ``python -m llara.st`` writes,
with our search and score; ``mteb.evaluate`` on that SentenceTransformer with the subsample as a local
MTEB retrieval task. The same three ways for a RepLLaMA checkpoint (the same random Llama without slot
tokens, fine-tuned with ``--layout_preset repllama``), whose export is made of stock
sentence-transformers modules (``Transformer`` + last-token ``Pooling`` + ``Normalize``).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import shared_path, tiny_model, write_jsonl

from llara import st
from llara.beir import load_beir, subsample
from llara.model import LlaraModel
from llara.prompts import SLOT_TOKENS
from llara.runs import ranked, read_trec_run
from llara.score import score
from llara.search import search_exact, to_run

pytestmark = pytest.mark.extended  # seconds of subprocesses each: `make test-extended` (CI runs it)


NUM_QUERIES, NUM_OTHER_DOCS = 40, 100
QUERY_MAX, PASSAGE_MAX = 32, 48  # short: passages are truncated before the suffix, and encoding is quick


@pytest.fixture(scope="module")
def scifact():
    return shared_path("data", "beir", "scifact")


@pytest.fixture(scope="module")
def sub_dir(scifact, tmp_path_factory):
    """A fixed SciFact test subsample in BEIR and MTEB layout at once."""
    ds = subsample(load_beir(scifact, "test"), NUM_QUERIES, NUM_OTHER_DOCS, seed=0)
    return st.write_mteb_folder(ds, tmp_path_factory.mktemp("scifact-sub"))


def tune(scifact, sub_dir, tmp_path_factory, slots: bool, *layout_flags: str):
    """(base folder, LoRA adapter folder): a random Llama (with the slot tokens, or plain) fine-tuned 2
    steps on SciFact train."""
    from transformers import LlamaTokenizer

    from llara.finetune import main as finetune

    ds = load_beir(sub_dir, "test")
    train = load_beir(scifact, "train")
    texts = ds.corpus_items()[1] + ds.query_items()[1]
    tok = LlamaTokenizer().train_new_from_iterator(texts, vocab_size=2000)
    tok.add_bos_token = True
    if slots:
        tok.add_special_tokens({"additional_special_tokens": list(SLOT_TOKENS)})
    base = tmp_path_factory.mktemp("base")
    tiny_model("llama", vocab_size=len(tok), seed=0).save_pretrained(base)
    tok.save_pretrained(base)

    rng = random.Random(0)
    doc_ids = sorted(train.corpus)
    rows = []
    for qid in sorted(train.qrels)[:8]:
        pos = next(iter(train.qrels[qid]))
        negs = [d for d in rng.sample(doc_ids, 4) if d not in train.qrels[qid]][:3]
        rows.append(
            {"query": train.queries[qid], "pos": [_text(train, pos)], "neg": [_text(train, d) for d in negs]}
        )
    root = tmp_path_factory.mktemp("ft")
    out = root / "model"
    finetune(
        ["--model_name_or_path", str(base), "--train_file", str(write_jsonl(root / "train.jsonl", rows))]
        + ["--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4"]
        + [
            "--group_size",
            "4",
            "--query_max_length",
            str(QUERY_MAX),
            "--passage_max_length",
            str(PASSAGE_MAX),
        ]
        + ["--learning_rate", "1e-3", "--lora_r", "4", "--lora_alpha", "8", "--use_cpu", "--seed", "0"]
        + ["--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", *layout_flags]
    )
    assert (out / "adapter_config.json").exists()
    return base, out


@pytest.fixture(scope="module")
def tuned(scifact, sub_dir, tmp_path_factory):
    """A slotted Llama, LoRA fine-tuned as LLaRA (its default layout)."""
    return tune(scifact, sub_dir, tmp_path_factory, True)


@pytest.fixture(scope="module")
def tuned_repllama(scifact, sub_dir, tmp_path_factory):
    """The plain Llama (no slot tokens, no llara_prompt.json), LoRA fine-tuned as RepLLaMA."""
    return tune(scifact, sub_dir, tmp_path_factory, False, "--layout_preset", "repllama")


def _text(ds, doc_id):
    return (ds.corpus[doc_id]["title"] + " " + ds.corpus[doc_id]["text"]).strip()


@pytest.fixture(scope="module")
def st_dir(tuned, tmp_path_factory):
    out = tmp_path_factory.mktemp("st") / "model-st"
    assert st.main(["--model", str(tuned[1]), "--output", str(out)]) == 0
    return out


def run_ours(sub_dir, ckpt, tmp_path) -> tuple[dict, dict]:
    """encode (corpus, queries) -> search -> score, all through the CLIs: (run, metrics)."""
    from llara.encode import main as encode
    from llara.score import main as score_cli
    from llara.search import main as search

    enc = tmp_path / "enc"
    for what in ("corpus", "queries"):
        args = ["--encoder", "llara", "--model", str(ckpt), "--beir-dir", str(sub_dir), "--what", what]
        assert (
            encode(
                [*args, "--output", str(enc), "--device", "cpu", "--no-progress", "--store-dtype", "float32"]
            )
            == 0
        )
    run = tmp_path / "run.trec"
    args = ["--query-dir", str(enc), "--corpus-dir", str(enc), "--tag", "ours", "--k", "100"]
    assert search([*args, "--output", str(run), "--cpu"]) == 0
    metrics = tmp_path / "metrics.json"
    qrels = sub_dir / "qrels" / "test.tsv"
    assert score_cli(["--qrels", str(qrels), "--run", str(run), "--output", str(metrics)]) == 0
    return read_trec_run(run), json.loads(metrics.read_text())


def assert_same_top10(run: dict, reference: dict, what: str) -> None:
    """Query by query, the same 10 documents in the same order, scores within 1e-5."""
    assert run.keys() == reference.keys(), what
    for qid, docs in reference.items():
        want, got = ranked(docs)[:10], ranked(run[qid])[:10]
        assert [d for d, _ in got] == [d for d, _ in want], f"{what}: query {qid}"
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5, err_msg=what)


@pytest.fixture(scope="module")
def st_repllama_dir(tuned_repllama, tmp_path_factory):
    out = tmp_path_factory.mktemp("st-repllama") / "repllama-st"
    assert st.main(["--model", str(tuned_repllama[1]), "--output", str(out)]) == 0
    return out


def test_three_ways_give_one_ndcg(sub_dir, tuned, st_dir, tmp_path, monkeypatch):
    three_ways(sub_dir, tuned[1], st_dir, tmp_path, monkeypatch)


def test_three_ways_give_one_ndcg_for_repllama(
    sub_dir, tuned_repllama, st_repllama_dir, tmp_path, monkeypatch
):
    three_ways(sub_dir, tuned_repllama[1], st_repllama_dir, tmp_path, monkeypatch)


def three_ways(sub_dir, ckpt, st_dir, tmp_path, monkeypatch) -> None:
    """Our CLIs on ``ckpt``, the SentenceTransformer folder ``st_dir`` with our search and score, and
    MTEB on that folder: one NDCG@10 and the same top 10 of every query."""
    import datasets
    import mteb

    run, ours = run_ours(sub_dir, ckpt, tmp_path)

    model = st.load(st_dir, device="cpu")
    ds = load_beir(sub_dir, "test")
    (qids, qtexts), (dids, dtexts) = ds.query_items(), ds.corpus_items()
    q = model.encode_query(qtexts, batch_size=16)
    p = model.encode_document(dtexts, batch_size=16)
    st_run = to_run(qids, dids, *search_exact(q, p, 100, use_gpu=False))
    via_st = score(ds.qrels, st_run)

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    task = st.local_retrieval_task(sub_dir, "LlaraSciFactSubsample")
    wrapper = st.mteb_model(st_dir, device="cpu")
    assert wrapper.mteb_model_meta.name == f"llara/{st_dir.name}"
    result = mteb.evaluate(wrapper, task, cache=None, prediction_folder=tmp_path, show_progress_bar=False)
    via_mteb = result.task_results[0].scores["test"][0]["ndcg_at_10"]
    mteb_run = json.loads((tmp_path / "LlaraSciFactSubsample_predictions.json").read_text())["default"][
        "test"
    ]

    values = {"ours": ours["metrics"]["ndcg@10"], "st": via_st["metrics"]["ndcg@10"], "mteb": via_mteb}
    print(f"NDCG@10 on {len(qids)} queries x {len(dids)} documents: {values}")
    assert ours["num_queries"] == via_st["num_queries"] == NUM_QUERIES
    assert sum(v["ndcg@10"] > 0 for v in ours["per_query"].values()) >= 2, "degenerate: nothing retrieved"
    assert values["st"] == pytest.approx(values["ours"], abs=1e-4)
    assert values["mteb"] == pytest.approx(values["ours"], abs=1e-4)
    # not only the means: the rankings themselves (so the scorers agree query by query too)
    assert_same_top10(st_run, run, "sentence-transformers")
    assert_same_top10(mteb_run, run, "mteb")


def test_st_embeds_as_llara_encode(tuned, st_dir, tmp_path):
    """Both roles, long texts cut before the suffix, an instruction prompt, a plain encode()."""
    model = st.load(st_dir, device="cpu")
    llara = LlaraModel.from_pretrained(tuned[1])
    assert llara.layout.query_max_length == QUERY_MAX and st.PromptLayout.read(st_dir) == llara.layout
    texts = ["where is the river city", "gene expression " * 80, "a", "Vitamin D deficiency raises risk."]
    q = model.encode_query(texts, convert_to_tensor=True)
    p = model.encode_document(texts, convert_to_tensor=True)
    torch.testing.assert_close(q, llara.encode(texts, "query"), atol=1e-5, rtol=0)
    torch.testing.assert_close(p, llara.encode(texts, "passage"), atol=1e-5, rtol=0)
    assert not torch.allclose(q, p, atol=1e-3)  # the two prompts differ
    torch.testing.assert_close(model.encode(texts, convert_to_tensor=True), p, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        model.encode(texts, task="query", convert_to_tensor=True), q, atol=1e-6, rtol=0
    )
    hinted = model.encode_query(texts, prompt="claim: ", convert_to_tensor=True)
    torch.testing.assert_close(
        hinted, llara.encode(["claim: " + t for t in texts], "query"), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(texts)))
    with pytest.raises(ValueError, match="unknown task 'classification'"):
        model.encode(texts, task="classification")

    # the exported folder is a merged LLaRA checkpoint too: our loader reads it, and it exports again
    merged = LlaraModel.from_pretrained(st_dir)
    torch.testing.assert_close(merged.encode(texts, "passage"), p, atol=1e-5, rtol=0)
    # a --reference folder beside the adapter: no weights, the adapter loaded (and merged) by its relative path
    thin = tuned[1].parent / "model-st-ref"
    assert st.main(["--model", str(tuned[1]), "--output", str(thin), "--reference"]) == 0
    assert not list(thin.glob("*.safetensors"))
    assert json.loads((thin / st.ST_CONFIG_FILE).read_text())["checkpoint"] == "../model"
    thin_model = st.load(thin, device="cpu")
    torch.testing.assert_close(thin_model.encode_query(texts, convert_to_tensor=True), q, atol=1e-5, rtol=0)
    thin_model.save(str(tmp_path / "elsewhere" / "st"))  # saved elsewhere, it still finds the adapter
    moved = st.load(tmp_path / "elsewhere" / "st", device="cpu")
    torch.testing.assert_close(moved.encode_document(texts, convert_to_tensor=True), p, atol=1e-5, rtol=0)


def test_repllama_exports_stock_modules_that_embed_as_llara_encode(tuned_repllama, st_repllama_dir, tmp_path):
    """Stock modules only (no llara class, no trust_remote_code), the prefixes as the prompts, EOS
    appended by the tokenizer itself; both roles, long texts cut before the EOS, a plain encode()."""
    from sentence_transformers import SentenceTransformer

    modules = json.loads((st_repllama_dir / "modules.json").read_text())
    assert [m["type"] for m in modules] == [
        "sentence_transformers.base.modules.transformer.Transformer",
        "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        "sentence_transformers.base.modules.normalize.Normalize",
    ]
    assert not (st_repllama_dir / st.ST_CONFIG_FILE).exists() and not (st_repllama_dir / "hf-model").exists()
    assert (
        json.loads((st_repllama_dir / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "lasttoken"
    )
    config = json.loads((st_repllama_dir / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}
    bert = json.loads((st_repllama_dir / "sentence_bert_config.json").read_text())
    assert (bert["query_length"], bert["document_length"]) == (QUERY_MAX, PASSAGE_MAX)

    model = SentenceTransformer(str(st_repllama_dir), device="cpu")  # stock: no trust_remote_code
    llara = LlaraModel.from_pretrained(tuned_repllama[1])
    assert llara.layout == st.PromptLayout.read(st_repllama_dir) and llara.layout.pooling == "last"
    texts = ["where is the river city", "gene expression " * 80, "a", "Vitamin D deficiency raises risk."]
    q = model.encode_query(texts, convert_to_tensor=True)
    p = model.encode_document(texts, convert_to_tensor=True)
    torch.testing.assert_close(q, llara.encode(texts, "query"), atol=1e-5, rtol=0)
    torch.testing.assert_close(p, llara.encode(texts, "passage"), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode(texts, convert_to_tensor=True), p, atol=1e-6, rtol=0)
    rows = model[0].preprocess(["query: " + texts[1]], task="query")["input_ids"][0].tolist()
    assert (
        len(rows) == QUERY_MAX
        and rows[-1] == llara.tokenizer.eos_token_id
        and rows[0] == llara.tokenizer.bos_token_id
    )
    # the folder is a merged checkpoint of the same layout too: our loader reads it (no second EOS)
    merged = LlaraModel.from_pretrained(st_repllama_dir)
    torch.testing.assert_close(merged.encode(texts, "query"), q, atol=1e-5, rtol=0)
    # --reference: no weights, our module around the adapter (stock modules cannot load it)
    thin = tuned_repllama[1].parent / "repllama-st-ref"
    assert st.main(["--model", str(tuned_repllama[1]), "--output", str(thin), "--reference"]) == 0
    thin_model = st.load(thin, device="cpu")
    torch.testing.assert_close(thin_model.encode_query(texts, convert_to_tensor=True), q, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        thin_model.encode_document(texts, convert_to_tensor=True), p, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ({}, "lasttoken"),  # the CLI's --layout-preset repllama alone
        ({"pooling": "mean", "append_eos": False, "query_prefix": "q: "}, "mean"),
    ],
)
def test_a_plain_base_exports_stock_modules_with_the_preset_flag(tiny_model_dir, tmp_path, overrides, mode):
    """``python -m llara.st --layout-preset repllama`` on a plain base (no training): the stock folder;
    a mean-pooling layout (through ``export``'s overrides) too."""
    out = tmp_path / "base-st"
    if overrides:
        st.export(tiny_model_dir, out, **{**st.PRESETS["repllama"], **overrides})
    else:
        assert (
            st.main(["--model", str(tiny_model_dir), "--output", str(out), "--layout-preset", "repllama"])
            == 0
        )
    model = st.load(out, device="cpu")
    ref = LlaraModel.from_pretrained(tiny_model_dir, **{**st.PRESETS["repllama"], **overrides})
    assert ref.layout == st.PromptLayout.read(out)
    texts = ["the river city", "music school " * 100]
    torch.testing.assert_close(
        model.encode_query(texts, convert_to_tensor=True), ref.encode(texts, "query"), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        model.encode_document(texts, convert_to_tensor=True), ref.encode(texts, "passage"), atol=1e-5, rtol=0
    )
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode"] == mode


def test_baai_layout_folder(slotted_model_dir, tmp_path):
    """Slot tokens in the tokenizer, no llara_prompt.json: the released defaults (EBAR queries, EBAE
    passages, 64 / 160 tokens), and the export records them."""
    out = tmp_path / "LLARA-tiny-st"
    assert st.main(["--model", str(slotted_model_dir), "--output", str(out)]) == 0
    layout = st.PromptLayout.read(out)
    assert (layout.style, layout.query_prompt, layout.passage_prompt) == ("released", "ebar", "ebae")
    assert (layout.query_max_length, layout.passage_max_length, layout.trained_prompts) == (64, 160, None)
    model = st.load(out, device="cpu")
    ref = LlaraModel.from_pretrained(slotted_model_dir)
    texts = ["where is the river city", "music school " * 100]
    torch.testing.assert_close(
        model.encode_query(texts, convert_to_tensor=True), ref.encode(texts, "query"), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        model.encode_document(texts, convert_to_tensor=True), ref.encode(texts, "passage"), atol=1e-5, rtol=0
    )
    assert model.get_embedding_dimension() == ref.model.config.hidden_size
    assert model.similarity_fn_name == "dot"


def test_cli_writes_atomically_and_refuses_to_clobber(slotted_model_dir, tmp_path, capsys):
    out = tmp_path / "st"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--model", str(slotted_model_dir), "--output", str(out)]
    assert st.main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert st.main(["--model", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
    assert st.main([*args, "--overwrite", "--query-prompt", "ebae"]) == 0
    assert not (out / "keep.txt").exists() and st.PromptLayout.read(out).query_prompt == "ebae"
    before = st.fingerprint(out)
    assert st.main([*args, "--overwrite", "--query-prompt", "ebae"]) == 0
    assert st.fingerprint(out) != before  # MTEB's cache key changes with the files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]  # no temporary folders left beside it
    model = st.load(out, device="cpu")  # EBAE for both roles: a short text embeds the same either way
    p = model.encode_document(["music"], convert_to_numpy=True)
    np.testing.assert_allclose(model.encode_query(["music"], convert_to_numpy=True), p, atol=1e-6)


@pytest.mark.slow  # a subprocess per case, ~10-25 s each: `make test-slow` (CI when time allows)
def test_cli_export_names_the_package_class_and_loads_in_a_fresh_interpreter(slotted_model_dir, tmp_path):
    """``python -m llara.st`` runs st.py as __main__: the modules.json it writes must still name
    ``llara.st.LlaraSTModule`` (a class of ``__main__`` cannot be imported by whoever loads the folder)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "st"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cli = [sys.executable, "-m", "llara.st", "--model", str(slotted_model_dir), "--output", str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "modules.json").read_text())[0]["type"] == "llara.st.LlaraSTModule"
    texts = ["where is the river city", "music school " * 100]
    load = (
        "import json, sys\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"model = SentenceTransformer({str(out)!r}, trust_remote_code=True, device='cpu')\n"
        f"texts = {texts!r}\n"
        "print(json.dumps([model.encode_query(texts).tolist(), model.encode_document(texts).tolist()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    q, p = (torch.tensor(x) for x in json.loads(done.stdout.strip().splitlines()[-1]))
    ref = LlaraModel.from_pretrained(slotted_model_dir)
    torch.testing.assert_close(q, ref.encode(texts, "query"), atol=1e-5, rtol=0)
    torch.testing.assert_close(p, ref.encode(texts, "passage"), atol=1e-5, rtol=0)
