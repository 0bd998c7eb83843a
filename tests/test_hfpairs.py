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
    assert main(["--dataset", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert f"error: {src}:1: no field positive_passages, negative_passages" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_local_parquet_and_located_errors(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "tev.parquet"
    pq.write_table(pa.Table.from_pylist([tevatron_row(0), tevatron_row(1)]), src)
    out = tmp_path / "train.jsonl"
    assert main(["--dataset", str(src), "--output", str(out)]) == 0
    assert [json.loads(line)["query"] for line in out.read_text().splitlines()] == ["what is 0", "what is 1"]
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [tevatron_row(0), {**tevatron_row(1), "positive_passages": "x"}]
    )
    assert main(["--dataset", str(bad), "--output", str(out)]) == 2
    assert f"{bad}:2: field 'positive_passages' must be a list" in capsys.readouterr().err
    missing = tmp_path / "nope.jsonl"  # a file name, not a hub id: no network look-up
    assert main(["--dataset", str(missing), "--output", str(out)]) == 2
    assert f"error: {missing}: file not found" in capsys.readouterr().err
