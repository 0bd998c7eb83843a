"""Import hygiene: the light modules never load the heavy optional packages (DeepSpeed, faiss, bm25s,
pandas, datasets, pytrec_eval, sentence-transformers); those are imported inside the functions that
use them. Each check runs in a fresh interpreter, since this test process has imported them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("deepspeed", "faiss", "bm25s", "pandas", "datasets", "pytrec_eval", "sentence_transformers")


def loaded_after(modules: list[str]) -> list[str]:
    """The HEAVY packages present in sys.modules of a fresh interpreter after importing `modules`."""
    code = "".join(f"import {m}\n" for m in modules) + (
        f"import json, sys; print(json.dumps([h for h in {list(HEAVY)!r} if h in sys.modules]))"
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
