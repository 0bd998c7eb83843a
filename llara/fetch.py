"""Fetch a model from the Hugging Face hub once, on the login node, into a folder the grid reads.

Compute nodes usually have no network, and a hub name in ``base_model.source`` makes every job look
the model up (and fail, or wait out retries, without one). This stage downloads it once where there
is network and the jobs read the folder:

* the repository's file list is read at ``--revision`` (a branch, tag or commit sha) and the commit
  it resolves to is recorded; the download is pinned to that commit, so the files are one state;
* by default only what a model needs is taken: ``config.json`` and the other JSON files, the
  tokenizer (``*.model``, ``*.txt``, ``*.tiktoken``) and the weights, safetensors preferred (``*.bin``
  files are skipped when ``*.safetensors`` exist), never ``original/`` or ``consolidated.*`` (Meta's
  own checkpoint format, a second copy of the weights); ``--allow-patterns`` replaces the choice;
* the files go to ``<output>.partial`` (kept on failure: an interrupted download resumes there the
  next time) and the folder is renamed to ``<output>`` only once complete
  (:func:`llara.io.atomic_folder`), with ``llara_fetch.json`` inside as its completion marker (repo id,
  revision, resolved commit, date, the files and their sizes);
* a folder whose marker names the same repo id, revision and file choice, with every file at its
  recorded size, is not fetched again.

CLI::

    python -m llara.fetch --repo-id meta-llama/Llama-2-7b-hf --revision 01c7f73d771dfac7d292323805ebc428287df4f9 \\
        --output resources/models/llama-2-7b

A gated model needs its licence accepted on its hub page and a token on the login node (``hf auth
login``, or ``HF_TOKEN`` in the environment). Errors are one ``error: ...`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import glob
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download

from llara.io import DataError, atomic_folder, atomic_write_json, cli_main, utc_now

MARKER = "llara_fetch.json"
REQUEST = ".llara_fetch_request.json"  # in the staging folder: what is being downloaded there
WEIGHTS = ("*.safetensors", "*.bin")
MODEL_FILES = ("*.json", "*.model", "*.txt", "*.tiktoken", *WEIGHTS)  # config, tokenizer, weights
SKIPPED = ("original/*", "consolidated.*", "*/consolidated.*")  # Meta's format: a second copy
OFFLINE_VALUES = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Listing:
    """A repository at one revision: the commit it resolves to and its files (path -> size or None)."""

    commit: str | None
    files: dict[str, int | None]


# ---- which files ----------------------------------------------------------------------------------
def matches(path: str, patterns: Sequence[str]) -> bool:
    """fnmatch as the hub's ``allow_patterns`` does it (``*`` crosses ``/``; ``dir/`` means ``dir/*``)."""
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


def select_files(files: Sequence[str], allow_patterns: Sequence[str] | None = None) -> list[str]:
    """The files to fetch: those matching ``allow_patterns`` when given, else the model's files
    (:data:`MODEL_FILES` less :data:`SKIPPED`), without ``*.bin`` weights (and their index) when
    safetensors weights exist."""
    if allow_patterns:
        return sorted(f for f in files if matches(f, allow_patterns))
    chosen = [f for f in files if matches(f, MODEL_FILES) and not matches(f, SKIPPED)]
    if any(f.endswith(".safetensors") for f in chosen):
        chosen = [f for f in chosen if not (f.endswith(".bin") or f.endswith(".bin.index.json"))]
    return sorted(chosen)


# ---- the hub --------------------------------------------------------------------------------------
def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


NO_NETWORK = (
    "llara.fetch runs on the login node, which has network; on a machine without it, copy the model "
    "folder there and set base_model.source to that folder"
)


def hub_error(exc: BaseException, repo_id: str, revision: str) -> DataError | None:
    """The one-line error for a hub failure (None: not a hub failure we can explain)."""
    from huggingface_hub import errors

    page = f"https://huggingface.co/{repo_id}"
    login = "`hf auth login` (or `huggingface-cli login`) or export HF_TOKEN"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, errors.GatedRepoError) or (
        isinstance(exc, errors.HfHubHTTPError)
        and status in (401, 403)
        and not isinstance(exc, errors.RepositoryNotFoundError)
    ):
        return DataError(
            f"{repo_id} is a gated model and the hub refused the download (HTTP {status}): accept its "
            f"licence on {page} with your account, then {login} on the login node, and fetch again"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return DataError(
            f"{repo_id}: revision {revision!r} not found on the hub; pass a branch, tag or commit sha "
            f"that exists (see {page}/commits/main)"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return DataError(
            f"{repo_id}: no such model on the hub (or it is private and this account may not see it); "
            f"check the id (owner/name), or {login} for a private model"
        )
    if isinstance(
        exc, errors.OfflineModeIsEnabled | errors.LocalEntryNotFoundError | ConnectionError | TimeoutError
    ) or names & {"TransportError", "ConnectError", "TimeoutException", "NetworkError"}:
        return DataError(f"cannot reach the Hugging Face hub for {repo_id} ({exc_line(exc)}); {NO_NETWORK}")
    if isinstance(exc, errors.HfHubHTTPError):
        return DataError(
            f"{repo_id}: the hub answered HTTP {status} ({exc_line(exc)}); try again later, or check {page}"
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DataError(
            f"{exc.filename or 'the output folder'}: no space left on the device; free space and fetch again (it resumes)"
        )
    return None


def exc_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def repo_listing(repo_id: str, revision: str) -> Listing:
    """The commit ``revision`` resolves to and the repository's files with their sizes."""
    info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    return Listing(info.sha, {s.rfilename: s.size for s in info.siblings or []})


def download(repo_id: str, commit: str, files: Sequence[str], folder: Path) -> None:
    """Download ``files`` of ``repo_id`` at ``commit`` into ``folder`` (files already there and
    complete are kept: a rerun resumes)."""
    snapshot_download(
        repo_id,
        revision=commit,
        local_dir=folder,
        allow_patterns=[glob.escape(f) for f in files],  # exactly these files
    )


# ---- the folder -----------------------------------------------------------------------------------
def read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # damaged: ours, but not complete
    return marker if isinstance(marker, dict) else {}


def complete_reason(folder: Path, repo_id: str, revision: str, patterns: list[str] | None) -> str | None:
    """None when ``folder`` holds a complete fetch of this request; else why it does not."""
    marker = read_marker(folder)
    if marker is None:
        return f"{folder / MARKER} is missing"
    wanted = {"repo_id": repo_id, "revision": revision, "allow_patterns": patterns}
    for key, value in wanted.items():
        if marker.get(key) != value:
            return f"it holds {key} {marker.get(key)!r}, not {value!r}"
    for entry in marker.get("files", []):
        path = folder / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return f"{path} is missing or not {entry['size']} bytes"
    return None


def file_list(folder: Path) -> list[dict[str, Any]]:
    return [
        {"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    ]


def staging_folder(output: Path) -> Path:
    return Path(f"{output}.partial")


def prepare_staging(staging: Path, request: dict[str, Any]) -> None:
    """Reuse ``staging`` for the same request (resume), start it over for another one."""
    previous = staging / REQUEST
    if staging.exists():
        try:
            same = json.loads(previous.read_text(encoding="utf-8")) == request
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_json(previous, request)


def check_space(parent: Path, need: int) -> None:
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if need > free:
        raise DataError(
            f"{parent}: {need / 1e9:.1f} GB to download but {free / 1e9:.1f} GB free; free space or pick "
            "another --output"
        )


def fetch(
    repo_id: str,
    revision: str,
    output: str | os.PathLike,
    allow_patterns: Sequence[str] | None = None,
    overwrite: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Fetch ``repo_id`` at ``revision`` into ``output``; returns (the marker, whether it downloaded).

    An ``output`` already holding this fetch is left as it is; one holding another fetch (another
    revision, another file choice) or a damaged one is replaced; a folder without a marker is
    replaced only with ``overwrite``."""
    output = Path(output)
    patterns = list(allow_patterns) if allow_patterns else None
    if output.exists():
        why = complete_reason(output, repo_id, revision, patterns)
        if why is None:
            return read_marker(output) or {}, False
        if read_marker(output) is None and not overwrite:
            raise DataError(
                f"{output} exists but was not made by llara.fetch (no {MARKER}); delete it, pass "
                "--overwrite, or pick another --output"
            )
    if offline():
        raise DataError(f"HF_HUB_OFFLINE is set: cannot download {repo_id}; {NO_NETWORK}")
    try:
        listing = repo_listing(repo_id, revision)
        files = select_files(list(listing.files), patterns)
        if not files:
            shown = ", ".join(sorted(listing.files)[:20]) or "(none)"
            how = f"--allow-patterns {' '.join(patterns)}" if patterns else "the model's file patterns"
            raise DataError(f"{repo_id} at {revision}: no file matches {how}; its files: {shown}")
        if not patterns and not any(matches(f, WEIGHTS) for f in files):
            raise DataError(
                f"{repo_id} at {revision}: no weights (*.safetensors or *.bin) outside original/; pass "
                "--allow-patterns to choose the files"
            )
        check_space(output.parent, sum(listing.files[f] or 0 for f in files))
        staging = staging_folder(output)
        commit = listing.commit or revision
        prepare_staging(staging, {"repo_id": repo_id, "commit": commit, "files": files})
        download(repo_id, commit, files, staging)
    except DataError:
        raise
    except Exception as exc:
        error = hub_error(exc, repo_id, revision)
        if error is None:
            raise
        raise error from None
    missing = [f for f in files if not (staging / f).is_file()]
    if missing:
        raise DataError(
            f"{staging}: the download ended without {', '.join(missing[:5])}; run llara.fetch again to resume"
        )
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
    (staging / REQUEST).unlink()
    entries = file_list(staging)
    marker = {
        "repo_id": repo_id,
        "revision": revision,
        "commit": listing.commit,
        "allow_patterns": patterns,
        "fetched_at": utc_now(),
        "files": entries,
        "total_bytes": sum(e["size"] for e in entries),
    }
    with atomic_folder(output, overwrite=True, staged=staging) as folder:
        atomic_write_json(folder / MARKER, marker)  # inside before the rename: complete on arrival
    return marker, True


# ---- CLI ------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise DataError(f"{message}; usage: python -m llara.fetch --repo-id ID --revision REV --output DIR")


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m llara.fetch", description=__doc__.split("\n")[0])
    p.add_argument("--repo-id", required=True, help="hub model id, e.g. meta-llama/Llama-2-7b-hf")
    p.add_argument("--revision", default="main", help="branch, tag or commit sha (pin a sha to reproduce)")
    p.add_argument("--output", required=True, type=Path, help="folder to create, e.g. resources/models/NAME")
    p.add_argument(
        "--allow-patterns",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="fetch the files matching these patterns instead of the model's own (config, tokenizer, weights)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an --output not made by llara.fetch")
    args = p.parse_args(argv)
    marker, downloaded = fetch(args.repo_id, args.revision, args.output, args.allow_patterns, args.overwrite)
    commit = f" (commit {marker['commit']})" if marker.get("commit") else ""
    size = f"{len(marker.get('files', []))} files, {marker.get('total_bytes', 0) / 1e9:.2f} GB"
    state = "fetched" if downloaded else "already complete, not fetched again"
    print(f"{args.output}: {args.repo_id} at {args.revision}{commit}, {size}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
