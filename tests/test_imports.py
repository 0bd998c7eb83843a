"""Import hygiene: the light modules never load the heavy optional packages (DeepSpeed, faiss, bm25s,
pandas, datasets, pytrec_eval, sentence-transformers); those are imported inside the functions that
use them. Each check runs in a fresh interpreter, since this test process has imported them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("deepspeed", "faiss", "bm25s", "pandas", "datasets", "pytrec_eval", "sentence_transformers")


def loaded_after(modules: list[str], probe: tuple[str, ...] = HEAVY) -> list[str]:
    """The `probe` packages present in sys.modules of a fresh interpreter after importing `modules`."""
    code = "".join(f"import {m}\n" for m in modules) + (
        f"import json, sys; print(json.dumps([h for h in {list(probe)!r} if h in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


LIGHT = ["llara", "llara.losses", "llara.prompts", "llara.masks", "llara.flex", "llara.rows", "llara.hfpairs"]


def test_light_modules_load_no_heavy_package():
    # one interpreter for all: imports only add to sys.modules, so none of them loads one either
    assert loaded_after(LIGHT) == []


def test_the_check_sees_a_heavy_import():
    # the probe itself works: importing one of them directly is seen
    assert loaded_after(["pandas"]) == ["pandas"]


# scoring, BM25 and mining run where no GPU stack is installed: they, the formats they read (runs,
# shards) and the BEIR loader they call import neither faiss nor torch, directly or through another module
EVAL_LIGHT = ["llara.score", "llara.bm25", "llara.mine", "llara.runs", "llara.shards", "llara.beir"]


def test_score_bm25_and_mine_load_neither_faiss_nor_torch():
    assert loaded_after(EVAL_LIGHT, probe=("faiss", "torch")) == []


def test_the_check_sees_faiss_through_an_import():
    assert loaded_after(["llara.search"], probe=("faiss", "torch")) == ["faiss"]
