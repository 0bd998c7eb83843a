"""Training rows from JSONL: streamed validation with errors that name file, line and field.

The file is checked line by line first (nothing held in memory), then loaded memory-mapped with
Hugging Face ``datasets`` so a 10M-row pre-training file does not have to fit in RAM.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

from llara.io import DataError, iter_jsonl

PRETRAIN_FIELDS = {"input": str, "output_summarize": str, "output_predict": str}
FINETUNE_FIELDS = {"query": str, "pos": list, "neg": list}


class RowError(DataError):
    """A training file has a row we cannot use; the message names the file, line and fix."""


def validate_jsonl(path: str | Path, fields: dict[str, type]) -> int:
    """Check every line of ``path`` is a JSON object with ``fields`` of the right type; return the count."""
    count = 0
    for lineno, row in iter_jsonl(path):
        for name, kind in fields.items():
            if name not in row:
                raise RowError(
                    f"{path}:{lineno}: row has no field {name!r} (needs {', '.join(fields)}; has {', '.join(row)})"
                )
            if not isinstance(row[name], kind):
                raise RowError(
                    f"{path}:{lineno}: field {name!r} must be a {kind.__name__}, got {type(row[name]).__name__}"
                )
            if kind is list and not all(isinstance(x, str) for x in row[name]):
                raise RowError(f"{path}:{lineno}: field {name!r} must be a list of strings")
        count += 1
    if count == 0:
        raise RowError(f"{path}: no rows; the file is empty")
    return count


def load_rows(path: str | Path, fields: dict[str, type], max_rows: int | None = None) -> datasets.Dataset:
    """Validated rows of ``path`` as a ``datasets.Dataset`` with exactly ``fields`` as columns."""
    import datasets  # heavy (pyarrow, pandas): imported only where used

    validate_jsonl(path, fields)
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    ds = ds.select_columns(list(fields))
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    return ds
