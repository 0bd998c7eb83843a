"""Small shared I/O helpers: atomic writes, JSONL reading with located errors, provenance.

Every artifact of the evaluation stages is written through :func:`atomic_path`: the bytes go to a
temporary name in the destination folder and are renamed into place with :func:`os.replace` only
once complete, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


class DataError(ValueError):
    """A bad input file; the message names the file (and line) and says how to fix it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` is appended to the temporary name (numpy's ``save`` wants a ``.npy`` ending).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its files are mode 0600; a file created by open() follows the umask like any other
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)
    return Path(path)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_shareable_dir(path: str | os.PathLike) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (mode 0700) the usual mode for the umask."""
    os.chmod(path, 0o777 & ~current_umask())


def config_path_for(path: str | os.PathLike) -> Path:
    """Where the resolved arguments of an artifact live: ``<artifact>.config.json``."""
    path = Path(path)
    return path.with_name(path.name + ".config.json")


def write_config(path: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write the resolved arguments of the stage that produced ``path`` beside it."""
    return atomic_write_json(config_path_for(path), jsonable(config))


def jsonable(obj: Any) -> Any:
    """Paths -> str, tuples -> lists, numpy scalars -> Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    Raises :class:`DataError` naming the file and line for malformed JSON or a non-object line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno}); "
                    "each line must be one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def git_commit(repo_dir: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout holding this package (``+dirty`` when modified), or None."""
    repo_dir = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = commit.stdout.strip()
    return sha + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")


def code_version() -> dict[str, str | None]:
    from llara import __version__

    return {"llara": __version__, "git_commit": git_commit()}


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
