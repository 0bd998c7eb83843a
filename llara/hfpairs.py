"""Fine-tuning rows from a Hugging Face dataset in Tevatron's layout (MS MARCO with hard negatives).

``python -m llara.hfpairs --dataset Tevatron/msmarco-passage --split train --output train.jsonl``

Tevatron's training sets (``Tevatron/msmarco-passage``, ``Tevatron/msmarco-passage-aug``) hold rows
``{query_id, query, positive_passages: [{docid, title, text}], negative_passages: [...]}``; each becomes
``{query, pos: [...], neg: [...]}`` with title and text joined as BEIR does. A local folder or
JSONL/parquet file in that layout works the same way (``--dataset path/to/file.jsonl``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

from llara.io import DataError, atomic_write_jsonl, write_config

FIELDS = ("query", "positive_passages", "negative_passages")


def passage_text(p: dict[str, Any]) -> str:
    title, text = (p.get("title") or "").strip(), (p.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


def load_source(name: str, split: str, streaming: bool) -> datasets.Dataset:
    import datasets  # heavy (pyarrow, pandas): imported only where used

    path = Path(name)
    if path.is_file():
        kind = "parquet" if path.suffix == ".parquet" else "json"
        return datasets.load_dataset(kind, data_files=str(path), split=split, streaming=streaming)
    return datasets.load_dataset(name, split=split, streaming=streaming)


def convert(rows, max_rows: int | None = None, max_negs: int | None = None) -> Iterator[dict[str, Any]]:
    """Tevatron rows -> {query, pos, neg}; rows without a positive are skipped."""
    for i, row in enumerate(rows):
        if max_rows is not None and i >= max_rows:
            return
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise DataError(f"row {i}: no field {', '.join(missing)}; expected Tevatron's layout {FIELDS}")
        pos = [passage_text(p) for p in row["positive_passages"]]
        if not pos:
            continue
        neg = [passage_text(p) for p in row["negative_passages"]][:max_negs]
        yield {"query": row["query"], "pos": pos, "neg": neg}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.hfpairs", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="hub id (e.g. Tevatron/msmarco-passage) or a local file")
    p.add_argument("--split", default="train")
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--max-negs", type=int, default=None)
    p.add_argument("--output", required=True, type=Path)
    a = p.parse_args(argv)
    try:
        source = load_source(a.dataset, a.split, streaming=not Path(a.dataset).exists())
        rows = list(convert(source, a.max_rows, a.max_negs))
        if not rows:
            raise DataError("no row with a positive passage")
        atomic_write_jsonl(a.output, rows)
    except DataError as err:
        print(f"error: {a.dataset}: {err}", file=sys.stderr)
        return 1
    write_config(a.output, {**{k: str(v) for k, v in vars(a).items()}, "rows": len(rows)})
    print(f"{a.output}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
