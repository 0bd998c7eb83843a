"""Tevatron-layout rows (MS MARCO with hard negatives) -> fine-tuning JSONL."""

from __future__ import annotations

import json

from conftest import write_jsonl

from llara.hfpairs import main
from llara.rows import FINETUNE_FIELDS, validate_jsonl


def tevatron_row(i: int, n_pos: int = 1) -> dict:
    return {
        "query_id": str(i),
        "query": f"what is {i}",
        "positive_passages": [{"docid": f"p{i}", "title": "Title", "text": f"answer {i}"}][:n_pos],
        "negative_passages": [{"docid": f"n{i}-{j}", "title": "", "text": f"other {j}"} for j in range(3)],
    }


def test_converts_local_file_in_tevatron_layout(tmp_path):
    src = write_jsonl(tmp_path / "tev.jsonl", [tevatron_row(0), tevatron_row(1, n_pos=0), tevatron_row(2)])
    out = tmp_path / "train.jsonl"
    assert main(["--dataset", str(src), "--output", str(out), "--max-negs", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"query": "what is 0", "pos": ["Title answer 0"], "neg": ["other 0", "other 1"]}
    assert len(rows) == 2  # the row without a positive is skipped
    assert validate_jsonl(out, FINETUNE_FIELDS) == 2


def test_wrong_layout_is_named(tmp_path, capsys):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "pos": ["p"], "neg": []}])
    assert main(["--dataset", str(src), "--output", str(tmp_path / "o.jsonl")]) == 1
    assert "positive_passages" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
