"""Learning curves of contrastive fine-tuning on the default grid's data: which knobs matter.

A plain PyTorch loop over the pieces ``llara.finetune`` uses (``GroupDataset``, ``PairCollator``,
``LlaraModel.contrastive_loss``, AdamW, linear warm-up 10% then linear decay, gradient clipping
at 1.0), scoring NDCG@10 on a BEIR split every ``--every`` steps (``llara.score``), so one run gives
a curve instead of one point. It is a tuning tool, not the fine-tuning stage: its numbers track
``python -m llara.finetune`` with the same settings but do not equal it (another data order).

    python bench/finetune_knobs.py --model results/adapt/released/none/seed0/model \\
        --train results/finetune_data/bm25/seed0/synthetic-pretrain-train.jsonl \\
        --beir resources/synthetic/beir --steps 150 --batch 32 --group 2 --temperature 0.01

Prints one JSON line per evaluation (step, mean loss since the last one, NDCG@10, seconds).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import numpy as np
import torch

from llara.beir import join_title_text, load_beir
from llara.finetune import GroupDataset, PairCollator
from llara.model import LlaraModel
from llara.rows import FINETUNE_FIELDS, load_rows
from llara.score import score
from llara.search import search_exact, to_run


def ndcg10(model: LlaraModel, beir, top_k: int = 100) -> float:
    doc_ids = list(beir.corpus)
    passages = model.encode([join_title_text(**beir.corpus[d]) for d in doc_ids], "passage", batch_size=128)
    qids = list(beir.queries)
    queries = model.encode([beir.queries[q] for q in qids], "query", batch_size=128)
    scores, indices = search_exact(queries.numpy(), passages.numpy(), top_k)  # the search stage's exact top-k
    return score(beir.qrels, to_run(qids, doc_ids, scores, indices))["metrics"]["ndcg@10"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="an adapted checkpoint (llara.adapt output)")
    p.add_argument("--train", required=True, help="fine-tuning rows {query, pos, neg} (llara.mine output)")
    p.add_argument("--beir", required=True, help="BEIR folder to score")
    p.add_argument("--split", default="test")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=32, help="queries per step")
    p.add_argument("--group", type=int, default=2, help="passages per query: the positive + negatives")
    p.add_argument("--temperature", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = LlaraModel.from_pretrained(a.model, head=False, allow_untrained_slots=True)
    beir = load_beir(a.beir, a.split)
    rows = load_rows(a.train, FINETUNE_FIELDS)
    data, collate = GroupDataset(rows, a.group, a.seed), PairCollator(model)
    opt = torch.optim.AdamW(model.model.parameters(), lr=a.lr, weight_decay=0.0)
    warm = max(1, round(0.1 * a.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (a.steps - s) / max(1, a.steps - warm)))
    )
    rng, order, losses, start = random.Random(a.seed), [], [], time.time()
    print(json.dumps({"args": vars(a), "step": 0, "ndcg@10": round(ndcg10(model, beir), 4)}), flush=True)
    model.model.train()
    for step in range(1, a.steps + 1):
        if len(order) < a.batch:  # a new epoch: reshuffle, resample the negatives
            data.epoch += 1
            epoch = list(range(len(rows)))
            rng.shuffle(epoch)
            order += epoch
        batch = collate([data[i] for i in order[: a.batch]])
        order = order[a.batch :]
        out = model.contrastive_loss(
            batch["queries"], batch["passages"], temperature=a.temperature, group_size=a.group
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(out.loss.item())
        if step % a.every == 0 or step == a.steps:
            nd = ndcg10(model, beir)
            model.model.train()
            line = {
                "step": step,
                "loss": round(float(np.mean(losses[-a.every :])), 4),
                "ndcg@10": round(nd, 4),
            }
            print(json.dumps({**line, "seconds": round(time.time() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
