"""Training rows from JSONL: streamed validation with errors that name file, line and field.

The file is checked line by line first (nothing held in memory), then loaded memory-mapped with
Hugging Face ``datasets`` so a 10M-row pre-training file does not have to fit in RAM. Rows whose
training text is empty (``input``, ``query`` or an item of ``pos``) are named in a warning
(:func:`llara.io.warn_data`); a file where more than half the rows have one is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

from llara.io import DataError, format_ids, iter_jsonl, warn_data

PRETRAIN_FIELDS = {"input": str, "output_summarize": str, "output_predict": str}
FINETUNE_FIELDS = {"query": str, "pos": list, "neg": list}
TEXT_FIELDS = ("input", "query", "pos")  # the texts a row trains on: empty ones are warned about


class RowError(DataError):
    """A training file has a row we cannot use; the message names the file, line and fix."""


def validate_jsonl(path: str | Path, fields: dict[str, type]) -> int:
    """Check every line of ``path`` is a JSON object with ``fields`` of the right type; return the count.

    Rows with an empty training text (:data:`TEXT_FIELDS`) are warned about with their line numbers;
    more than half of the rows is a :class:`RowError`."""
    count = 0
    empty: list[int] = []  # line numbers
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
        if any(_has_empty_text(row[name]) for name in TEXT_FIELDS if name in fields):
            empty.append(lineno)
        count += 1
    if count == 0:
        raise RowError(f"{path}: no rows; the file is empty")
    checked = ", ".join(repr(name) for name in TEXT_FIELDS if name in fields)
    if 2 * len(empty) > count:
        raise RowError(
            f"{path}: {len(empty)} of {count} rows have an empty text ({checked}; lines "
            f"{format_ids(empty)}); the file is mostly empty: rebuild it"
        )
    if empty:
        warn_data(
            f"{path}: {len(empty)} of {count} rows have an empty text ({checked}; lines {format_ids(empty)})"
        )
    return count


def _has_empty_text(value: str | list[str]) -> bool:
    texts = [value] if isinstance(value, str) else value
    return any(not t.strip() for t in texts)


def load_rows(path: str | Path, fields: dict[str, type], max_rows: int | None = None) -> datasets.Dataset:
    """Validated rows of ``path`` as a ``datasets.Dataset`` with exactly ``fields`` as columns."""
    import datasets  # heavy (pyarrow, pandas): imported only where used

    validate_jsonl(path, fields)
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    ds = ds.select_columns(list(fields))
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    return ds
