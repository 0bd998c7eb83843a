"""Encode stage: texts -> L2-normalised float32 vectors, in length-sorted batches, sharded.

Two encoders share one interface (``encode_queries(texts)`` / ``encode_corpus(texts)`` -> ``(N, H)``
float32 numpy arrays, rows in input order):

- :class:`LlaraEncoder` wraps a :class:`llara.model.LlaraModel` (queries and passages with the
  prompts the checkpoint records; released-code checkpoints: EBAR queries, EBAE passages);
- :class:`HFEncoder` is a plain Hugging Face ``AutoModel`` with mean, CLS or last-token pooling
  (:func:`llara.pooling.pool_hidden`; baselines such as all-MiniLM-L6-v2, RepLLaMA-style decoders).
  An adapter-only model (a LoRA adapter such as the released RepLLaMA) is merged into the base model
  folder given by ``--base-model``, offline.

Texts are tokenised once, ordered by token length (longest first) and cut into batches, so each
batch pads only to its own longest row; the vectors are put back into input order at the end.

Lengths: without ``--max-length`` an HF encoder uses the model's own limit (sentence-transformers'
``max_seq_length`` from ``sentence_bert_config.json``, else the tokenizer's ``model_max_length`` when
below 100000, else the config's ``max_position_embeddings``; see :func:`default_max_length`); the
LLaRA encoder takes its prompt style, query/passage prompts and lengths from the checkpoint's prompt
layout (``llara_prompt.json``), lengths it lacks being the released code's 64 (queries) / 160
(passages). The values used, and where they came from, are written into each shard's ``.meta.json``.

Storage: the vectors are computed in float32 and stored as ``--store-dtype`` (float16 by default,
half the disk of float32; :mod:`llara.shards`), which the marker records: a shard stored in another
dtype is recomputed. A corpus shard job streams the corpus file and keeps only its own rows
(:func:`llara.beir.scan_corpus`, :func:`llara.beir.read_corpus_rows`), so its memory follows the
shard, not the corpus.

CLI (one shard of one side of a BEIR split; a shard already complete is skipped)::

    python -m llara.encode --encoder hf --model PATH --max-length 256 --beir-dir DIR --split test \\
        --what corpus --shard 0 --num-shards 4 --output results/encode/minilm/scifact [--store-dtype float32]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from llara.grid import KINDS, PASSAGE_MAX_LENGTH, PROMPT_STYLES, QUERY_MAX_LENGTH
from llara.io import (
    DataError,
    DataWarning,
    cli_main,
    cli_warnings,
    code_version,
    format_ids,
    jsonable,
    read_json_object,
    utc_now,
    warn_data,
)
from llara.pooling import pool_hidden
from llara.shards import (
    STORE_DTYPES,
    WHATS,
    first_non_finite_row,
    first_overflow_row,
    shard_bounds,
    shard_paths,
    shard_problem,
    source_record,
    write_shard,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Encoder(Protocol):
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray: ...


def resolve_device(device: str | None = None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``auto``/None: fp32 on CPU; bf16 on a GPU that supports it, else fp16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):  # bf16 on a GPU that has it, fp16 on other GPUs, fp32 on the CPU
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def length_sorted_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices ordering rows longest first (stable, so equal lengths keep input order)."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def encode_in_batches(
    n: int,
    embed_rows: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    lengths: Sequence[int] | None = None,
    desc: str = "encode",
    progress: bool = True,
) -> np.ndarray:
    """Run ``embed_rows(indices) -> (b, H)`` over all rows; return ``(n, H)`` float32 in input order.

    With ``lengths`` the rows are visited longest first (each batch pads only to its own longest
    row); without, in input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = length_sorted_order(lengths) if lengths is not None else np.arange(n)
    out: np.ndarray | None = None
    with tqdm(total=n, desc=desc, unit="text", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            vecs = np.asarray(embed_rows(idx), dtype=np.float32)  # (b, H)
            if out is None:
                out = np.empty((n, vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
            bar.update(len(idx))
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    return out


def pad_features(
    features: Sequence[dict[str, list[int]]], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad pre-tokenised rows to the longest row of the batch (not to the max length)."""
    width = max(len(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    for key in features[0]:
        fill = pad_token_id if key == "input_ids" else 0
        rows = np.full((len(features), width), fill, dtype=np.int64)  # (B, T)
        for i, f in enumerate(features):
            seq = f[key]
            if padding_side == "left":
                rows[i, width - len(seq) :] = seq
            else:
                rows[i, : len(seq)] = seq
        batch[key] = torch.from_numpy(rows)
    return batch


SANE_MODEL_MAX_LENGTH = 100_000  # tokenizers without a limit report 1e30 (transformers' VERY_LARGE_INTEGER)
SBERT_CONFIG = "sentence_bert_config.json"


def default_max_length(
    model: str | os.PathLike | None, tokenizer: Any = None, config: Any = None
) -> tuple[int, str]:
    """The model's own input limit and where it came from: ``(length, source)``.

    In order: sentence-transformers' ``max_seq_length`` (``sentence_bert_config.json`` in the model
    folder), the tokenizer's ``model_max_length`` when sane (< 100000), the config's
    ``max_position_embeddings``. ``tokenizer`` / ``config`` are loaded from ``model`` when not given.
    """
    folder = Path(model) if model is not None and Path(model).is_dir() else None
    if folder is not None and (folder / SBERT_CONFIG).is_file():
        path = folder / SBERT_CONFIG
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise DataError(f"{path}: not a JSON object ({exc}); fix it or pass --max-length") from None
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(
                    f"{path}: max_seq_length must be a positive integer, got {value!r}; fix it or pass "
                    "--max-length"
                )
            return value, f"{SBERT_CONFIG} max_seq_length"
    if tokenizer is None and model is not None:
        from llara.model import tokenizer_of  # errors name the folder and the fix

        tokenizer = tokenizer_of(model)
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < SANE_MODEL_MAX_LENGTH:
        return limit, "tokenizer model_max_length"
    if config is None and model is not None:
        from transformers import AutoConfig

        from llara.model import pretrained

        config = pretrained(AutoConfig.from_pretrained, model)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions, "config max_position_embeddings"
    raise DataError(
        f"{model}: the model states no input limit (no {SBERT_CONFIG} max_seq_length, tokenizer "
        f"model_max_length {limit!r}, no max_position_embeddings); pass --max-length"
    )


HF_POOLINGS = ("mean", "cls", "last")  # the poolings of llara.pooling that need no slot tokens
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter folder (LoRA weights only, no base weights)


def adapter_config(folder: str | os.PathLike | None) -> dict[str, Any] | None:
    """The ``adapter_config.json`` of an adapter-only model folder (a PEFT LoRA adapter, e.g.
    castorini/repllama-v1-7b-lora-passage), or None when ``folder`` is not one."""
    if folder is None:
        return None
    return read_json_object(Path(folder, ADAPTER_CONFIG), "fetch the adapter again")


def check_adapter_base(model: str | os.PathLike, base_model: str | os.PathLike | None) -> None:
    """An adapter-only ``model`` needs its base model's folder (``--base-model``); a full model takes
    none. The hub id an adapter names as its base is never looked up (compute nodes are offline)."""
    config = adapter_config(model)
    if config is None:
        if base_model is not None:
            raise DataError(
                f"{model}: not an adapter folder (no {ADAPTER_CONFIG}), but --base-model {base_model} is "
                "given: drop --base-model (it is only for an adapter-only --model)"
            )
        return
    if base_model is None:
        named = config.get("base_model_name_or_path") or "no base"
        raise DataError(
            f"{model}: a LoRA adapter without base weights ({ADAPTER_CONFIG} names {named!r}, which is "
            "not downloaded here); pass the folder of that base model as --base-model (in a config: the "
            "checkpoint's base_model, fetched on the login node)"
        )
    if adapter_config(base_model) is not None:
        raise DataError(
            f"--base-model {base_model}: an adapter folder too ({ADAPTER_CONFIG}); pass the folder of the "
            "full base model the adapter was trained on"
        )


def load_merged_adapter(adapter: str | os.PathLike, base_model: str | os.PathLike, dtype: torch.dtype) -> Any:
    """``AutoModel`` of the ``base_model`` folder with the LoRA ``adapter`` folder loaded onto it and
    merged (peft's ``merge_and_unload``), as RepLLaMA's model card loads its adapter. An adapter whose
    weights do not fit the base (other shapes, other layer names, layers on one side only) is a
    DataError naming both folders."""
    from peft import PeftConfig, get_peft_model
    from transformers import AutoModel

    from llara.model import pretrained

    check_adapter_base(adapter, base_model)
    named = adapter_config(adapter).get("base_model_name_or_path") or "its base"
    fix = f"pass the folder of the model it was trained on ({named!r}) as --base-model"
    net = pretrained(AutoModel.from_pretrained, base_model, dtype=dtype)
    try:
        config = PeftConfig.from_pretrained(str(adapter))  # the local file: no hub look-up
        config.inference_mode = True
        with warnings.catch_warnings():  # peft notes that the adapter's base is now this folder
            warnings.filterwarnings("ignore", message=r"The PEFT config's `base_model_name_or_path`")
            model = get_peft_model(net, config)  # the adapter's layers, untrained ...
        loaded = model.load_adapter(str(adapter), "default", torch_device="cpu")  # ... then its weights
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # size mismatch, no target modules
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()] or [type(exc).__name__]
        first = next((x for x in lines if "size mismatch" in x), lines[0])[:300]  # torch's: one per weight
        raise DataError(
            f"{adapter}: the adapter does not fit the base model {base_model} ({first}); {fix}"
        ) from None
    odd = [*loaded.unexpected_keys, *loaded.missing_keys]
    if odd:
        raise DataError(
            f"{adapter}: the adapter does not fit the base model {base_model}: "
            f"{len(loaded.unexpected_keys)} adapter weights have no layer there and "
            f"{len(loaded.missing_keys)} adapted layers get no weights (e.g. {odd[0]}); {fix}"
        )
    return model.merge_and_unload()


class HFEncoder:
    """A plain Hugging Face encoder: ``AutoModel`` + mean, CLS or last-token pooling, optional
    normalisation.

    ``last`` is RepLLaMA's (Ma et al. 2023): each text is tokenised to ``max_length - 1`` tokens, the
    tokenizer's EOS appended (``append_eos``, default on for ``last`` only) and the state of the last
    real token taken. Left-padded rows get position ids counted from their first real token, so both
    padding sides give the same vectors.

    An adapter-only ``model`` folder (a LoRA adapter: ``adapter_config.json``, no base weights; the
    released RepLLaMA) is loaded onto the ``base_model`` folder and merged
    (:func:`load_merged_adapter`), the tokenizer being the base model's; the hub id the adapter names
    as its base is never used.
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        tokenizer: Any = None,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        max_length: int | None = None,
        query_max_length: int | None = None,
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
        append_eos: bool | None = None,
        base_model: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        sort_by_length: bool = True,
        progress: bool = True,
    ) -> None:
        from transformers import AutoModel

        if pooling not in HF_POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {', '.join(HF_POOLINGS)}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        path: str | None = None
        self.base_model = None if base_model is None else str(base_model)
        if isinstance(model, str | os.PathLike):
            from llara.model import pretrained, tokenizer_of  # errors name the folder and the fix

            path = str(model)
            check_adapter_base(path, self.base_model)
            tokenizer_path = self.base_model or path  # an adapter has no tokenizer: its base model's
            self.tokenizer = tokenizer if tokenizer is not None else tokenizer_of(tokenizer_path)
            if self.base_model is not None:
                self.model = load_merged_adapter(path, self.base_model, self.dtype)
            else:
                self.model = pretrained(AutoModel.from_pretrained, path, dtype=self.dtype)
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a model object")
            self.model, self.tokenizer = model, tokenizer
            self.model.to(self.dtype)
        self.model.to(self.device).eval()
        self.pooling, self.normalize = pooling, normalize
        self.append_eos = pooling == "last" if append_eos is None else append_eos
        if self.append_eos and self.tokenizer.eos_token_id is None:
            raise DataError(
                f"{path or 'the model'}: the tokenizer has no EOS token to append; pass --no-append-eos"
            )
        from llara.model import adds_eos

        # a tokenizer that ends every text with EOS itself (a RepLLaMA sentence-transformers export) gets
        # none appended: the rows end with one EOS either way
        self._tokenizer_adds_eos = self.append_eos and adds_eos(self.tokenizer)
        if max_length is None:
            limits = self.base_model or path  # an adapter's limits are its base model's
            max_length, self.max_length_source = default_max_length(limits, self.tokenizer, self.model.config)
        else:
            self.max_length_source = "max_length argument"
        self.max_length, self.query_max_length = max_length, query_max_length or max_length
        self.batch_size = batch_size
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.sort_by_length, self.progress = sort_by_length, progress

    @property
    def settings(self) -> dict[str, Any]:
        """What the vectors depend on, as used (recorded in each shard's ``.meta.json``)."""
        return {
            "encoder": "hf",
            "pooling": self.pooling,
            "normalize": self.normalize,
            "append_eos": self.append_eos,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "max_length": self.max_length,
            "query_max_length": self.query_max_length,
            "max_length_source": self.max_length_source,
            "dtype": str(self.dtype).removeprefix("torch."),
        } | ({"base_model": self.base_model} if self.base_model is not None else {})

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
        """Unpadded rows (``input_ids``, ``attention_mask``, ``token_type_ids`` where the tokenizer
        gives them) of at most ``max_length`` tokens, the EOS last with ``append_eos``."""
        if self.append_eos and max_length < 2:
            raise ValueError(f"append_eos needs max_length >= 2, got {max_length}")
        append = self.append_eos and not self._tokenizer_adds_eos
        room = max_length - 1 if append else max_length  # RepLLaMA: max_length - 1, then EOS
        enc = self.tokenizer(list(texts), truncation=True, max_length=room)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        features = [{k: list(enc[k][i]) for k in keys} for i in range(len(texts))]
        if append:
            for f in features:
                f["input_ids"].append(self.tokenizer.eos_token_id)
                f["attention_mask"].append(1)
                if "token_type_ids" in f:  # the segment of the token before it
                    f["token_type_ids"].append(f["token_type_ids"][-1] if f["token_type_ids"] else 0)
        return features

    def _encode(self, texts: Sequence[str], max_length: int, prefix: str, desc: str) -> np.ndarray:
        texts = [prefix + t for t in texts]
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        features = self.tokenize(texts, max_length)
        lengths = [len(f["input_ids"]) for f in features]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        side = getattr(self.tokenizer, "padding_side", "right")
        takes_positions = "position_ids" in inspect.signature(self.model.forward).parameters

        def embed_rows(idx: np.ndarray) -> np.ndarray:
            batch = pad_features([features[i] for i in idx], pad_id, side)
            if side == "left" and takes_positions:  # positions from each row's first real token
                batch["position_ids"] = (batch["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state  # (B, T, H)
                vecs = pool_hidden(hidden, batch["attention_mask"], self.pooling, normalize=self.normalize)
            return vecs.cpu().numpy()  # (B, H) fp32

        return encode_in_batches(
            len(texts),
            embed_rows,
            self.batch_size,
            lengths if self.sort_by_length else None,
            desc=desc,
            progress=self.progress,
        )

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_max_length, self.query_prefix, "encode queries")

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.max_length, self.passage_prefix, "encode corpus")


class LlaraEncoder:
    """The LLaRA encoder: queries and passages each with the prompt and length of the model's layout.

    ``model`` is a checkpoint path (loaded with :meth:`llara.model.LlaraModel.from_pretrained`, whose
    :meth:`~llara.layout.PromptLayout.resolve` merges the checkpoint's ``llara_prompt.json`` with the
    arguments here, warning where a given value disagrees with the file) or a loaded model: an object
    with ``tokenizer``, ``embed_texts(texts, kind, max_length)`` -> (N, H) tensor and, optionally, its
    ``layout`` (the arguments override it). ``None`` keeps the checkpoint's value; what a checkpoint does
    not record is the released code's (EBAR queries, EBAE passages, 64 / 160 tokens).
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        *,
        prompt_style: str | None = None,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        sort_by_length: bool = True,
        progress: bool = True,
    ) -> None:
        from llara.layout import PromptLayout

        overrides = {
            "style": prompt_style,
            "query_prompt": query_prompt,
            "passage_prompt": passage_prompt,
            "query_max_length": query_max_length,
            "passage_max_length": passage_max_length,
        }
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if isinstance(model, str | os.PathLike):
            from llara import model as llara_model

            model = llara_model.LlaraModel.from_pretrained(model, dtype=self.dtype, **overrides)
            model.model.to(self.device).eval()
            self.layout = model.layout
        else:
            self.layout = PromptLayout.resolve(None, getattr(model, "layout", None), **overrides)
        self.model = model
        self.batch_size, self.sort_by_length, self.progress = batch_size, sort_by_length, progress

    @property
    def settings(self) -> dict[str, Any]:
        """What the vectors depend on, as used (recorded in each shard's ``.meta.json``)."""
        return {
            "encoder": "llara",
            **self.layout.encoder_settings(),  # style and prompts, or pooling, prefixes and EOS
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def _encode(self, texts: Sequence[str], role: str, desc: str) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        kind, max_length = self.layout.prompt_for(role), self.layout.max_length_for(role)
        lengths = None
        if self.sort_by_length:
            ids = self.model.tokenizer(texts, add_special_tokens=False)["input_ids"]
            lengths = [min(len(x), max_length) for x in ids]

        def embed_rows(idx: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                vecs = self.model.embed_texts([texts[i] for i in idx], kind, max_length)
            return vecs.to(torch.float32).cpu().numpy()

        return encode_in_batches(len(texts), embed_rows, self.batch_size, lengths, desc, self.progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "query", "encode queries")

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "passage", "encode corpus")


# ---------------------------------------------------------------------------------------------
# encoding a shard


def encode_shard(
    encoder: Encoder,
    ids: Sequence[str],
    texts: Sequence[str],
    what: str,
    output_dir: str | os.PathLike,
    shard: int = 0,
    num_shards: int = 1,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    sources: dict[str, dict[str, Any]] | None = None,
    store_dtype: str = "float32",
    total_rows: int | None = None,
) -> dict[str, Any]:
    """Encode rows of shard ``shard`` and write vectors (.npy, as ``store_dtype``), ids (.ids.json),
    marker (.meta.json).

    ``ids`` / ``texts`` are all rows, or, with ``total_rows``, only this shard's rows of an input of
    ``total_rows`` (a streaming reader's; see :func:`llara.beir.read_corpus_rows`). Returns the
    marker's content; a shard already complete is returned without recomputation. A shard that is
    damaged, stored in another dtype, or (``sources``: :func:`llara.shards.source_record` of the input
    files, recorded in the marker) made from files that changed since, is recomputed. Non-finite
    vectors, and values beyond ``store_dtype``'s range, are a DataError naming the shard file and the
    first bad row; nothing is written then. ``store_dtype`` defaults to float32 here (callers holding
    their own expected values keep them); the CLI's ``--store-dtype`` defaults to float16.
    """
    if what not in WHATS:
        raise ValueError(f"what must be one of {WHATS}, got {what!r}")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    config = dict(config or {})
    config.update(what=what, shard=shard, num_shards=num_shards)
    paths = shard_paths(output_dir, what, shard, num_shards)
    if not overwrite and shard_problem(paths, config, sources, store_dtype) is None:
        return json.loads(paths["meta"].read_text()) | {"skipped": True}
    paths["meta"].unlink(missing_ok=True)  # the old marker goes first, so a crash leaves no stale one
    shard_ids, shard_texts, start, end, total = _shard_rows(ids, texts, shard, num_shards, total_rows)
    empty = [i for i, t in zip(shard_ids, shard_texts, strict=True) if not t.strip()]
    if empty:
        warn_data(
            f"{what} shard {shard} of {num_shards}: {len(empty)} of {len(shard_ids)} texts are empty "
            f"(ids: {format_ids(empty)}); they are encoded as empty strings"
        )
    t0 = time.perf_counter()
    vecs = encoder.encode_corpus(shard_texts) if what == "corpus" else encoder.encode_queries(shard_texts)
    seconds = time.perf_counter() - t0
    if vecs.shape[0] != len(shard_ids):
        raise RuntimeError(f"encoder returned {vecs.shape[0]} vectors for {len(shard_ids)} texts")
    bad = first_non_finite_row(vecs)
    if bad is not None:
        raise DataError(
            f"{paths['embeddings']}: the encoder produced non-finite values (NaN or inf) for row {bad} "
            f"(id {shard_ids[bad]!r}, row {start + bad} of all) of {what} shard {shard} of {num_shards}; "
            f"nothing written. Check the model's weights ({config.get('model', 'the model')}) and --dtype "
            "(fp16 overflows where bf16 or fp32 do not)"
        )
    big = first_overflow_row(vecs, store_dtype)
    if big is not None:
        raise DataError(
            f"{paths['embeddings']}: row {big} (id {shard_ids[big]!r}, row {start + big} of all) of {what} "
            f"shard {shard} of {num_shards} holds a value beyond {store_dtype}'s range (|x| > "
            f"{np.finfo(store_dtype).max:g}); nothing written. Pass --store-dtype float32 (or normalise)"
        )
    meta = {
        "rows": len(shard_ids),
        "dim": int(vecs.shape[1]) if vecs.ndim == 2 else 0,
        "store_dtype": store_dtype,  # what the .npy holds (llara.shards)
        "row_range": [start, end],
        "total_rows": total,
        "seconds": round(seconds, 3),
        "texts_per_second": round(len(shard_ids) / seconds, 2) if seconds > 0 else None,
        "empty_texts": len(empty),
        "empty_text_ids": empty[:100],
        "config": jsonable(config),
        "encoder": jsonable(getattr(encoder, "settings", None)),  # the values used (lengths, prompts)
        "sources": jsonable(sources),  # the input files' path, size, mtime_ns (None: not recorded)
        "code_version": code_version(),
        "date": utc_now(),
    }
    write_shard(paths, shard_ids, vecs, meta)
    return meta


def _shard_rows(
    ids: Sequence[str], texts: Sequence[str], shard: int, num_shards: int, total_rows: int | None
) -> tuple[list[str], list[str], int, int, int]:
    """(this shard's ids, texts, start, end, total rows): sliced from all rows, or (``total_rows``
    given) checked to be the shard's rows already."""
    total = len(ids) if total_rows is None else total_rows
    start, end = shard_bounds(total, shard, num_shards)
    if total_rows is None:
        return list(ids[start:end]), list(texts[start:end]), start, end, total
    if len(ids) != end - start:
        raise ValueError(
            f"shard {shard} of {num_shards} of {total_rows} rows is rows [{start}, {end}), got {len(ids)} rows"
        )
    return list(ids), list(texts), start, end, total


# ---------------------------------------------------------------------------------------------
# CLI


def build_encoder(config: dict[str, Any]) -> Encoder:
    """Build an encoder from a resolved CLI configuration (plain dict of values)."""
    common = dict(
        batch_size=config["batch_size"],
        device=config["device"],
        dtype=config["dtype"],
        sort_by_length=config["sort_by_length"],
        progress=config["progress"],
    )
    if config["encoder"] == "hf":
        encoder = HFEncoder(
            config["model"],
            pooling=config["pooling"],
            normalize=config["normalize"],
            max_length=config["max_length"],
            query_max_length=config["query_max_length"],
            query_prefix=config["query_prefix"],
            passage_prefix=config["passage_prefix"],
            append_eos=config.get("append_eos"),
            base_model=config.get("base_model"),
            **common,
        )
        encoder.max_length_source = config.get("max_length_source") or encoder.max_length_source
        return encoder
    return LlaraEncoder(
        config["model"],
        prompt_style=config["prompt_style"],
        query_prompt=config["query_prompt"],
        passage_prompt=config["passage_prompt"],
        query_max_length=config["query_max_length"],
        passage_max_length=config["max_length"],
        **common,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m llara.encode", description="Encode one shard of a BEIR split."
    )
    p.add_argument("--encoder", choices=("llara", "hf"), required=True)
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--beir-dir", required=True, type=Path)
    p.add_argument("--split", default="test", help="qrels split whose judged queries are encoded")
    p.add_argument("--what", choices=WHATS, required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--output", required=True, type=Path, help="output folder for the shard files")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="passage max tokens (hf: the model's own limit: sentence_bert_config.json max_seq_length, "
        "else tokenizer model_max_length, else max_position_embeddings; llara: the checkpoint's, else "
        f"{PASSAGE_MAX_LENGTH})",
    )
    p.add_argument(
        "--query-max-length",
        type=int,
        default=None,
        help=f"query max tokens (hf: as --max-length; llara: the checkpoint's, else {QUERY_MAX_LENGTH})",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument(
        "--dtype", default="auto", choices=("auto", *DTYPES), help="auto: fp32 on CPU, bf16/fp16 on GPU"
    )
    p.add_argument(
        "--store-dtype",
        choices=STORE_DTYPES,
        default="float16",
        help="dtype of the stored vectors (computed in float32; --dtype is the model's compute dtype)",
    )
    p.add_argument("--no-sort", dest="sort_by_length", action="store_false", help="batches in input order")
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars (ours, and transformers' weight loading)",
    )
    p.add_argument("--overwrite", action="store_true", help="recompute a shard even when complete")
    hf = p.add_argument_group("hf encoder")
    hf.add_argument(
        "--pooling", choices=HF_POOLINGS, default="mean", help="last: the last real token (RepLLaMA)"
    )
    hf.add_argument("--no-normalize", dest="normalize", action="store_false")
    hf.add_argument(
        "--append-eos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append the tokenizer's EOS to every text (default: with --pooling last only)",
    )
    hf.add_argument("--query-prefix", default="")
    hf.add_argument("--passage-prefix", default="")
    hf.add_argument(
        "--base-model",
        default=None,
        help="the base model's folder of an adapter-only --model (a LoRA adapter folder with "
        "adapter_config.json, e.g. the released RepLLaMA): the adapter is merged into it and its tokenizer "
        "used; the hub id the adapter names is never looked up",
    )
    ll = p.add_argument_group("llara encoder")
    ll.add_argument(
        "--prompt-style", choices=PROMPT_STYLES, default=None, help="default: the one the checkpoint records"
    )
    ll.add_argument(
        "--query-prompt", choices=KINDS, default=None, help="default: the one the checkpoint records"
    )
    ll.add_argument(
        "--passage-prompt", choices=KINDS, default=None, help="default: the one the checkpoint records"
    )
    args = p.parse_args(argv)
    for name in ("max_length", "query_max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not 0 <= args.shard < args.num_shards:
        p.error(f"need 0 <= --shard < --num-shards, got {args.shard} and {args.num_shards}")
    if args.append_eos is None:  # resolved here, so the default and an explicit flag are one configuration
        args.append_eos = args.pooling == "last"
    return args


def resolve_lengths(config: dict[str, Any]) -> dict[str, Any]:
    """Say where the lengths come from; fill in an hf encoder's from the model (before any shard is
    checked: an explicit ``--max-length`` equal to the model's own is the same configuration).
    The llara encoder's lengths left None come from the checkpoint when it is loaded (its prompt
    layout, else the released code's 64 / 160) and are recorded in the shard's ``encoder`` entry."""
    config = dict(config)
    if config["max_length"] is not None:
        config["max_length_source"] = "--max-length"
    elif config["encoder"] == "hf":  # an adapter's limits are its base model's
        limits = config.get("base_model") or config["model"]
        config["max_length"], config["max_length_source"] = default_max_length(limits)
    else:
        config["max_length_source"] = "checkpoint prompt layout, else the released code's"
    if config["query_max_length"] is None and config["encoder"] == "hf":
        config["query_max_length"] = config["max_length"]
    return config


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """With ``enabled`` False, also silence transformers' and huggingface_hub's bars (weight loading)."""
    from transformers.utils import logging as hf_logging

    if enabled or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def source_files(beir_dir: Path, what: str, split: str) -> dict[str, Path]:
    """The files a shard of ``what`` is made from: the corpus, or the queries and the split's qrels."""
    from llara.beir import corpus_file, qrels_path

    if not beir_dir.is_dir():
        raise DataError(
            f"{beir_dir}: not a folder; pass a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)"
        )
    if what == "corpus":
        return {"corpus": corpus_file(beir_dir / "corpus.jsonl")}
    return {"queries": beir_dir / "queries.jsonl", "qrels": qrels_path(beir_dir, split)}


def read_shard_of_corpus(path: Path, shard: int, num_shards: int) -> tuple[int, list[str], list[str]]:
    """(total documents, ids, texts) of shard ``shard``'s rows only: every row is checked (the errors
    of :func:`llara.beir.load_corpus`), only the shard's are kept (memory follows the shard)."""
    from llara.beir import read_corpus_rows, scan_corpus

    total = scan_corpus(path)
    start, end = shard_bounds(total, shard, num_shards)
    ids, texts = read_corpus_rows(path, start, end)
    return total, ids, texts


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    store_dtype = config.pop("store_dtype")  # recorded as the marker's own store_dtype
    if args.encoder == "hf":
        for key in ("prompt_style", "query_prompt", "passage_prompt"):
            config.pop(key)
        check_adapter_base(args.model, args.base_model)  # before any file is read
    else:
        if args.base_model is not None:
            raise DataError(
                f"--base-model {args.base_model}: only --encoder hf loads an adapter-only model onto a base "
                "folder; drop it (the llara encoder loads an adapter onto the base its adapter_config.json names)"
            )
        for key in ("pooling", "normalize", "append_eos", "query_prefix", "passage_prefix"):
            config.pop(key)
    if config["base_model"] is None:
        config.pop("base_model")  # a full model: its shards' configuration is what it always was
    if args.what == "corpus":
        config.pop("split")  # the corpus does not depend on the split
    with cli_warnings(), progress_bars(args.progress):
        from llara.beir import load_beir

        config = resolve_lengths(config)
        paths = shard_paths(args.output, args.what, args.shard, args.num_shards)
        files = source_files(args.beir_dir, args.what, args.split)
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise DataError(f"{missing[0]}: file not found; pass a BEIR dataset folder as --beir-dir")
        sources = source_record(files)  # before reading: a change while encoding shows next time
        if not args.overwrite:
            problem = shard_problem(paths, config, sources, store_dtype)
            if problem is None:
                print(f"{paths['embeddings']}: complete, not recomputed")
                return 0
            if any(p.exists() for p in paths.values()):
                print(f"recomputing {paths['embeddings'].name}: {problem}", file=sys.stderr)
        total_rows = None
        if args.what == "corpus":
            total_rows, ids, texts = read_shard_of_corpus(files["corpus"], args.shard, args.num_shards)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)  # encode_shard names empty queries
                ids, texts = load_beir(args.beir_dir, args.split).query_items()
        encoder = build_encoder(config)
        meta = encode_shard(
            encoder,
            ids,
            texts,
            args.what,
            args.output,
            args.shard,
            args.num_shards,
            config,
            overwrite=True,  # checked above (a damaged or outdated shard is recomputed)
            sources=sources,
            store_dtype=store_dtype,
            total_rows=total_rows,
        )
    print(
        f"{paths['embeddings']}: {meta['rows']} {args.what} rows, dim {meta['dim']}, "
        f"{meta['texts_per_second']} texts/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
