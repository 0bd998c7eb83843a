"""Tests of llara.losses: hand-computed values, a slow loop reference (values and gradients), edge
cases, the chunked LM loss against the plain one (values, gradients, largest tensor), and cross-device
InfoNCE with real gloo process groups (1 and 2 processes)."""

from __future__ import annotations

import copy
import math
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

from llara.losses import (
    bow_loss,
    chunked_lm_loss,
    combine_adaptation_losses,
    gather_keep_local,
    info_nce,
    info_nce_cross_device,
    linear_cross_entropy,
)

F64 = torch.float64
SEEDS = [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# Slow references: Python loops over rows, slots, vocabulary and targets, built from 0-d tensor
# operations so that autograd can differentiate them.
# ---------------------------------------------------------------------------------------------


def _log_softmax_loop(row: list[Tensor]) -> list[Tensor]:
    """log-softmax of a list of 0-d tensors, by hand: x_v - (m + log sum_v exp(x_v - m))."""
    m = max(float(x.detach()) for x in row)  # a constant shift, for numerical safety only
    total = row[0] * 0.0
    for x in row:
        total = total + torch.exp(x - m)
    lse = m + torch.log(total)
    return [x - lse for x in row]


def ref_bow_loss(slot_logits: Tensor, targets: Tensor, scale: float) -> tuple[Tensor, int]:
    B, S, V = slot_logits.shape
    row_losses = []
    for b in range(B):
        pooled = []
        for v in range(V):
            best = slot_logits[b, 0, v]
            for s in range(1, S):
                x = slot_logits[b, s, v]
                if float(x.detach()) > float(best.detach()):
                    best = x
            pooled.append(best)
        logp = _log_softmax_loop(pooled)
        row_targets = [int(t) for t in targets[b] if int(t) != -1]
        if not row_targets:
            continue
        acc = logp[0] * 0.0
        for t in row_targets:
            acc = acc + logp[t]
        row_losses.append(-acc / len(row_targets))
    if not row_losses:
        return slot_logits.sum() * 0.0, 0
    total = row_losses[0] * 0.0
    for r in row_losses:
        total = total + r
    return total / len(row_losses) * scale, len(row_losses)


def ref_lm_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    B, T, V = logits.shape
    terms = []
    for b in range(B):
        for t in range(T - 1):
            y = int(labels[b, t + 1])
            if y == ignore_index:
                continue
            logp = _log_softmax_loop([logits[b, t, v] for v in range(V)])
            terms.append(-logp[y])
    if not terms:
        return logits.sum() * 0.0
    total = terms[0] * 0.0
    for x in terms:
        total = total + x
    return total / len(terms)


def ref_info_nce(q: Tensor, p: Tensor, temperature: float, group_size: int, q_offset: int = 0) -> Tensor:
    B, H = q.shape
    N = p.shape[0]
    total = q.sum() * 0.0
    for i in range(B):
        scores = []
        for j in range(N):
            dot = q[i, 0] * p[j, 0]
            for h in range(1, H):
                dot = dot + q[i, h] * p[j, h]
            scores.append(dot / temperature)
        logp = _log_softmax_loop(scores)
        total = total - logp[(q_offset + i) * group_size]
    return total / B


def _random_targets(gen: torch.Generator, B: int, K: int, V: int) -> Tensor:
    """(B, K) unique ids per row padded with -1; row lengths vary and include 0."""
    rows = []
    for b in range(B):
        n = b % (K + 1)  # row 0 has no targets, the others 1..K
        ids = torch.randperm(V, generator=gen)[:n]
        rows.append(torch.cat([ids, torch.full((K - n,), -1, dtype=torch.long)]))
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# bow_loss
# ---------------------------------------------------------------------------------------------


def test_bow_loss_hand_computed():
    # Row 0: max over the 2 slots -> [1, 2, 0, 1];
    #   lse = log(e + e^2 + 1 + e) = log(13.825619755848740) = 2.626523375036446;
    #   targets {1, 3}: loss = -((2 - lse) + (1 - lse)) / 2 = lse - 1.5 = 1.126523375036446.
    # Row 1: all-zero logits -> uniform, logp = -log 4; target {2}: loss = log 4 = 1.386294361119891.
    # Row 2: no targets -> left out of the mean.
    # loss = 0.1 * (1.126523375036446 + 1.386294361119891) / 2 = 0.125640886807817.
    slot_logits = torch.tensor(
        [
            [[0.0, 2.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]],
            [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            [[5.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]],
        ],
        dtype=F64,
    )
    targets = torch.tensor([[1, 3, -1], [2, -1, -1], [-1, -1, -1]])
    loss, n_rows = bow_loss(slot_logits, targets)
    lse = math.log(math.e + math.exp(2) + 1 + math.e)
    expected = 0.1 * ((lse - 1.5) + math.log(4)) / 2
    assert expected == pytest.approx(0.125640886807817, abs=1e-12)
    assert_close(loss, torch.tensor(expected, dtype=F64))
    assert n_rows.dtype == torch.int64 and int(n_rows) == 2


def test_bow_loss_single_slot_is_plain_log_softmax():
    # Paper style (S=1): no max; logits [log 1, log 2, log 3, log 4] -> p = [.1, .2, .3, .4];
    # targets {1, 3}: loss = -(log .2 + log .4) / 2, scale 1.
    slot_logits = torch.log(torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=F64))
    loss, n_rows = bow_loss(slot_logits, torch.tensor([[3, 1]]), scale=1.0)
    assert_close(loss, torch.tensor(-(math.log(0.2) + math.log(0.4)) / 2, dtype=F64))
    assert int(n_rows) == 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("S", [1, 3])
def test_bow_loss_matches_loop_reference_values_and_grads(seed: int, S: int):
    gen = torch.Generator().manual_seed(seed)
    B, V, K = 5, 7, 4
    slot_logits = torch.randn(B, S, V, generator=gen, dtype=F64, requires_grad=True)
    targets = _random_targets(gen, B, K, V)
    loss, n_rows = bow_loss(slot_logits, targets, scale=0.3)
    ref, ref_rows = ref_bow_loss(slot_logits, targets, scale=0.3)
    assert_close(loss, ref)
    assert int(n_rows) == ref_rows == B - 1
    (g,) = torch.autograd.grad(loss, slot_logits)
    (g_ref,) = torch.autograd.grad(ref, slot_logits)
    assert_close(g, g_ref)


def test_bow_loss_gradcheck():
    gen = torch.Generator().manual_seed(3)
    slot_logits = torch.randn(3, 2, 5, generator=gen, dtype=F64, requires_grad=True)
    targets = torch.tensor([[0, 4, -1], [-1, -1, -1], [2, 1, 3]])
    assert torch.autograd.gradcheck(lambda x: bow_loss(x, targets)[0], (slot_logits,))


def test_bow_loss_empty_row_excluded_and_gets_zero_grad():
    gen = torch.Generator().manual_seed(4)
    slot_logits = torch.randn(2, 3, 6, generator=gen, dtype=F64, requires_grad=True)
    targets = torch.tensor([[1, 5, -1], [-1, -1, -1]])
    loss, n_rows = bow_loss(slot_logits, targets)
    alone, _ = bow_loss(slot_logits[:1], targets[:1])
    assert_close(loss, alone)
    assert int(n_rows) == 1
    (g,) = torch.autograd.grad(loss, slot_logits)
    assert torch.count_nonzero(g[1]) == 0
    assert torch.count_nonzero(g[0]) > 0


@pytest.mark.parametrize("K", [0, 3])
def test_bow_loss_all_rows_empty_is_finite_zero_with_graph(K: int):
    slot_logits = torch.randn(2, 2, 5, dtype=F64, requires_grad=True)
    targets = torch.full((2, K), -1, dtype=torch.long)
    loss, n_rows = bow_loss(slot_logits, targets)
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert int(n_rows) == 0 and n_rows.dtype == torch.int64
    assert loss.requires_grad
    loss.backward()
    assert slot_logits.grad is not None
    assert torch.isfinite(slot_logits.grad).all() and torch.count_nonzero(slot_logits.grad) == 0


def test_bow_loss_scale_is_applied():
    gen = torch.Generator().manual_seed(5)
    slot_logits = torch.randn(3, 2, 6, generator=gen, dtype=F64)
    targets = torch.tensor([[0, 1], [2, -1], [5, 4]])
    unscaled, _ = bow_loss(slot_logits, targets, scale=1.0)
    default, _ = bow_loss(slot_logits, targets)
    assert_close(default, unscaled * 0.1)
    assert_close(bow_loss(slot_logits, targets, scale=2.5)[0], unscaled * 2.5)


def test_bow_loss_half_precision_is_computed_in_float32():
    gen = torch.Generator().manual_seed(6)
    slot_logits = torch.randn(2, 2, 50, generator=gen)
    targets = torch.tensor([[3, 7, 9], [1, -1, -1]])
    loss, _ = bow_loss(slot_logits.bfloat16(), targets)
    assert loss.dtype == torch.float32
    ref, _ = bow_loss(slot_logits.bfloat16().float(), targets)
    assert_close(loss, ref)


@pytest.mark.parametrize(
    ("logits_shape", "targets", "match"),
    [
        ((2, 5), torch.zeros(2, 1, dtype=torch.long), r"slot_logits must be \(B, S, V\)"),
        ((2, 1, 5), torch.zeros(2, dtype=torch.long), r"targets must be \(B, K\)"),
        (
            (2, 1, 5),
            torch.zeros(3, 1, dtype=torch.long),
            "targets has 3 rows but slot_logits has batch size 2",
        ),
        ((2, 1, 5), torch.zeros(2, 1), "integer token ids"),
        ((2, 1, 5), torch.tensor([[5], [0]]), r"token ids in \[0, 5\) or -1"),
        ((2, 1, 5), torch.tensor([[-2], [0]]), r"token ids in \[0, 5\) or -1"),
    ],
)
def test_bow_loss_bad_inputs_raise(logits_shape, targets, match):
    with pytest.raises(ValueError, match=match):
        bow_loss(torch.zeros(logits_shape), targets)


# ---------------------------------------------------------------------------------------------
# the LM term: chunked_lm_loss / linear_cross_entropy, equal to the plain loss on the full logits
# without them
# ---------------------------------------------------------------------------------------------


def plain_lm_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """The plain path: next-token cross-entropy of the full (B, T, V) logits (the logits at t predict
    labels[:, t + 1]), in float32 for float16/bfloat16 logits, mean over the labelled targets."""
    V = logits.shape[-1]
    shift_logits = logits[:, :-1].reshape(-1, V)  # (B*(T-1), V)
    if shift_logits.dtype in (torch.float16, torch.bfloat16):
        shift_logits = shift_logits.float()
    shift_labels = labels[:, 1:].reshape(-1).long()  # (B*(T-1),)
    n_targets = (shift_labels != ignore_index).sum()
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index, reduction="sum")
    return total / n_targets.clamp(min=1)


def identity_lm_loss(logits: Tensor, labels: Tensor, **kwargs) -> Tensor:
    """chunked_lm_loss with an identity LM head: the hidden states are the logits."""
    return chunked_lm_loss(
        logits, torch.eye(logits.shape[-1], dtype=logits.dtype), labels, chunk_size=2, **kwargs
    )


def test_lm_loss_hand_computed():
    # logits[0, 0] = [0, 0, log 2] -> softmax [1/4, 1/4, 1/2]; predicts labels[0, 1] = 2: -log(1/2) = log 2
    # logits[0, 1] = [log 3, 0, 0] -> softmax [3/5, 1/5, 1/5]; predicts labels[0, 2] = 0: -log(3/5) = log(5/3)
    # logits[0, 2] predicts nothing; labels[0, 0] is never a target.
    # mean = (log 2 + log(5/3)) / 2 = log(10/3) / 2 = 0.601986402162968.
    logits = torch.tensor([[[0.0, 0.0, math.log(2)], [math.log(3), 0.0, 0.0], [9.0, -9.0, 0.0]]], dtype=F64)
    expected = math.log(10 / 3) / 2
    assert expected == pytest.approx(0.601986402162968, abs=1e-12)
    assert_close(identity_lm_loss(logits, torch.tensor([[-100, 2, 0]])), torch.tensor(expected, dtype=F64))
    # labels[0, 0] does not matter
    assert_close(identity_lm_loss(logits, torch.tensor([[1, 2, 0]])), torch.tensor(expected, dtype=F64))
    # ignoring position 1 leaves log(5/3) = 0.510825623765991
    assert_close(
        identity_lm_loss(logits, torch.tensor([[-100, -100, 0]])), torch.tensor(math.log(5 / 3), dtype=F64)
    )
    # a custom ignore_index
    assert_close(
        identity_lm_loss(logits, torch.tensor([[7, 7, 0]]), ignore_index=7),
        torch.tensor(math.log(5 / 3), dtype=F64),
    )
    assert_close(plain_lm_loss(logits, torch.tensor([[-100, 2, 0]])), torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("seed", SEEDS)
def test_lm_loss_matches_loop_reference_values_and_grads(seed: int):
    gen = torch.Generator().manual_seed(seed)
    B, T, V = 3, 5, 6
    logits = torch.randn(B, T, V, generator=gen, dtype=F64, requires_grad=True)
    labels = torch.randint(0, V, (B, T), generator=gen)
    labels[torch.rand(B, T, generator=gen) < 0.3] = -100
    labels[0, 1] = 2  # at least one target
    loss = identity_lm_loss(logits, labels)
    ref = ref_lm_loss(logits, labels)
    assert_close(loss, ref)
    assert_close(plain_lm_loss(logits, labels), ref)
    (g,) = torch.autograd.grad(loss, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert_close(g, g_ref)
    assert torch.count_nonzero(g[:, -1]) == 0  # the last position predicts nothing


def _lm_case(seed: int, dtype: torch.dtype, B: int = 3, T: int = 9, H: int = 6, V: int = 13, p_ignore=0.3):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=gen, dtype=dtype).requires_grad_()
    weight = torch.randn(V, H, generator=gen, dtype=dtype).requires_grad_()
    bias = torch.randn(V, generator=gen, dtype=dtype).requires_grad_()
    labels = torch.randint(0, V, (B, T), generator=gen)
    labels[torch.rand(B, T, generator=gen) < p_ignore] = -100
    labels[0, 1] = 3  # at least one target
    return hidden, weight, bias, labels


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_lm_loss_equals_plain_loss_values_and_grads(dtype, recompute, chunk_size, with_bias):
    hidden, weight, bias, labels = _lm_case(seed=chunk_size, dtype=dtype)
    b = bias if with_bias else None
    inputs = (hidden, weight, bias) if with_bias else (hidden, weight)
    ref = plain_lm_loss(F.linear(hidden, weight, b), labels)
    got = chunked_lm_loss(hidden, weight, labels, chunk_size=chunk_size, bias=b, recompute=recompute)
    assert got.dtype == ref.dtype
    assert_close(got, ref, **_tol(dtype))
    assert_close(torch.autograd.grad(got, inputs), torch.autograd.grad(ref, inputs), **_tol(dtype))


@pytest.mark.parametrize("recompute", [True, False])
def test_chunked_lm_loss_on_selected_rows_equals_full_layout(recompute):
    # The (N, H) layout: the caller passes only the states that predict a label (already shifted).
    hidden, weight, _, labels = _lm_case(seed=11, dtype=F64)
    full = chunked_lm_loss(hidden, weight, labels, chunk_size=5, recompute=recompute)
    keep = labels[:, 1:] != -100  # (B, T-1)
    rows = hidden[:, :-1][keep]  # (N, H)
    picked = chunked_lm_loss(rows, weight, labels[:, 1:][keep], chunk_size=5, recompute=recompute)
    assert_close(picked, full)
    assert_close(torch.autograd.grad(picked, (hidden, weight)), torch.autograd.grad(full, (hidden, weight)))
    # ignore_index inside the (N,) targets is skipped too
    targets = labels[:, 1:].reshape(-1)  # (B*(T-1),)
    flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (B*(T-1), H)
    assert_close(chunked_lm_loss(flat, weight, targets, chunk_size=5, recompute=recompute), full)


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("layout", ["3d", "2d", "2d-empty"])
def test_chunked_lm_loss_everything_ignored_is_exact_zero_with_zero_grads(recompute, layout):
    hidden, weight, bias, labels = _lm_case(seed=12, dtype=torch.float32)
    if layout == "3d":
        loss = chunked_lm_loss(hidden, weight, torch.full_like(labels, -100), bias=bias, recompute=recompute)
    elif layout == "2d":
        rows = hidden.reshape(-1, hidden.shape[-1])
        loss = chunked_lm_loss(rows, weight, torch.full(rows.shape[:1], -100), bias=bias, recompute=recompute)
    else:
        rows = hidden[:0, 0]  # (0, H)
        loss = chunked_lm_loss(rows, weight, torch.zeros(0, dtype=torch.long), bias=bias, recompute=recompute)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for x in (hidden, weight, bias):
        assert x.grad is not None and torch.isfinite(x.grad).all() and torch.count_nonzero(x.grad) == 0


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("recompute", [True, False])
def test_chunked_lm_loss_never_builds_more_than_one_slice_of_logits(recompute):
    B, T, H, V, chunk = 4, 16, 6, 400, 8  # V * H = 2400 < chunk * V = 3200
    hidden, weight, _, labels = _lm_case(seed=13, dtype=torch.float32, B=B, T=T, H=H, V=V, p_ignore=0.0)
    with _LargestTensor() as plain:
        plain_lm_loss(F.linear(hidden, weight), labels).backward()
    assert plain.largest >= B * T * V  # the plain path holds the (B, T, V) logits
    with _LargestTensor() as mode:
        chunked_lm_loss(hidden, weight, labels, chunk_size=chunk, recompute=recompute).backward()
    # the largest tensor is one (chunk, V) slice of logits (the (V, H) weight gradient is smaller here)
    assert mode.largest == chunk * V


def test_chunked_lm_loss_bfloat16_computes_logits_in_float32():
    hidden, weight, _, labels = _lm_case(seed=14, dtype=torch.float32, V=50)
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    ref = plain_lm_loss(h16 @ w16.T, labels)  # bf16 logits, upcast inside
    got = chunked_lm_loss(h16, w16, labels, chunk_size=4)
    assert got.dtype == torch.float32
    assert_close(got, ref)
    g_ref, g = torch.autograd.grad(ref, (h16, w16)), torch.autograd.grad(got, (h16, w16))
    assert g[0].dtype == g[1].dtype == torch.bfloat16
    assert_close(g, g_ref, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("recompute", [True, False])
def test_linear_cross_entropy_gradcheck_and_frozen_weight(recompute):
    gen = torch.Generator().manual_seed(15)
    h = torch.randn(5, 3, generator=gen, dtype=F64, requires_grad=True)
    w = torch.randn(7, 3, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(7, generator=gen, dtype=F64, requires_grad=True)
    y = torch.tensor([0, 6, -100, 2, 2])
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_cross_entropy(h, w, y, chunk_size=2, bias=b, recompute=recompute), (h, w, b)
    )
    # a frozen LM head (LoRA): only the hidden states get a gradient, equal to the plain one
    frozen = w.detach()
    got = linear_cross_entropy(h, frozen, y, chunk_size=2, recompute=recompute, reduction="sum")
    ref = F.cross_entropy(h @ frozen.T, y, reduction="sum")
    assert_close(got, ref)
    assert_close(torch.autograd.grad(got, h), torch.autograd.grad(ref, h))
    with torch.no_grad():  # no graph: the value alone
        assert_close(linear_cross_entropy(h, w, y, recompute=recompute), F.cross_entropy(h @ w.T, y))


@pytest.mark.parametrize(
    ("shapes", "labels", "kwargs", "match"),
    [
        (((2, 3, 4), (5, 4)), torch.zeros(2, 2, dtype=torch.long), {}, r"labels must be \(B, T\) = \(2, 3\)"),
        (((6, 4), (5, 4)), torch.zeros(5, dtype=torch.long), {}, r"labels must be \(N,\) = \(6,\)"),
        (((4,), (5, 4)), torch.zeros(4, dtype=torch.long), {}, r"hidden must be \(B, T, H\) or \(N, H\)"),
        (((6, 4), (5, 3)), torch.zeros(6, dtype=torch.long), {}, r"weight must be \(V, H\) with H = 4"),
        (((6, 4), (5, 4)), torch.full((6,), 5), {}, r"token ids in \[0, 5\) or -100"),
        (((6, 4), (5, 4)), torch.zeros(6), {}, "integer token ids"),
        (((6, 4), (5, 4)), torch.zeros(6, dtype=torch.long), {"chunk_size": 0}, "chunk_size must be >= 1"),
        (
            ((6, 4), (5, 4)),
            torch.zeros(6, dtype=torch.long),
            {"bias": torch.zeros(4)},
            r"bias must be \(V,\)",
        ),
    ],
)
def test_chunked_lm_loss_bad_inputs_raise(shapes, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        chunked_lm_loss(torch.zeros(shapes[0]), torch.zeros(shapes[1]), labels, **kwargs)


# ---------------------------------------------------------------------------------------------
# info_nce
# ---------------------------------------------------------------------------------------------


def test_info_nce_hand_computed():
    # tau = 0.5, group_size 2: query 0's positive is p[0], query 1's is p[2].
    # q0 = [1, 0]: scores [1, 0, 0, 1] / 0.5 = [2, 0, 0, 2]; loss0 = log(2e^2 + 2) - 2
    #    = log(16.778112197861297) - 2 = 0.820075191602918
    # q1 = [0, 1]: scores [0, 1, 1, 1] / 0.5 = [0, 2, 2, 2]; loss1 = log(1 + 3e^2) - 2
    #    = log(23.167168296791950) - 2 = 1.142736116767145
    # mean = 0.981405654185031
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    expected = (math.log(2 * math.e**2 + 2) - 2 + math.log(1 + 3 * math.e**2) - 2) / 2
    assert expected == pytest.approx(0.981405654185031, abs=1e-12)
    assert_close(info_nce(q, p, temperature=0.5, group_size=2), torch.tensor(expected, dtype=F64))
    # q_offset 1 with q1 alone: its positive is p[(1 + 0) * 2] = p[2], same loss1
    assert_close(
        info_nce(q[1:], p, temperature=0.5, group_size=2, q_offset=1),
        torch.tensor(math.log(1 + 3 * math.e**2) - 2, dtype=F64),
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("B", "group_size", "n_extra_groups", "q_offset"),
    [
        (3, 1, 0, 0),  # in-batch negatives only
        (3, 4, 0, 0),  # positive + 3 hard negatives each
        (2, 3, 3, 0),  # extra passages after the local ones
        (2, 3, 3, 2),  # local queries in the middle (as on rank 1 of a cross-device batch)
        (2, 3, 3, 3),  # local queries at the end
    ],
)
def test_info_nce_matches_loop_reference_values_and_grads(seed, B, group_size, n_extra_groups, q_offset):
    gen = torch.Generator().manual_seed(seed)
    H = 4
    N = (B + n_extra_groups) * group_size
    q = torch.randn(B, H, generator=gen, dtype=F64, requires_grad=True)
    p = torch.randn(N, H, generator=gen, dtype=F64, requires_grad=True)
    loss = info_nce(q, p, 0.2, group_size, q_offset=q_offset)
    ref = ref_info_nce(q, p, 0.2, group_size, q_offset=q_offset)
    assert_close(loss, ref)
    grads = torch.autograd.grad(loss, (q, p))
    grads_ref = torch.autograd.grad(ref, (q, p))
    assert_close(grads, grads_ref)


def test_info_nce_gradcheck():
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    p = torch.randn(6, 3, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, 0.3, 2, q_offset=1), (q, p))


@pytest.mark.parametrize(
    ("q_shape", "p_shape", "kwargs", "match"),
    [
        ((2,), (4, 3), {}, r"q must be \(B, H\)"),
        ((2, 3), (4, 3, 1), {}, r"p must be \(N, H\)"),
        ((2, 3), (4, 5), {}, "same hidden size, got 3 and 5"),
        ((2, 3), (4, 3), {"group_size": 0}, "group_size must be >= 1"),
        ((2, 3), (4, 3), {"temperature": 0.0}, "temperature must be > 0"),
        ((2, 3), (4, 3), {"q_offset": -1}, "q_offset must be >= 0"),
        ((2, 3), (5, 3), {}, "5 is not a multiple of group_size 2"),
        ((3, 3), (4, 3), {}, "need at least 6"),
        ((2, 3), (6, 3), {"q_offset": 2}, "need at least 8"),
    ],
)
def test_info_nce_bad_inputs_raise(q_shape, p_shape, kwargs, match):
    args = {"temperature": 0.1, "group_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        info_nce(torch.zeros(q_shape), torch.zeros(p_shape), **args)


# ---------------------------------------------------------------------------------------------
# cross-device
# ---------------------------------------------------------------------------------------------


def test_cross_device_without_process_group_is_an_error():
    assert not (dist.is_available() and dist.is_initialized())
    q, p = torch.randn(3, 4), torch.randn(6, 4)
    with pytest.raises(RuntimeError, match="need an initialised torch.distributed process group"):
        info_nce_cross_device(q, p, 0.1, 2)
    with pytest.raises(RuntimeError, match="need an initialised torch.distributed process group"):
        gather_keep_local(p)
    with pytest.raises(ValueError, match=r"p \(B \* group_size, H\) with group_size 4"):
        info_nce_cross_device(q, p, 0.1, 4)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_gloo(rank: int, world_size: int, port: int) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_cross_device_world_size_one_equals_info_nce():
    _init_gloo(0, 1, _free_port())
    try:
        gen = torch.Generator().manual_seed(8)
        q = torch.randn(3, 4, generator=gen, dtype=F64, requires_grad=True)
        p = torch.randn(6, 4, generator=gen, dtype=F64, requires_grad=True)
        assert gather_keep_local(p) is p
        loss, ref = info_nce_cross_device(q, p, 0.1, 2), info_nce(q, p, 0.1, 2)
        assert_close(loss, ref)
        assert_close(torch.autograd.grad(loss, (q, p)), torch.autograd.grad(ref, (q, p)))
    finally:
        dist.destroy_process_group()


def _cross_device_worker(rank: int, world_size: int, port: int) -> None:
    """One rank of a DDP run of a tiny shared encoder with cross-device negatives, compared with one
    process running plain `info_nce` over the concatenated batch (the same encoder and weights).

    Relations checked exactly (the released code's semantics, `BiEncoderModel._dist_gather_tensor`):
      * every rank's loss = the single-process loss over the concatenated batch;
      * the gradient of this rank's own q and p rows = the single-process gradient of those rows;
      * the parameter gradient after DDP's averaging = the single-process gradient / world_size,
        not the single-process gradient (each rank backpropagates only through its own slot).
    """
    torch.set_num_threads(1)
    _init_gloo(rank, world_size, port)
    try:
        B, G, D, H, tau = 2, 3, 5, 4, 0.1
        gen = torch.Generator().manual_seed(1234)  # every rank builds the same global batch and encoder
        xq_all = torch.randn(world_size * B, D, generator=gen, dtype=F64)
        xp_all = torch.randn(world_size * B * G, D, generator=gen, dtype=F64)
        encoder = torch.nn.Linear(D, H, dtype=F64)
        with torch.no_grad():
            encoder.weight.copy_(torch.randn(H, D, generator=gen, dtype=F64))
            encoder.bias.copy_(torch.randn(H, generator=gen, dtype=F64))
        single = copy.deepcopy(encoder)

        ddp = torch.nn.parallel.DistributedDataParallel(encoder)
        xq = xq_all[rank * B : (rank + 1) * B]
        xp = xp_all[rank * B * G : (rank + 1) * B * G]
        emb = ddp(torch.cat([xq, xp]))  # (B + B * G, H), one forward per step as DDP expects
        q, p = emb[:B], emb[B:]  # (B, H), (B * G, H)
        q.retain_grad()
        p.retain_grad()
        assert_close(gather_keep_local(p).detach(), single(xp_all).detach())
        loss = info_nce_cross_device(q, p, tau, G)
        loss.backward()  # DDP all-reduces and averages the parameter gradients here

        q_ref, p_ref = single(xq_all), single(xp_all)  # (W * B, H), (W * B * G, H)
        q_ref.retain_grad()
        p_ref.retain_grad()
        ref = info_nce(q_ref, p_ref, tau, G)
        ref.backward()
        assert_close(loss.detach(), ref.detach())
        assert_close(q.grad, q_ref.grad[rank * B : (rank + 1) * B])
        assert_close(p.grad, p_ref.grad[rank * B * G : (rank + 1) * B * G])
        for name, param in encoder.named_parameters():
            ref_grad = dict(single.named_parameters())[name].grad
            assert_close(param.grad, ref_grad / world_size)
            assert not torch.allclose(param.grad, ref_grad), name
        dist.barrier()  # neither rank tears the group down while the other still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.extended
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_info_nce_cross_device_two_processes_gloo():
    world_size = 2
    mp.spawn(_cross_device_worker, args=(world_size, _free_port()), nprocs=world_size, join=True)


# ---------------------------------------------------------------------------------------------
# combine_adaptation_losses
# ---------------------------------------------------------------------------------------------


def test_combine_adaptation_losses_joint_with_lm():
    ebae, ebar, lm = torch.tensor(0.4), torch.tensor(0.2), torch.tensor(3.0)
    out = combine_adaptation_losses(ebae, ebar, lm, lm_weight=0.5)
    assert set(out) == {"loss", "bow_ebae", "bow_ebar", "lm"}
    assert_close(out["loss"], torch.tensor((0.4 + 0.2) / 2 + 0.5 * 3.0))
    assert out["bow_ebae"] is ebae and out["bow_ebar"] is ebar and out["lm"] is lm


def test_combine_adaptation_losses_single_part_and_no_lm():
    ebae, lm = torch.tensor(0.4), torch.tensor(3.0)
    out = combine_adaptation_losses(ebae, None, None, lm_weight=0.0)
    assert set(out) == {"loss", "bow_ebae"}
    assert_close(out["loss"], ebae)
    out = combine_adaptation_losses(None, ebae, lm, lm_weight=1.0)
    assert set(out) == {"loss", "bow_ebar", "lm"}
    assert_close(out["loss"], torch.tensor(3.4))
    # lm given with weight 0: logged, not added
    out = combine_adaptation_losses(ebae, None, lm, lm_weight=0.0)
    assert_close(out["loss"], ebae)
    assert out["lm"] is lm
    # lm only
    assert_close(combine_adaptation_losses(None, None, lm, lm_weight=2.0)["loss"], torch.tensor(6.0))


def test_combine_adaptation_losses_keeps_graph():
    x = torch.tensor([0.3, 0.7, 2.0], requires_grad=True)
    out = combine_adaptation_losses(x[0], x[1], x[2], lm_weight=0.25)
    out["loss"].backward()
    assert_close(x.grad, torch.tensor([0.5, 0.5, 0.25]))


def test_combine_adaptation_losses_bad_inputs_raise():
    one = torch.tensor(1.0)
    with pytest.raises(ValueError, match="no lm loss was given"):
        combine_adaptation_losses(one, one, None, lm_weight=1.0)
    with pytest.raises(ValueError, match="nothing to train"):
        combine_adaptation_losses(None, None, one, lm_weight=0.0)
    with pytest.raises(ValueError, match="lm_weight must be >= 0"):
        combine_adaptation_losses(one, None, one, lm_weight=-1.0)
