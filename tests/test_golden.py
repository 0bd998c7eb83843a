"""Golden tests: LlaraModel against what the official LLaRA code produced (../shared/fixtures/official-llara).

The fixtures come from the official code (commit 7ed43d6) on a tiny random LLaMA with the LLaMA-2
tokenizer; their README gives the tolerances used here. Ids and targets must be equal exactly; losses
within 1e-5 relative, gradient norms within 1e-4 relative (the README's table), embeddings 1e-5.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from llara.layout import PromptLayout
from llara.masks import joint_allowed
from llara.model import LlaraModel, load_module, load_tokenizer
from tests.conftest import shared_path

FIXTURES = ("fixtures", "official-llara")
CASES = ["remove_stop_words=True", "remove_stop_words=False", "padded,remove_stop_words=True"]


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


@pytest.fixture(scope="module")
def golden():
    root = shared_path(*FIXTURES)
    pre = json.loads((root / "pretrain.json").read_text())
    ft = json.loads((root / "finetune.json").read_text())
    rows = [json.loads(line) for line in (root / "pretrain_rows.jsonl").read_text().splitlines()][:8]
    return root, pre, ft, rows


def load(root, head: bool) -> LlaraModel:
    """The fixture model (model/) with the fixture tokenizer (tokenizer/, which holds <s1>..<s16>)."""
    module = load_module(root / "model", head=head, dtype=torch.float32, attn_implementation="sdpa")
    return LlaraModel(module, load_tokenizer(root / "tokenizer", "released"), PromptLayout())


def batch_rows(pre, rows, case):
    """The rows of a fixture batch (the padded batch cut inputs to the texts recorded with it)."""
    batch = pre["batches"][case]
    if "dataset_input_text" in batch:
        rows = [
            {**r, "input": t, "output_summarize": s}
            for r, t, s in zip(rows, batch["dataset_input_text"], batch["dataset_input_text"], strict=True)
        ]
    return rows


def our_batch(model, pre, rows, case):
    stop = case.endswith("remove_stop_words=True")
    return model.adaptation_batch(
        batch_rows(pre, rows, case),
        "joint",
        max_length=256,  # the official cutoff_len of the fixtures
        target_max_length=256,
        remove_stop_words=stop,
        pad_to_multiple_of=8,
    )


@pytest.mark.parametrize("case", CASES)
def test_ids_labels_targets_mask_equal_official(golden, case):
    root, pre, _, rows = golden
    model = load(root, head=True)
    ref = pre["batches"][case]
    ours = our_batch(model, pre, rows, case)
    assert ours["input_ids"].tolist() == ref["input_ids"]
    assert ours["attention_mask"].tolist() == ref["attention_mask"]
    assert ours["lm_labels"].tolist() == ref["labels"]
    for kind in ("ebae", "ebar"):
        got = [sorted(t for t in row if t >= 0) for row in ours[f"{kind}_targets"].tolist()]
        assert got == [sorted(t) for t in ref["bow_targets"][kind]], kind
    # position ids: equal on real tokens once the official column count is shifted by the left pads
    # (ours count from each row's first real token; RoPE depends only on differences)
    official_pos = torch.tensor(ref["attention"]["position_ids"]).expand_as(ours["input_ids"])  # (B, T)
    pads = torch.tensor(ref["n_left_pad"])[:, None]
    real = ours["attention_mask"].bool()
    assert torch.equal(ours["position_ids"][real], (official_pos - pads)[real])
    if int(pads.max()) == 0:
        assert torch.equal(ours["position_ids"], official_pos)
    # mask: our blocked set equals the official rule on every row that is not a left pad
    blocked = ~joint_allowed(ours["attention_mask"], model.suffix_len("ebae"), model.suffix_len("ebar"))
    if int(pads.max()) == 0:
        digest = hashlib.sha256(blocked.numpy().astype(np.uint8).tobytes()).hexdigest()
        assert digest == ref["attention"]["blocked_sha256"]
    else:
        L = blocked.shape[1]
        i = torch.arange(L)[:, None]
        j = torch.arange(L)[None, :]
        rule = (j > i) | ~real[:, None, :] | ((i >= L - 18) & (j >= L - 37) & (j < L - 18))
        assert torch.equal(blocked[real], rule[real])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ar", [True, False])
def test_losses_and_gradients_equal_official(golden, case, ar):
    root, pre, _, rows = golden
    ref = pre["cases"][f"{case},ar={ar}"]
    model = load(root, head=True)
    model.model.train()
    batch = our_batch(model, pre, rows, case)
    out = model.adaptation_loss(batch, bow_scale=0.1, lm_weight=1.0 if ar else 0.0)
    assert rel(out.loss.item(), ref["loss"]) < 1e-5
    assert rel(out.bow_ebae.item(), ref["bow_ebae_loss"]) < 1e-5
    assert rel(out.bow_ebar.item(), ref["bow_ebar_loss"]) < 1e-5
    if ar:
        assert rel(out.lm.item(), ref["ar_loss"]) < 1e-5
    out.loss.backward()
    named = {n: p.grad for n, p in model.model.named_parameters() if p.grad is not None}
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in named.values()]))
    assert rel(norm.item(), ref["grad_norm"]) < 1e-4
    embed = named["model.embed_tokens.weight"].norm().item()
    head = named["lm_head.weight"].norm().item()
    assert rel(embed, ref["grad_norm_embed_tokens"]) < 1e-4
    assert rel(head, ref["grad_norm_lm_head"]) < 1e-4


def test_per_row_bow_nll_equals_official(golden):
    """Per-row values catch a wrong target set that the batch means can hide (fixture README)."""
    from llara.losses import bow_loss

    root, pre, _, rows = golden
    case = "remove_stop_words=True"
    ref = pre["cases"][f"{case},ar=False"]["bow_nll_per_row"]
    model = load(root, head=True)
    batch = our_batch(model, pre, rows, case)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        mask = batch["attention_mask"]
        from llara.masks import joint_attention_mask

        out = model.model(
            input_ids=batch["input_ids"],
            attention_mask=joint_attention_mask(mask, model.suffix_len("ebae"), model.suffix_len("ebar")),
            position_ids=batch["position_ids"],
        )
    geo = model.row_geometry(width, ("ebae", "ebar"))
    for kind in ("ebae", "ebar"):
        cols = geo.slot_columns(kind, model.n_slots)
        for i in range(8):
            loss, _ = bow_loss(out.logits[i : i + 1, cols], batch[f"{kind}_targets"][i : i + 1], scale=1.0)
            assert rel(loss.item(), ref[kind][i]) < 1e-5, (kind, i)


def test_finetune_inputs_embeddings_scores_loss_equal_official(golden):
    root, _, ft, _ = golden
    model = load(root, head=False)
    model.model.train()
    queries = ft["queries"]
    passages = [p["text"] for group in ft["passages_picked"] for p in group]
    q = model.prompt_batch(queries, "ebar", 64, pad_to_multiple_of=8)
    p = model.prompt_batch(passages, "ebae", 160, pad_to_multiple_of=8)
    assert q["input_ids"].tolist() == ft["query_inputs"]["input_ids"]
    assert p["input_ids"].tolist() == ft["passage_inputs"]["input_ids"]
    out = model.contrastive_loss(q, p, temperature=0.01, group_size=4, cross_device=False)
    assert rel(out.loss.item(), ft["loss"]) < 1e-5
    np.testing.assert_allclose(out.q_emb[:, :8].detach().numpy(), ft["q_reps"]["first8"], atol=1e-5)
    np.testing.assert_allclose(out.p_emb[:, :8].detach().numpy(), ft["p_reps"]["first8"], atol=1e-5)
    np.testing.assert_allclose(out.scores.numpy(), ft["scores"], atol=1e-3)
    raw = model.embed(q, normalize=False)
    np.testing.assert_allclose(raw[:, :8].detach().numpy(), ft["q_reps_unnormalized"]["first8"], atol=1e-5)
    out.loss.backward()
    grads = [p.grad for p in model.model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
    assert rel(norm, ft["grad_norm"]) < 1e-4
