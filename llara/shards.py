"""The embedding-shard format: one shard of a corpus (or of the queries) is three files,

``<what>.shardIIII-of-NNNN.npy`` (the vectors, (rows, dim)), ``.ids.json`` (the row ids) and ``.meta.json``
(rows, dim, the store dtype, the configuration and encoder settings the vectors depend on, the source
files they were made from), the meta written last as the completion marker. Written by
:mod:`llara.encode`, read by search, scoring and the tables; reading a shard imports neither torch nor
faiss.

The vectors are stored as float16 or float32 (the marker's ``store_dtype``; a marker without one is
float32, as every shard was before). float16 halves the disk and the reads; the vectors are
L2-normalised in most encoders, so its rounding (2^-11 of each value) moves an inner product of two
unit vectors by at most about 1e-3, and a value beyond float16's range (|x| > 65504) is refused when
written rather than stored as inf. Readers hand out float32 by default, one shard at a time.

Readers verify what they load: a damaged or truncated file, ids or a marker that disagree with the
vectors' shape, and vectors that are not finite are one-line :class:`~llara.io.DataError` naming the
file and the fix (:mod:`llara.encode` recomputes such a shard instead).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from llara.io import DataError, atomic_save_npy, atomic_write_json, jsonable

WHATS = ("corpus", "queries")
# config keys that do not change the vectors (a shard computed with another value is still valid)
# ("store_dtype" is checked on its own, by shard_problem: a shard stored in another dtype is recomputed)
_NON_IDENTITY_KEYS = {
    "batch_size", "device", "progress", "output", "overwrite", "shard", "num_shards", "max_length_source",
    "store_dtype",
}  # fmt: skip
STORE_DTYPES = ("float16", "float32")  # what a shard's .npy may hold
LEGACY_STORE_DTYPE = "float32"  # a marker that records no store_dtype (written before it was recorded)
_FINITE_BLOCK = 1 << 16  # rows checked at a time for non-finite values (bounds the check's memory)


def shard_bounds(n: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous [start, end) rows of shard ``shard`` out of ``num_shards`` (sizes differ by <= 1)."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"need 0 <= shard < num_shards, got shard={shard}, num_shards={num_shards}")
    return n * shard // num_shards, n * (shard + 1) // num_shards


def shard_prefix(output_dir: str | os.PathLike, what: str, shard: int, num_shards: int) -> Path:
    return Path(output_dir) / f"{what}.shard{shard:04d}-of-{num_shards:04d}"


def shard_paths(output_dir: str | os.PathLike, what: str, shard: int, num_shards: int) -> dict[str, Path]:
    prefix = shard_prefix(output_dir, what, shard, num_shards)
    return {
        "embeddings": prefix.with_name(prefix.name + ".npy"),
        "ids": prefix.with_name(prefix.name + ".ids.json"),
        "meta": prefix.with_name(prefix.name + ".meta.json"),  # written last: the completion marker
    }


class DamagedShard(DataError):
    """A shard file that is damaged or disagrees with the others; ``reason`` is the message without
    the fix (:mod:`llara.encode` recomputes the shard and says why)."""

    def __init__(self, paths: dict[str, Path], reason: str) -> None:
        super().__init__(f"{reason}; {_describe(paths)[1]}")
        self.reason = reason


def _describe(paths: dict[str, Path]) -> tuple[str, str]:
    """(``corpus shard 1 of 4``, the fix) of a shard, from its file names."""
    name = paths["meta"].name.removesuffix(".meta.json")  # corpus.shard0001-of-0004
    what, _, rest = name.partition(".shard")
    index, _, count = rest.partition("-of-")
    try:
        where = f"{what} shard {int(index)} of {int(count)}"
    except ValueError:
        where = f"{what} shard"
    fix = (
        f"delete it or run snakemake --forcerun encode_{what} (by hand: rerun python -m llara.encode "
        f"--what {what} with --overwrite)"
    )
    return where, fix


def source_record(files: dict[str, str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """``{role: {path, size, mtime_ns}}`` of the files a shard is made from (recorded in its marker;
    a shard whose sources changed since is not complete)."""
    record = {}
    for role, path in files.items():
        st = os.stat(path)
        record[role] = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return record


def _changed_sources(recorded: Any, sources: dict[str, dict[str, Any]]) -> str | None:
    """Why ``recorded`` (a marker's ``sources``) is not ``sources``, or None when they agree."""
    if not isinstance(recorded, dict):
        return "records no source files (written by an older llara.encode)"
    for role, now in sources.items():
        was = recorded.get(role)
        if was == now:
            continue
        if not isinstance(was, dict):
            return f"records no {role} file"
        if was.get("path") != now["path"]:
            return f"was made from {was.get('path')}, not {now['path']}"
        return (
            f"{now['path']} changed since it was made (size {was.get('size')} -> {now['size']}, "
            f"mtime_ns {was.get('mtime_ns')} -> {now['mtime_ns']})"
        )
    extra = sorted(set(recorded) - set(sources))
    return f"was made from other files too ({', '.join(extra)})" if extra else None


def read_meta(paths: dict[str, Path]) -> dict[str, Any]:
    """A shard's marker, checked to parse as a JSON object."""
    path = paths["meta"]
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedShard(paths, f"{path}: damaged shard marker, not JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("rows"), int):
        raise DamagedShard(paths, f"{path}: damaged shard marker (no integer 'rows')")
    return meta


def _read_ids(paths: dict[str, Path]) -> list[str]:
    path = paths["ids"]
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DamagedShard(paths, f"{path}: damaged shard ids, not JSON ({exc})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DamagedShard(paths, f"{path}: damaged shard ids (not a JSON list of strings)")
    return ids


def _read_vectors(paths: dict[str, Path], mmap: bool) -> np.ndarray:
    path = paths["embeddings"]
    try:
        emb = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # truncated: "mmap length is greater than file size"
        raise DamagedShard(paths, f"{path}: damaged or truncated vectors ({exc})") from None
    if emb.ndim != 2:
        raise DamagedShard(paths, f"{path}: damaged vectors (shape {emb.shape}, expected (rows, dim))")
    if emb.dtype.name not in STORE_DTYPES:
        raise DamagedShard(
            paths, f"{path}: {emb.dtype.name} vectors (a shard holds {' or '.join(STORE_DTYPES)})"
        )
    return emb


def stored_dtype(meta: dict[str, Any]) -> str:
    """The dtype a shard's marker says its vectors are stored in."""
    return meta.get("store_dtype", LEGACY_STORE_DTYPE)


def check_shard(paths: dict[str, Path], mmap: bool = True) -> tuple[dict[str, Any], list[str], np.ndarray]:
    """(marker, ids, vectors) of a written shard, checked to agree with one another; a file that
    is damaged or disagrees is a DataError naming it and the fix. ``mmap``: map the vectors (the
    check then reads only the header, and the array's size against the file's)."""
    meta, ids, emb = read_meta(paths), _read_ids(paths), _read_vectors(paths, mmap)
    if len(ids) != meta["rows"]:
        raise DamagedShard(
            paths, f"{paths['ids']}: {len(ids)} ids but the marker {paths['meta']} says {meta['rows']} rows"
        )
    if emb.shape[0] != meta["rows"]:
        raise DamagedShard(
            paths,
            f"{paths['embeddings']}: {emb.shape[0]} rows but the marker {paths['meta']} says {meta['rows']}",
        )
    if meta.get("dim") is not None and emb.shape[0] and emb.shape[1] != meta["dim"]:
        raise DamagedShard(
            paths,
            f"{paths['embeddings']}: dim {emb.shape[1]} but the marker {paths['meta']} says {meta['dim']}",
        )
    if emb.dtype.name != stored_dtype(meta):
        raise DamagedShard(
            paths,
            f"{paths['embeddings']}: {emb.dtype.name} vectors but the marker {paths['meta']} says "
            f"{stored_dtype(meta)}",
        )
    return meta, ids, emb


def first_non_finite_row(vectors: np.ndarray) -> int | None:
    """The index of the first row holding a NaN or an infinity, or None (checked block by block)."""
    for start in range(0, vectors.shape[0], _FINITE_BLOCK):
        bad = ~np.isfinite(vectors[start : start + _FINITE_BLOCK]).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def first_overflow_row(vectors: np.ndarray, store_dtype: str) -> int | None:
    """The index of the first row holding a finite value beyond ``store_dtype``'s range (it would be
    stored as inf), or None (checked block by block; NaN and inf are :func:`first_non_finite_row`'s)."""
    limit = float(np.finfo(store_dtype).max)
    if vectors.dtype.itemsize <= np.dtype(store_dtype).itemsize:
        return None  # a narrower or equal float always fits
    for start in range(0, vectors.shape[0], _FINITE_BLOCK):
        block = vectors[start : start + _FINITE_BLOCK]  # (b, H)
        bad = (np.isfinite(block) & (np.abs(block) > limit)).any(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jsonable(config).items() if k not in _NON_IDENTITY_KEYS}


def shard_problem(
    paths: dict[str, Path],
    config: dict[str, Any] | None = None,
    sources: dict[str, dict[str, Any]] | None = None,
    store_dtype: str | None = None,
) -> str | None:
    """Why the shard is not complete (to be recomputed), or None when it is.

    Not complete: a file missing (the marker is written last), a file damaged or disagreeing with
    the others, (``store_dtype`` given) vectors stored in another dtype, or (``sources`` given, see
    :func:`source_record`) a source file that changed since. A complete shard written with a
    different ``config`` raises DataError instead of being silently reused or overwritten.
    """
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        return f"{paths['meta'].parent}: {', '.join(missing)} not written"
    try:
        meta, _, emb = check_shard(paths)
    except DamagedShard as exc:
        return exc.reason
    if config is not None and _identity(meta.get("config", {})) != _identity(config):
        raise DataError(
            f"{paths['meta']}: this shard was computed with another configuration "
            f"({_identity(meta.get('config', {}))}); use another --output folder or pass --overwrite"
        )
    if store_dtype is not None and emb.dtype.name != store_dtype:
        return f"{paths['embeddings']}: stored as {emb.dtype.name}, {store_dtype} asked (--store-dtype)"
    if sources is not None:
        changed = _changed_sources(meta.get("sources"), jsonable(sources))
        if changed is not None:
            return f"{paths['meta']}: the shard {changed}"
    return None


def shard_is_complete(
    paths: dict[str, Path],
    config: dict[str, Any] | None = None,
    sources: dict[str, dict[str, Any]] | None = None,
) -> bool:
    """True when the marker, vectors and ids all exist and agree (and match ``config`` and
    ``sources`` if given); see :func:`shard_problem`."""
    return shard_problem(paths, config, sources) is None


def write_shard(paths: dict[str, Path], ids: list[str], vectors: np.ndarray, meta: dict[str, Any]) -> None:
    """Vectors (as the marker's ``store_dtype``, float32 when it names none), ids, then the marker
    (``meta``), each atomically. A value beyond the store dtype's range is a DataError (nothing is
    written then)."""
    vectors, store_dtype = np.asarray(vectors), stored_dtype(meta)
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
    bad = first_overflow_row(vectors, store_dtype)
    if bad is not None:
        raise DataError(
            f"{paths['embeddings']}: row {bad} (id {ids[bad]!r}) holds a value beyond {store_dtype}'s range "
            f"(|x| > {np.finfo(store_dtype).max:g}); store it as float32 (--store-dtype float32) or "
            "normalise the vectors"
        )
    atomic_save_npy(paths["embeddings"], np.ascontiguousarray(vectors, dtype=store_dtype))
    atomic_write_json(paths["ids"], ids)
    atomic_write_json(paths["meta"], meta)


def list_shards(output_dir: str | os.PathLike, what: str) -> list[dict[str, Path]]:
    """The shards of ``what`` in ``output_dir``, in order; fails when any of them is missing or damaged."""
    output_dir = Path(output_dir)
    metas = sorted(output_dir.glob(f"{what}.shard*-of-*.meta.json"))
    npys = sorted(output_dir.glob(f"{what}.shard*-of-*.npy"))
    if not metas and not npys:
        raise DataError(
            f"{output_dir}: no {what} shards ({what}.shardXXXX-of-NNNN.npy); run python -m llara.encode "
            f"--what {what} --output {output_dir} first"
        )
    counts = {p.name.split("-of-")[1].split(".")[0] for p in (*metas, *npys)}
    if len(counts) != 1:
        raise DataError(f"{output_dir}: {what} shards from different --num-shards values ({sorted(counts)})")
    num_shards = int(counts.pop())
    all_paths = [shard_paths(output_dir, what, i, num_shards) for i in range(num_shards)]
    missing = [i for i, p in enumerate(all_paths) if not all(f.is_file() for f in p.values())]
    if missing:
        raise DataError(
            f"{output_dir}: {what} shards {missing} of {num_shards} are missing or incomplete; run "
            f"python -m llara.encode --what {what} --shard I --num-shards {num_shards} for them"
        )
    for paths in all_paths:
        check_shard(paths)  # damaged: an error naming the file
    return all_paths


def load_shard(
    paths: dict[str, Path], dtype: str | np.dtype | None = np.float32
) -> tuple[list[str], np.ndarray]:
    """(ids, (rows, dim) vectors) of one shard, verified (see :func:`check_shard`); a non-finite
    value is a DataError naming the file, the shard and the first bad row. ``dtype``: the vectors'
    dtype in memory (float32 by default, whatever the shard stores); None keeps the stored one."""
    _, ids, stored = check_shard(paths, mmap=True)
    emb = np.array(stored, dtype=dtype)  # read (and upcast) straight from the mapped file: one copy
    del stored  # (rows, dim)
    bad = first_non_finite_row(emb)
    if bad is not None:
        where, fix = _describe(paths)
        raise DataError(
            f"{paths['embeddings']}: row {bad} (id {ids[bad]!r}) of {where} holds non-finite values (NaN or "
            f"inf): the encoder produced them (check the model's weights and --dtype); {fix}"
        )
    return ids, emb


def load_embeddings(
    output_dir: str | os.PathLike, what: str, dtype: str | np.dtype | None = np.float32
) -> tuple[list[str], np.ndarray]:
    """All shards of ``what`` concatenated in order -> (ids, (N, H) vectors, float32 by default; see
    :func:`load_shard`). This holds all of them at once: search reads the corpus a shard at a time."""
    ids: list[str] = []
    arrays = []
    for paths in list_shards(output_dir, what):
        shard_ids, emb = load_shard(paths, dtype)
        ids.extend(shard_ids)
        arrays.append(emb)
    nonempty = [a for a in arrays if a.shape[0]]  # an empty shard's vectors may be (0, 0)
    return ids, np.concatenate(nonempty or arrays[:1], axis=0)
