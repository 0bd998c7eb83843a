"""LlaraModel: one object that owns the prompt layout around a stock Hugging Face decoder.

Read top to bottom, this is the method (docs/method.md §N):

* the prompt layout of a checkpoint (:class:`llara.layout.PromptLayout`: style, which prompt queries
  and passages get, their lengths) is born in adaptation, saved as ``llara_prompt.json`` inside every
  checkpoint the stages write, and resolved once when loading (:meth:`PromptLayout.resolve`: the
  checkpoint's file, then explicit overrides, each disagreement logged), so nothing downstream repeats
  ``--prompt_style``;
* loading refuses what cannot work with one-line :class:`llara.io.DataError` errors that name the path: a
  folder that does not exist, a folder without tokenizer files or with a tokenizer that cannot encode
  ordinary text, unreadable (truncated) weights;
* ``adaptation_batch`` turns pre-training rows into one left-padded batch: ``prefix + T + suffix`` (a
  variant that trains one half) or ``prefix + T + EBAE suffix + EBAR suffix`` (both halves, §3), LM
  labels on T, and the bag-of-words targets of each half (:mod:`llara.targets`);
* ``adaptation_loss`` runs the stock model once (two halves: with the 4-D mask of :mod:`llara.masks`,
  built here in the model's compute dtype), takes LM-head logits at the slots only (the columns of
  :class:`llara.masks.JointGeometry`), the next-token loss from the hidden states of the labelled
  positions only, and combines the parts as the released code does (§4);
* ``embed`` / ``embed_texts`` / ``contrastive_loss`` / ``encode``: mean of the final hidden states at
  the slots, L2-normalised (:func:`llara.pooling.pool`, the one pooling function), InfoNCE for
  fine-tuning;
* a layout without slots (``pooling`` ``last``: RepLLaMA, Ma et al. 2023; or ``mean``) goes through the
  same methods: ``prompt_batch`` builds prefix + text (+ EOS) rows as the tokenizer tokenizes them
  (:func:`plain_rows`), ``embed`` pools them with :func:`llara.pooling.pool_hidden`; loading adds no
  slot tokens and resizes nothing, and adaptation refuses such a layout (it trains slots).

The Trainer trains the *stock* module (``self.model``, maybe wrapped by PEFT, DDP or DeepSpeed) and
calls these methods with that wrapped module as ``net``: saving, sharding and resuming stay the
Trainer's own, and every forward goes through the wrapper (DDP's gradient hooks, ZeRO-3 gathers).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from llara import grid
from llara.flex import joint_mask_for
from llara.grid import KINDS, check_choice
from llara.io import DataError
from llara.layout import PromptLayout
from llara.losses import bow_loss, chunked_lm_loss, combine_adaptation_losses, info_nce, info_nce_cross_device
from llara.masks import JointGeometry, joint_layout, position_ids_from_mask
from llara.pooling import pool, pool_hidden
from llara.prompts import SLOT_TOKENS, Prompter, left_pad, prepare_tokenizer
from llara.targets import bow_targets, pad_targets

log = logging.getLogger("llara.model")
TARGET_FIELD = {"ebae": "output_summarize", "ebar": "output_predict"}  # rows of docs/method.md §5
T = TypeVar("T")


def target_kinds(variant: str) -> tuple[str, ...]:
    """The halves a variant trains, as :mod:`llara.grid` registers it (``joint`` both, ``none`` none)."""
    return grid.variant(variant).trains


@dataclass
class AdaptOutput:
    """Adaptation loss and its parts (None where a part is not computed); the Trainer logs the parts."""

    loss: Tensor
    bow_ebae: Tensor | None = None
    bow_ebar: Tensor | None = None
    lm: Tensor | None = None

    def parts(self) -> dict[str, Tensor]:
        return {
            k: v
            for k, v in (("bow_ebae", self.bow_ebae), ("bow_ebar", self.bow_ebar), ("lm", self.lm))
            if v is not None
        }


@dataclass
class ContrastOutput:
    loss: Tensor
    q_emb: Tensor  # (B, H)
    p_emb: Tensor  # (B * G, H)
    scores: Tensor  # (B, B * G) local queries against local passages, divided by the temperature

    def parts(self) -> dict[str, Tensor]:
        return {"infonce": self.loss}


# ---- loading ----------------------------------------------------------------------------------------
def compute_dtype(module: nn.Module, device_type: str) -> torch.dtype:
    """The dtype activations have: autocast's when it is on, else the first floating parameter's."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def has_slot_tokens(tokenizer: PreTrainedTokenizerBase) -> bool:
    vocab = tokenizer.get_vocab()
    return all(t in vocab for t in SLOT_TOKENS)


# what a tokenizer is saved as (tokenizer.json / tokenizer_config.json, vocab.txt / vocab.json +
# merges.txt, SentencePiece or tiktoken models); a folder with none of them has no tokenizer
TOKENIZER_FILE = re.compile(r"tokenizer.*|vocab.*|merges\.txt|.*\.model|.*\.tiktoken")
ORDINARY_TEXT = "the quick brown fox"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _weights_name(path: str | Path) -> str:
    """The weights file of a folder, for messages: its one ``*.safetensors`` file, else the folder."""
    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    return str(files[0]) if len(files) == 1 else f"{path} (its *.safetensors files)"


def pretrained(loader: Callable[..., T], path: str | Path, **kwargs: Any) -> T:
    """``loader(str(path), **kwargs)`` (a ``from_pretrained``) with its failures as one-line
    :class:`DataError` errors naming ``path`` and the fix: a path that does not exist (transformers says
    "Repo id must be in the form ..."), a model it cannot read, a truncated ``*.safetensors``."""
    from safetensors import SafetensorError

    try:
        return loader(str(path), **kwargs)
    except SafetensorError as err:
        raise DataError(
            f"{_weights_name(path)}: cannot read the weights ({_first_line(err)}); the file is truncated "
            "or damaged: copy it again or rerun the stage that wrote it"
        ) from None
    except (OSError, ValueError) as err:  # a bad hub id is an OSError or huggingface_hub's ValueError
        if isinstance(err, DataError):
            raise
        if not Path(path).exists():
            raise DataError(
                f"{path}: no such model folder (nor a hub model of that name in the local cache); check "
                "the path, or run the stage that writes it first"
            ) from None
        if isinstance(err, ValueError):
            raise
        raise DataError(f"{path}: cannot load the model ({_first_line(err)}); check the folder") from None


def tokenizer_of(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of ``path``, refused with a :class:`DataError` naming the folder when the folder
    holds no tokenizer files (transformers would build an empty one, every word unknown, or ask for
    sentencepiece / tiktoken) or when it cannot encode ordinary text."""
    folder = Path(path)
    if folder.is_dir() and not any(
        f.is_file() and TOKENIZER_FILE.fullmatch(f.name) for f in folder.iterdir()
    ):
        raise DataError(
            f"{path}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.*); save the base "
            "model's tokenizer into the folder"
        )
    try:
        tokenizer = pretrained(AutoTokenizer.from_pretrained, path)
    except DataError:
        raise
    except ValueError as err:  # e.g. "install sentencepiece or tiktoken" to convert a slow tokenizer
        raise DataError(f"{path}: cannot build the tokenizer ({_first_line(err)})") from None
    ids = tokenizer(ORDINARY_TEXT, add_special_tokens=False)["input_ids"]
    if not ids or all(i == tokenizer.unk_token_id for i in ids):
        raise DataError(
            f"{path}: the tokenizer cannot encode ordinary text ({ORDINARY_TEXT!r} -> {ids}); its files "
            "are empty or wrong: save the base model's tokenizer into the folder"
        )
    return tokenizer


PROBE_TEXT = "a b"  # what the tokenizer's own special tokens around a text are read off


def adds_eos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer ends every text with its EOS itself (e.g. a RepLLaMA folder exported for
    sentence-transformers, :func:`llara.st.eos_tokenizer`), so nothing is to be appended."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return False
    ids = tokenizer(PROBE_TEXT)["input_ids"]
    return ids[-1:] == [eos] and tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"][-1:] != [eos]


def plain_rows(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, append_eos: bool
) -> list[list[int]]:
    """Rows of a layout without slots (RepLLaMA's): each text tokenized as the tokenizer does (its own
    special tokens: BOS for Llama, none for Qwen2), cut at the end so that the row, EOS included, is
    at most ``max_length`` long; with ``append_eos`` the EOS is the last token of every row, appended
    unless the tokenizer adds it itself (then its truncation keeps it). Prefixes are part of ``texts``.
    This is Tevatron's ``max_len - 1`` then ``+ [eos]``, and what a stock sentence-transformers
    ``Transformer`` gives with :func:`llara.st.eos_tokenizer`."""
    if append_eos and tokenizer.eos_token_id is None:
        raise ValueError("the layout appends an EOS token (append_eos) and the tokenizer has none")
    append = append_eos and not adds_eos(tokenizer)
    room = max_length - 1 if append else max_length
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text before the EOS; raise it")
    ids = tokenizer(texts, truncation=True, max_length=room)["input_ids"]
    return [list(r) + [tokenizer.eos_token_id] for r in ids] if append else [list(r) for r in ids]


def load_tokenizer(
    path: str | Path, style: str | None, allow_untrained_slots: bool = False, append_eos: bool = False
) -> PreTrainedTokenizerBase:
    """Tokenizer of ``path`` prepared for ``style``; a released-style checkpoint must hold the slot tokens.
    ``style`` None is a layout without slots (RepLLaMA): no token is added, only a pad token and left
    padding; ``append_eos`` needs an EOS token."""
    tokenizer = tokenizer_of(path)
    if style is None:
        if append_eos and tokenizer.eos_token_id is None:
            raise DataError(
                f"{path}: the tokenizer has no EOS token, and the layout appends one (append_eos); set "
                "its eos_token or use a layout with append_eos false"
            )
        prepare_tokenizer(tokenizer, "paper")  # the paper style adds no token: pad token, left padding
        return tokenizer
    if style == "released" and not has_slot_tokens(tokenizer) and not allow_untrained_slots:
        raise ValueError(
            f"{path}: the tokenizer lacks the slot tokens <s1>..<s16> of the released prompt style, so "
            "their embeddings were never trained. Use a checkpoint written by `llara.adapt` (or a BAAI LLARA "
            "checkpoint), or pass --allow_untrained_slots to add them with random embeddings."
        )
    prepare_tokenizer(tokenizer, style)
    return tokenizer


def tokenizer_style(layout: PromptLayout) -> str | None:
    """The ``style`` :func:`load_tokenizer` prepares for ``layout``: None (no slot tokens) without slots."""
    return layout.style if layout.uses_slots else None


def adapter_base_path(adapter_dir: Path) -> str:
    """The base model of a LoRA adapter folder; a relative path is taken from the adapter folder."""
    base = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    if not os.path.isabs(base) and (adapter_dir / base).exists():
        return str((adapter_dir / base).resolve())
    return base


def make_adapter_portable(adapter_dir: Path, home: Path | None = None) -> None:
    """Record the base model relative to the adapter folder (``home``: where that folder will be moved
    to), so results move as one tree."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    base = config.get("base_model_name_or_path")
    if base and Path(base).exists():
        where = (home or adapter_dir).resolve()
        config["base_model_name_or_path"] = os.path.relpath(Path(base).resolve(), where)
        path.write_text(json.dumps(config, indent=2) + "\n")


def resize_for_tokenizer(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Grow the embedding matrix (and LM head) when the tokenizer gained tokens; True if it did."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
        return True
    return False


def load_module(
    path: str | Path, *, head: bool, dtype: torch.dtype | None, attn_implementation: str
) -> nn.Module:
    """Stock HF module of ``path``: with the LM head (adaptation) or without (fine-tuning, encoding).
    A LoRA adapter folder is loaded on its base model and merged."""
    path = Path(path)
    auto = AutoModelForCausalLM if head else AutoModel
    kwargs = {"attn_implementation": attn_implementation, "dtype": dtype or torch.float32}
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base = pretrained(auto.from_pretrained, adapter_base_path(path), **kwargs)
        resize_for_tokenizer(base, tokenizer_of(path))  # slot tokens added later
        return pretrained(lambda p: PeftModel.from_pretrained(base, p), path).merge_and_unload()
    return pretrained(auto.from_pretrained, path, **kwargs)


def last_hidden(net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Final hidden states (after the final norm) of a left-padded batch, with or without LM head. (B, T, H)"""
    position_ids = batch.get("position_ids")
    if position_ids is None and batch["attention_mask"].dim() == 2:
        position_ids = position_ids_from_mask(batch["attention_mask"])
    inner = getattr(net, "module", net)  # DDP / DeepSpeed wrappers keep the model as .module
    head = inner.get_output_embeddings() is not None
    extra = {"logits_to_keep": 1, "output_hidden_states": True} if head else {}
    out = net(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=position_ids,
        **extra,
    )
    return out.hidden_states[-1] if head else out.last_hidden_state


# ---- the model --------------------------------------------------------------------------------------
class LlaraModel(nn.Module):
    """A stock HF decoder (``model``) with its tokenizer and prompt layout."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, layout: PromptLayout) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.layout = layout
        # the LLaRA prompt builder; a layout without slots has none (its rows: plain_rows)
        self.prompter = Prompter(tokenizer, layout.style) if layout.uses_slots else None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        head: bool = False,
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
        allow_untrained_slots: bool = False,
        **layout_overrides: Any,
    ) -> LlaraModel:
        """Load ``path``. The layout is :meth:`PromptLayout.resolve`'s: the checkpoint's
        ``llara_prompt.json`` (else the defaults), then ``layout_overrides`` (e.g. ``style="paper"``;
        None keeps the checkpoint's), with a warning for every value that disagrees with the file."""
        layout = PromptLayout.resolve(path, allow_untrained_slots=allow_untrained_slots, **layout_overrides)
        tokenizer = load_tokenizer(path, tokenizer_style(layout), allow_untrained_slots, layout.append_eos)
        model = load_module(path, head=head, dtype=dtype, attn_implementation=attn_implementation)
        resize_for_tokenizer(model, tokenizer)
        return cls(model, tokenizer, layout)

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        """Weights (or a LoRA adapter) + tokenizer + ``llara_prompt.json``."""
        folder = Path(folder)
        self.model.save_pretrained(folder, **kwargs)
        self.save_layout(folder)

    def save_layout(self, folder: str | Path, home: str | Path | None = None) -> None:
        """Tokenizer + ``llara_prompt.json``; an adapter's base path is made relative to ``home`` (the
        folder's final place, when it is written elsewhere and moved)."""
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder)
        self.layout.save(folder)
        if (folder / "adapter_config.json").exists():
            make_adapter_portable(folder, Path(home) if home else None)

    @property
    def n_slots(self) -> int:
        return self.layout.n_slots

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def suffix_len(self, kind: str) -> int:
        return self.prompter.suffix_len(kind)

    def row_geometry(self, width: int, kinds: tuple[str, ...]) -> JointGeometry:
        """The columns of a left-padded row of ``width`` that ends with the suffixes of ``kinds`` (one
        prompt, or both: EBAE then EBAR)."""
        lens = {k: self.suffix_len(k) if k in kinds else 0 for k in KINDS}
        return JointGeometry(width, lens["ebae"], lens["ebar"])

    # ---- batches ------------------------------------------------------------------------------------
    def prompt_batch(
        self, texts: list[str], kind: str, max_length: int, pad_to_multiple_of: int | None = None
    ):
        """Left-padded ``input_ids``, ``attention_mask``, ``position_ids`` (B, T) under prompt ``kind``
        (``layout.prompt_for(role)``: a prompt kind with slots; ``query`` / ``passage`` without, whose
        prefix goes before each text, see :func:`plain_rows`)."""
        layout = self.layout
        if layout.uses_slots:
            return self._pad([self.prompter.build(t, kind, max_length) for t in texts], pad_to_multiple_of)
        if kind not in ("query", "passage"):
            raise ValueError(
                f"a layout with {layout.pooling} pooling embeds roles (query, passage), not prompt {kind!r}"
            )
        prefix = layout.prefix_for(kind)
        rows = plain_rows(self.tokenizer, [prefix + t for t in texts], max_length, layout.append_eos)
        return self._pad(rows, pad_to_multiple_of)

    def targets(self, texts: list[str], max_length: int, remove_stop_words: bool) -> list[list[int]]:
        specials = frozenset(self.tokenizer.all_special_ids)
        return bow_targets(self.tokenizer, texts, specials, max_length, remove_stop_words)

    def adaptation_batch(
        self,
        rows: list[dict[str, str]],
        variant: str,
        *,
        max_length: int,
        target_max_length: int,
        remove_stop_words: bool = False,
        pad_to_multiple_of: int | None = None,
    ) -> dict[str, Tensor]:
        """Rows ``{input, output_summarize, output_predict}`` -> model inputs (2-D padding mask: the
        joint 4-D mask is built on the model's device in its dtype), ``lm_labels`` (B, T) with -100
        off the text, and ``{kind}_targets`` (B, K) padded with -1."""
        p, kinds = self.prompter, target_kinds(variant)
        if p is None:
            raise ValueError(
                f"adaptation trains the slot tokens, and this layout pools {self.layout.pooling!r} (no "
                "slots); adapt a model whose llara_prompt.json has pooling 'slots' (or none)"
            )
        if not kinds:
            raise ValueError(f"variant {variant!r} trains nothing: it has no adaptation loss")
        if len(kinds) == 2:  # both halves in one pass (docs/method.md §3)
            ids = [p.build_joint(r["input"], max_length) for r in rows]
            batch = joint_layout(
                ids, p.suffix_len("ebae"), p.suffix_len("ebar"), p.tokenizer.pad_token_id, pad_to_multiple_of
            )
        else:
            (kind,) = kinds
            ids = [p.build(r["input"], kind, max_length) for r in rows]
            batch = self._pad(ids, pad_to_multiple_of)
        head = len(p.prefix_ids)
        ends = [self.row_geometry(len(r), kinds).text_end for r in ids]  # text end of each unpadded row
        labels = [
            [-100] * head + r[head:end] + [-100] * (len(r) - end) for r, end in zip(ids, ends, strict=True)
        ]
        batch["lm_labels"] = left_pad(labels, -100, pad_to_multiple_of)["input_ids"]  # (B, T)
        for kind in kinds:
            texts = [r[TARGET_FIELD[kind]] for r in rows]
            batch[f"{kind}_targets"] = pad_targets(self.targets(texts, target_max_length, remove_stop_words))
        return batch

    def _pad(self, ids: list[list[int]], pad_to_multiple_of: int | None) -> dict[str, Tensor]:
        """Left-padded ids, padding mask and positions counted from each row's first real token. (B, T)"""
        batch = left_pad(ids, self.tokenizer.pad_token_id, pad_to_multiple_of)
        batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
        return batch

    # ---- adaptation -----------------------------------------------------------------------------------
    def adaptation_loss(
        self,
        batch: dict[str, Tensor],
        *,
        bow_scale: float = grid.BOW_SCALE,
        lm_weight: float = 1.0,
        lm_chunk_size: int | None = 256,
        net: nn.Module | None = None,
    ) -> AdaptOutput:
        """EBAE/EBAR bag-of-words parts + ``lm_weight`` x next-token loss on T (docs/method.md §4).

        The variant is read off the batch (which ``*_targets`` it holds). Logits are taken at the slot
        columns only; the LM term goes from the hidden states of the labelled positions straight to a
        (chunked) cross-entropy, so no (B, T, V) tensor is made. ``lm_chunk_size=None`` instead asks the
        stock model for logits at every text column (the plain path, also used when the LM head's
        weight is not materialised here, as under DeepSpeed ZeRO-3).
        """
        net = net if net is not None else self.model
        ids = batch["input_ids"]  # (B, T)
        width = ids.shape[1]
        kinds = tuple(k for k in KINDS if f"{k}_targets" in batch)
        geo = self.row_geometry(width, kinds)
        mask = batch["attention_mask"]
        if len(kinds) == 2 and mask.dim() == 2:  # dense 4-D mask in the compute dtype, or a BlockMask
            attn = getattr(self.model.config, "_attn_implementation", "sdpa")
            dtype = compute_dtype(self.model, ids.device.type)
            mask = joint_mask_for(attn, mask, geo.ebae_len, geo.ebar_len, dtype)
        slots = [geo.slot_columns(k, self.n_slots) for k in kinds]
        head_weight = self.model.get_output_embeddings().weight
        chunked = lm_weight > 0 and lm_chunk_size is not None and head_weight.numel() > 0
        text_end = geo.text_end
        keep = torch.cat(([torch.arange(text_end)] if lm_weight > 0 and not chunked else []) + slots)
        out = net(
            input_ids=ids,
            attention_mask=mask,
            position_ids=batch["position_ids"],
            logits_to_keep=keep.to(ids.device),
            output_hidden_states=chunked,
        )
        n_lm = 0 if chunked or lm_weight == 0 else text_end
        slot_logits = out.logits[:, n_lm:]  # (B, K * S, V), one slice for all halves
        bows: dict[str, Tensor] = {}
        for i, kind in enumerate(kinds):
            part = slot_logits[:, i * self.n_slots : (i + 1) * self.n_slots]  # (B, S, V)
            bows[kind], _ = bow_loss(part, batch[f"{kind}_targets"], bow_scale)
        lm = None
        if lm_weight > 0:
            labels = batch["lm_labels"][:, 1:text_end]  # (B, T' - 1): label of column t + 1
            if chunked:
                rows = labels != -100  # (B, T' - 1)
                hidden = out.hidden_states[-1][:, : text_end - 1][rows]  # (N, H) labelled positions only
                hidden = hidden.to(head_weight.dtype)  # as the LM head would see it (autocast may differ)
                bias = getattr(self.model.get_output_embeddings(), "bias", None)
                lm = chunked_lm_loss(hidden, head_weight, labels[rows], chunk_size=lm_chunk_size, bias=bias)
            else:
                logits = out.logits[:, : text_end - 1].flatten(0, 1)  # (B * (T' - 1), V)
                lm = torch.nn.functional.cross_entropy(logits.float(), labels.flatten(), ignore_index=-100)
        # the official code leaves a half out of the average when no row of the batch has a target
        has = {k: bool((batch[f"{k}_targets"] >= 0).any()) for k in kinds}
        parts = combine_adaptation_losses(
            bows.get("ebae") if has.get("ebae") else None,
            bows.get("ebar") if has.get("ebar") else None,
            lm,
            lm_weight,
        )
        return AdaptOutput(parts["loss"], bows.get("ebae"), bows.get("ebar"), lm)

    # ---- embeddings and fine-tuning ------------------------------------------------------------------
    def embed(
        self, batch: dict[str, Tensor], *, net: nn.Module | None = None, normalize: bool = True
    ) -> Tensor:
        """A left-padded prompt batch -> pooled states, L2-normalised: the slots' mean (LLaRA), else
        the layout's pooling over the real tokens (``last``: RepLLaMA's EOS). (B, H)"""
        hidden = last_hidden(net if net is not None else self.model, batch)  # (B, T, H)
        if self.layout.uses_slots:
            return pool(hidden, self.n_slots, normalize=normalize)
        return pool_hidden(hidden, batch["attention_mask"], self.layout.pooling, normalize=normalize)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], kind: str, max_length: int) -> Tensor:
        """One batch of texts -> (N, H) float32 embeddings under prompt ``kind`` (``layout.prompt_for``
        of a role; on the model's device)."""
        batch = self.prompt_batch(texts, kind, max_length)
        return self.embed({k: v.to(self.device) for k, v in batch.items()}).float()

    def contrastive_loss(
        self,
        queries: dict[str, Tensor],
        passages: dict[str, Tensor],
        *,
        temperature: float = 0.01,
        group_size: int = 16,
        cross_device: bool = False,
        net: nn.Module | None = None,
    ) -> ContrastOutput:
        """InfoNCE of queries against their groups of passages, in-batch (and cross-device) negatives."""
        q = self.embed(queries, net=net)  # (B, H)
        p = self.embed(passages, net=net)  # (B * G, H)
        loss_fn = info_nce_cross_device if cross_device else info_nce
        loss = loss_fn(q, p, temperature, group_size)
        scores = q.float() @ p.float().T / temperature  # (B, B * G)
        return ContrastOutput(loss, q, p, scores.detach())

    @torch.inference_mode()
    def encode(
        self, texts: list[str], role: str, *, batch_size: int = 32, max_length: int | None = None
    ) -> Tensor:
        """Texts -> (N, H) float32 embeddings; ``role`` is ``query`` or ``passage`` (its prompt or prefix
        and length come from the layout) or, with slots, a prompt kind (``ebae`` / ``ebar``, then give
        ``max_length``)."""
        if role in ("query", "passage"):
            kind = self.layout.prompt_for(role)
            max_length = max_length or self.layout.max_length_for(role)
        else:
            kind = check_choice(role, KINDS + ("query", "passage"), "role")
            if max_length is None:
                raise ValueError("encode with a prompt kind needs max_length")
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)  # less padding
        out = torch.empty(len(texts), self.model.config.hidden_size)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.embed_texts([texts[i] for i in idx], kind, max_length).cpu()
        self.model.train(was_training)
        return out
