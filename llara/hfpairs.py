"""Fine-tuning rows from a Hugging Face dataset in Tevatron's layout (MS MARCO with hard negatives).

``python -m llara.hfpairs --dataset Tevatron/msmarco-passage --split train --output train.jsonl``

Tevatron's training sets (``Tevatron/msmarco-passage``, ``Tevatron/msmarco-passage-aug``) hold rows
``{query_id, query, positive_passages: [{docid, title, text}], negative_passages: [...]}``; each becomes
``{query, pos: [...], neg: [...]}`` with title and text joined as BEIR does. A local JSONL or parquet
file in that layout works the same way (``--dataset path/to/file.jsonl``; ``--split`` is then
ignored), and so does a local dataset folder. A bad row is named by its file and line (or row).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llara.io import DataError, atomic_write_jsonl, cli_main, iter_jsonl, write_config

FIELDS = ("query", "positive_passages", "negative_passages")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def passage_text(p: dict[str, Any]) -> str:
    title, text = (p.get("title") or "").strip(), (p.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"{path}: not a readable parquet file ({exc}); expected Tevatron's layout {FIELDS}"
        ) from None
    index = 0
    for batch in pf.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            yield f"{path}: row {index}", row
            index += 1


def _iter_datasets(
    name: str, split: str, streaming: bool, **kwargs: Any
) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets  # heavy (pyarrow, pandas): imported only where used

    try:
        rows = datasets.load_dataset(name, split=split, streaming=streaming, **kwargs)
        for index, row in enumerate(rows):
            yield f"{name}: row {index}", row
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"{name}: cannot load split {split!r} ({why}); give a hub id such as Tevatron/msmarco-passage "
            "(online, or in the local cache with HF_HUB_OFFLINE=1) or a local .jsonl/.parquet file"
        ) from None


def load_source(name: str, split: str, streaming: bool) -> Iterable[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each row of a local JSONL/parquet file, a local dataset folder or a hub
    dataset; ``where`` names the file and line (or the dataset and row) for error messages."""
    path = Path(name)
    if path.is_file():
        if path.suffix == ".jsonl":
            return ((f"{path}:{lineno}", obj) for lineno, obj in iter_jsonl(path))
        if path.suffix == ".parquet":
            return _iter_parquet(path)
        if path.suffix == ".json":
            return _iter_datasets("json", "train", False, data_files=str(path))
        raise DataError(
            f"{path}: unknown format {path.suffix!r}; give a .jsonl or .parquet file, or a hub id"
        )
    if not path.exists() and (path.suffix in FILE_SUFFIXES or path.is_absolute() or name.startswith(".")):
        raise DataError(
            f"{name}: file not found; give an existing .jsonl/.parquet file or a hub id such as "
            "Tevatron/msmarco-passage"
        )
    return _iter_datasets(name, split, streaming)


def _passages(where: str, row: dict[str, Any], key: str) -> list[str]:
    passages = row[key]
    if not isinstance(passages, list) or not all(isinstance(p, dict) for p in passages):
        raise DataError(f"{where}: field {key!r} must be a list of {{docid, title, text}} objects")
    return [passage_text(p) for p in passages]


def convert(rows, max_rows: int | None = None, max_negs: int | None = None) -> Iterator[dict[str, Any]]:
    """Tevatron rows (dicts, or ``(where, row)`` pairs as :func:`load_source` gives) -> {query, pos,
    neg}; rows without a positive are skipped."""
    for i, item in enumerate(rows):
        if max_rows is not None and i >= max_rows:
            return
        where, row = item if isinstance(item, tuple) else (f"row {i}", item)
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise DataError(f"{where}: no field {', '.join(missing)}; expected Tevatron's layout {FIELDS}")
        if not isinstance(row["query"], str):
            raise DataError(f"{where}: field 'query' must be a string, got {type(row['query']).__name__}")
        pos = _passages(where, row, "positive_passages")
        if not pos:
            continue
        neg = _passages(where, row, "negative_passages")[:max_negs]
        yield {"query": row["query"], "pos": pos, "neg": neg}


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.hfpairs", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="hub id (e.g. Tevatron/msmarco-passage) or a local file")
    p.add_argument("--split", default="train")
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--max-negs", type=int, default=None)
    p.add_argument("--output", required=True, type=Path)
    a = p.parse_args(argv)
    source = load_source(a.dataset, a.split, streaming=not Path(a.dataset).exists())
    rows = list(convert(source, a.max_rows, a.max_negs))
    if not rows:
        raise DataError(
            f"{a.dataset}: no row with a positive passage (an empty file, or every positive_passages "
            "list is empty); give rows in Tevatron's layout"
        )
    atomic_write_jsonl(a.output, rows)
    write_config(a.output, {**{k: str(v) for k, v in vars(a).items()}, "rows": len(rows)})
    print(f"{a.output}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
