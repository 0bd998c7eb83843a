"""The embedding-shard format: one shard of a corpus (or of the queries) is three files,

``<what>.shardIIII-of-NNNN.npy`` (the vectors, (rows, dim)), ``.ids.json`` (the row ids) and ``.meta.json``
(rows, dim, the configuration and encoder settings the vectors depend on), the meta written last as the
completion marker. Written by :mod:`llara.encode`, read by search and the tables; reading a shard
imports neither torch nor faiss.
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
_NON_IDENTITY_KEYS = {
    "batch_size", "device", "progress", "output", "overwrite", "shard", "num_shards", "max_length_source",
}  # fmt: skip


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


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jsonable(config).items() if k not in _NON_IDENTITY_KEYS}


def shard_is_complete(paths: dict[str, Path], config: dict[str, Any] | None = None) -> bool:
    """True when the marker, vectors and ids all exist and agree (and match ``config`` if given).

    A complete shard written with a different configuration raises DataError instead of being
    silently reused or overwritten.
    """
    if not all(p.is_file() for p in paths.values()):
        return False
    meta = json.loads(paths["meta"].read_text())
    ids = json.loads(paths["ids"].read_text())
    emb = np.load(paths["embeddings"], mmap_mode="r")
    if len(ids) != meta.get("rows") or emb.shape[0] != meta.get("rows"):
        return False
    if config is not None and _identity(meta.get("config", {})) != _identity(config):
        raise DataError(
            f"{paths['meta']}: this shard was computed with another configuration "
            f"({_identity(meta.get('config', {}))}); use another --output folder or pass --overwrite"
        )
    return True


def write_shard(paths: dict[str, Path], ids: list[str], vectors: np.ndarray, meta: dict[str, Any]) -> None:
    """Vectors, ids, then the marker (``meta``), each atomically."""
    atomic_save_npy(paths["embeddings"], np.ascontiguousarray(vectors, dtype=np.float32))
    atomic_write_json(paths["ids"], ids)
    atomic_write_json(paths["meta"], meta)


def list_shards(output_dir: str | os.PathLike, what: str) -> list[dict[str, Path]]:
    """The shards of ``what`` in ``output_dir``, in order; fails when any of them is missing."""
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
    missing = [i for i, p in enumerate(all_paths) if not shard_is_complete(p)]
    if missing:
        raise DataError(
            f"{output_dir}: {what} shards {missing} of {num_shards} are missing or incomplete; run "
            f"python -m llara.encode --what {what} --shard I --num-shards {num_shards} for them"
        )
    return all_paths


def load_shard(paths: dict[str, Path]) -> tuple[list[str], np.ndarray]:
    return json.loads(paths["ids"].read_text()), np.load(paths["embeddings"])


def load_embeddings(output_dir: str | os.PathLike, what: str) -> tuple[list[str], np.ndarray]:
    """All shards of ``what`` concatenated in order -> (ids, (N, H) float32)."""
    ids: list[str] = []
    arrays = []
    for paths in list_shards(output_dir, what):
        shard_ids, emb = load_shard(paths)
        ids.extend(shard_ids)
        arrays.append(emb)
    return ids, np.concatenate(arrays, axis=0)
