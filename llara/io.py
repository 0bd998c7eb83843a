"""Small shared I/O helpers: atomic writes, text/JSONL reading with located errors, provenance.

Every artifact of the evaluation stages is written through :func:`atomic_path`: the bytes go to a
temporary name in the destination folder and are renamed into place with :func:`os.replace` only
once complete, so a crash never leaves a half-written file under the final name. A symbolic link is
followed (its target is replaced, the link stays); a stream (``-`` = stdout, a FIFO, a device) is
written to, never replaced, and receives the bytes only once they are complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


class DataError(ValueError):
    """A bad input file; the message names the file (and line) and says how to fix it."""


BAD_INPUT = 2  # the exit status of every stage CLI for bad input (docs/architecture.md)
PREEMPTED = 75  # a training stage saved at a signal and stopped: requeue it (sysexits EX_TEMPFAIL)


def cli_main(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a stage's ``main(argv=None)``: a :class:`DataError` that escapes it (bad input; its
    message names the file, the line or key, and the fix) is printed as one ``error: ...`` line on
    stderr and the CLI exits with :data:`BAD_INPUT`, never with a traceback; Ctrl-C prints
    ``interrupted`` and exits 130."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return BAD_INPUT
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


class DataWarning(UserWarning):
    """Input that is valid but probably not what was meant (empty texts, queries that match nothing)."""


def format_ids(ids: Iterable[str], limit: int = 20) -> str:
    """``a, b, c`` (the first ``limit`` ids, then ``... and N more``)."""
    ids = list(ids)
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f" ... and {len(ids) - limit} more" if len(ids) > limit else "")


def warn_data(message: str) -> None:
    """Issue a :class:`DataWarning` (shown as ``warning: ...`` by the CLIs, see :func:`cli_warnings`)."""
    warnings.warn(message, DataWarning, stacklevel=3)


@contextlib.contextmanager
def cli_warnings() -> Iterator[None]:
    """Within a CLI: print each :class:`DataWarning` once as ``warning: <message>`` on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    previous = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        yield


_FD_LINK = re.compile(r"/proc/[^/]+/fd/(\d+)|/dev/fd/(\d+)|/dev/std(out|err)")
_MAX_LINKS = 40


def output_target(path: str | os.PathLike) -> tuple[str, Path]:
    """Where a write to ``path`` goes: ``("file", real path)`` or ``("stream", path)``.

    Symbolic links are followed to their target (a dangling link names the file to create). ``-``, a
    FIFO, a device, a socket, and a name that reaches an open descriptor (``/dev/stdout``,
    ``/dev/fd/N``, ``/proc/self/fd/N``) are streams: they are written to, never replaced.
    """
    if os.fspath(path) == "-":
        return "stream", Path("-")
    p = Path(os.path.abspath(path))
    for _ in range(_MAX_LINKS):
        p = Path(os.path.realpath(p.parent)) / p.name  # links in the folders
        if _FD_LINK.fullmatch(str(p)):
            return "stream", p
        if not p.is_symlink():
            break
        p = p.parent / os.readlink(p)  # an absolute target replaces the whole path
    else:
        raise DataError(f"{path}: more than {_MAX_LINKS} levels of symbolic links; point it at a file")
    if p.is_dir():
        raise DataError(f"{path}: is a folder; pass a file name")
    if p.exists() and not p.is_file():
        return "stream", p
    return "file", p


def is_stream(path: str | os.PathLike) -> bool:
    """True for ``-``, a FIFO, a device, or a descriptor name (see :func:`output_target`)."""
    return output_target(path)[0] == "stream"


@contextlib.contextmanager
def _open_stream(target: Path) -> Iterator[Any]:
    """A binary file object writing to a stream target, positioned where its writer left off."""
    match = _FD_LINK.fullmatch(str(target))
    fd: int | None = None
    if str(target) == "-":
        fd = 1
    elif match is not None:
        pid_part = str(target).split("/")[2] if str(target).startswith("/proc/") else "self"
        if pid_part in ("self", "thread-self", str(os.getpid())):
            std = {"out": 1, "err": 2}.get(match.group(3) or "")
            fd = std if std is not None else int(match.group(1) or match.group(2))
    stream = (sys.stdout if fd == 1 else sys.stderr) if fd in (1, 2) else None
    if stream is not None and hasattr(stream, "buffer"):
        # our own stdout/stderr: through Python's objects, so the order of writes holds
        stream.flush()
        yield stream.buffer
        stream.buffer.flush()
    elif fd is not None:  # another descriptor of ours: write at its offset instead of reopening
        with os.fdopen(os.dup(fd), "wb") as fh:
            yield fh
    else:  # a FIFO or device (append: a regular file behind another process's descriptor is not cut)
        with open(target, "ab") as fh:
            yield fh


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; when the block succeeds its bytes become ``path``.

    A regular file (or a new name) is written atomically: the temporary file lives beside it and is
    renamed onto it with :func:`os.replace`. A symbolic link is followed and its target is replaced
    that way, so the link stays a link. A stream (``-`` for stdout, a FIFO, a device such as
    ``/dev/stdout``) is never replaced: the complete bytes are copied into it once the block succeeds.
    On an exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` is appended to the temporary name (numpy's ``save`` wants a ``.npy`` ending).
    """
    kind, target = output_target(path)
    if kind == "stream":
        fd, name = tempfile.mkstemp(prefix=".llara-stream.", suffix=f".tmp{suffix}")
        os.close(fd)
        tmp_path = Path(name)
        try:
            yield tmp_path
            with open(tmp_path, "rb") as src, _open_stream(target) as out:
                shutil.copyfileobj(src, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its files are mode 0600; a file created by open() follows the umask like any other
    tmp_path = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(
    dest: str | os.PathLike, overwrite: bool = False, staged: str | os.PathLike | None = None
) -> Iterator[Path]:
    """Yield a temporary folder to fill; when the block succeeds it is renamed to ``dest``, so a
    half-written folder never has the final name.

    The folder is new and empty, ``.<name>.<random>.partial`` beside ``dest`` (on the same file
    system, so the rename is atomic; two writers never share it), with the usual mode for the umask;
    on an exception it is removed and ``dest`` is left as it was. ``staged``: an existing folder the
    caller has filled (e.g. by every rank of a distributed job) is yielded and renamed instead, and
    left in place on an exception. An existing ``dest`` is a :class:`DataError` unless
    ``overwrite``, which swaps the new folder in and deletes the old one afterwards (``dest`` is
    missing only between two renames)."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DataError(
            f"{dest} exists; delete it (or pass --overwrite where the stage has it) to write it again"
        )
    if staged is None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        except OSError as exc:
            blocker = next((p for p in dest.parents if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
            raise DataError(f"{dest}: cannot create a folder there ({why}); pick another path") from None
        make_shareable_dir(tmp)
    else:
        tmp = Path(staged)
    try:
        yield tmp
        if dest.exists() or dest.is_symlink():
            if not overwrite:  # written by someone else meanwhile
                raise DataError(f"{dest} appeared while it was being written; delete it and run again")
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old / dest.name, dest)  # put the old one back
                os.rmdir(old)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        if staged is None:
            shutil.rmtree(tmp, ignore_errors=True)
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


def report_stream(output: str | os.PathLike) -> Any:
    """Where a CLI prints its one-line summary: stderr when ``output`` is a stream (so that
    ``--output -`` carries the artifact alone), stdout otherwise."""
    return sys.stderr if is_stream(output) else sys.stdout


def sidecar_path(path: str | os.PathLike, suffix: str) -> Path | None:
    """``<artifact><suffix>`` beside an artifact, or None when the artifact is a stream (``-``, a FIFO,
    a device): nothing is written beside those."""
    if is_stream(path):
        return None
    path = Path(path)
    return path.with_name(path.name + suffix)


def config_path_for(path: str | os.PathLike) -> Path | None:
    """Where the resolved arguments of an artifact live: ``<artifact>.config.json`` (None for a stream)."""
    return sidecar_path(path, ".config.json")


def write_config(path: str | os.PathLike, config: dict[str, Any]) -> Path | None:
    """Write the resolved arguments of the stage that produced ``path`` beside it (not for a stream)."""
    target = config_path_for(path)
    return None if target is None else atomic_write_json(target, jsonable(config))


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


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of a UTF-8 text file (a leading BOM is dropped); a
    ``.gz`` file is read decompressed (line numbers and offsets of the decompressed text).

    Bytes that are not UTF-8 raise :class:`DataError` naming the file, line and byte offset; so does
    a damaged or truncated gzip file.
    """
    import gzip
    import zlib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    gzipped = path.suffix == ".gz"
    where = "the decompressed file" if gzipped else "the file"
    offset = 0
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start : exc.start + 1]
                    raise DataError(
                        f"{path}:{lineno}: not UTF-8: byte 0x{bad.hex()} at byte offset {offset + exc.start} "
                        f"of {where} (byte {exc.start + 1} of the line; {exc.reason}); save the file as "
                        "UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT"
                    ) from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                offset += len(raw)
                yield lineno, line
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path}: damaged or truncated gzip file ({exc}); download it again, or decompress it to "
            f"{path.with_suffix('')} and check it"
        ) from None


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file; a file that is not a JSON
    object is a :class:`DataError` naming it, with ``fix`` (what to do about it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object; {fix}")
    return data


def json_error_place(exc: json.JSONDecodeError) -> str:
    """``Expecting value at column 5``; json's own messages may already end in "at"
    (``Unterminated string starting at``), which must not become "at at column"."""
    msg = exc.msg.removesuffix(" at")
    return f"{msg} at column {exc.colno}"


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    Raises :class:`DataError` naming the file and line for malformed JSON, a non-object line or
    bytes that are not UTF-8.
    """
    path = Path(path)
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: malformed JSON ({json_error_place(exc)}); "
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
