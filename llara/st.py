"""A LLaRA checkpoint as a ``sentence_transformers.SentenceTransformer``, and MTEB on local files.

:class:`LlaraSTModule` is a sentence-transformers input module that holds a :class:`LlaraModel` and its
prompt layout; a SentenceTransformer made of that one module embeds exactly as ``LlaraModel.encode``:
``prefix + text + suffix`` with the text truncated *before* the suffix (the slots are never cut), mean
of the final hidden states at the ``n_slots`` slots, L2-normalised. The role comes through
sentence-transformers' own task mechanism: ``encode_query`` (task ``query``) gets the query prompt
and length of the layout, ``encode_document`` (task ``document``) the passage prompt and length;
``encode(texts, task="query")`` works too, and a plain ``encode(texts)`` embeds as passages. A prompt
string passed to ``encode_*`` (an instruction) goes in front of the text, inside the LLaRA prompt.

A folder written by :func:`export` (``python -m llara.st``) is at once a SentenceTransformer folder
(``modules.json``, ``config_sentence_transformers.json``, ``llara_st.json``) and, unless written with
``--reference``, a LLaRA checkpoint (weights with any LoRA adapter merged, tokenizer,
``llara_prompt.json``) that ``llara.encode`` reads as well. ``--reference`` writes only the
sentence-transformers files and loads the checkpoint by its path relative to the folder (the two
move together). The module class lives in this package, so loading needs ``llara`` installed and
``trust_remote_code=True`` (sentence-transformers 6 asks that for any module class outside its own
namespace)::

    model = SentenceTransformer("ckpt-st", trust_remote_code=True)
    q = model.encode_query(["what is llara?"]); p = model.encode_document(["LLaRA adapts ..."])

A checkpoint whose layout has no slots (RepLLaMA: ``pooling`` ``last``, prefixes, EOS appended;
:mod:`llara.layout`) exports, unless ``--reference``, to a folder of *stock* sentence-transformers
modules, loadable without ``llara`` installed and without ``trust_remote_code``: ``Transformer``
(the weights, any LoRA adapter merged; the tokenizer made to end every text with EOS by itself,
:func:`eos_tokenizer`; right padding; per-task lengths ``query_length`` / ``document_length`` from the
layout) + ``Pooling(pooling_mode="lasttoken")`` (``mean`` for a mean layout) + ``Normalize``, with the
layout's prefixes as the model's prompts ``{"query": ..., "document": ...}`` (the names
``encode_query`` / ``encode_document`` and MTEB look up). It embeds as ``LlaraModel.encode`` does: the
export checks that the written tokenizer, reloaded, gives our rows. ``--reference`` still writes the
``LlaraSTModule`` folder (stock modules cannot load another folder's adapter).

MTEB: :func:`write_mteb_folder` turns a BEIR folder into the local layout MTEB's retrieval loader reads
(no hub), :func:`local_retrieval_task` makes a retrieval task of it, and ``mteb.evaluate`` runs the
SentenceTransformer on it (MTEB calls ``encode_query`` / ``encode_document``).

CLI::

    python -m llara.st --model results/finetune/.../model --output results/finetune/.../model-st \\
        [--reference] [--query-prompt ebar --passage-prompt ebae --query-max-length 64 ...]
        [--layout-preset repllama]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule

from llara.grid import KINDS, PROMPT_STYLES, check_choice
from llara.io import BAD_INPUT, DataError, atomic_folder, cli_main
from llara.layout import PRESETS, PromptLayout, layout_flags
from llara.model import (
    PROBE_TEXT,
    LlaraModel,
    adapter_base_path,
    adds_eos,
    load_tokenizer,
    plain_rows,
    tokenizer_style,
)

ST_CONFIG_FILE = "llara_st.json"
ROLES = ("query", "passage")
# sentence-transformers' task names (encode_query -> "query", encode_document -> "document") -> our roles
TASK_ROLES = {"query": "query", "document": "passage", "passage": "passage", "corpus": "passage"}
SIMILARITY = "dot"  # embeddings are L2-normalised; LLaRA and faiss IndexFlatIP score by inner product
ST_POOLING = {"last": "lasttoken", "mean": "mean"}  # layout pooling -> sentence-transformers Pooling mode
ST_PROMPTS = {"query": "query", "passage": "document"}  # our roles -> the prompt names ST and MTEB look up


class LlaraSTModule(InputModule):
    """sentence-transformers input module: texts -> embeddings (B, H), float32, unit length, as
    ``LlaraModel.embed`` makes them under the checkpoint's layout (LLaRA's slots; any other layout too,
    which ``--reference`` folders of a RepLLaMA checkpoint use).

    ``checkpoint`` is None when the weights are in the module's own folder, else the path of the
    checkpoint relative to it (a ``--reference`` folder). ``default_role`` is the role of a plain
    ``encode`` call (no task).
    """

    config_file_name = ST_CONFIG_FILE
    config_keys = ["default_role", "checkpoint", "allow_untrained_slots"]
    save_in_root = True

    def __init__(
        self,
        llara: LlaraModel,
        default_role: str = "passage",
        checkpoint: str | None = None,
        allow_untrained_slots: bool = False,
    ) -> None:
        super().__init__()
        self.llara = llara
        self.tokenizer = llara.tokenizer
        self.default_role = check_choice(default_role, ROLES, "default role")
        self.checkpoint = checkpoint
        self.allow_untrained_slots = allow_untrained_slots  # as exported: the load checks the same way
        self.source: Path | None = None  # the referenced checkpoint, resolved, once loaded

    @property
    def layout(self) -> PromptLayout:
        return self.llara.layout

    @property
    def max_seq_length(self) -> int:
        """The passage length (queries use ``layout.query_max_length``); prompt tokens included."""
        return self.layout.passage_max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.llara.layout = self.layout.override(passage_max_length=value)

    def get_embedding_dimension(self) -> int:
        return self.llara.model.config.hidden_size

    def role(self, task: str | None) -> str:
        if task is None:
            return self.default_role
        if task not in TASK_ROLES:
            raise ValueError(f"unknown task {task!r} for a LLaRA model; use one of {', '.join(TASK_ROLES)}")
        return TASK_ROLES[task]

    def preprocess(
        self, inputs: Sequence[Any], prompt: str | None = None, task: str | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Texts -> left-padded ``input_ids``, ``attention_mask``, ``position_ids`` (B, T) under the
        prompt and length of the role that ``task`` names."""
        bad = next((x for x in inputs if not isinstance(x, str)), None)
        if bad is not None:
            raise TypeError(f"a LLaRA model embeds single texts, got {type(bad).__name__}")
        role = self.role(task)
        texts = [prompt + t for t in inputs] if prompt else list(inputs)
        return self.llara.prompt_batch(texts, self.layout.prompt_for(role), self.layout.max_length_for(role))

    def forward(self, features: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        batch = {k: features[k] for k in ("input_ids", "attention_mask", "position_ids")}
        features["sentence_embedding"] = self.llara.embed(batch)  # (B, H) float32, L2-normalised
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Weights + tokenizer + ``llara_prompt.json`` (unless the module refers to a checkpoint) and
        ``llara_st.json``."""
        if self.checkpoint is None:
            self.llara.model.save_pretrained(output_path, safe_serialization=safe_serialization)
            self.llara.save_layout(output_path)
            self.save_config(output_path)
            return
        self.layout.save(output_path)  # the layout in use, read back over the checkpoint's
        config = self.get_config_dict()
        if self.source is not None:  # saved elsewhere: the reference is made relative to the new place
            config["checkpoint"] = os.path.relpath(self.source, Path(output_path).resolve())
        Path(output_path, ST_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LlaraSTModule:
        """Load from a local folder; ``model_kwargs`` may give ``dtype`` and ``attn_implementation``."""
        folder = Path(model_name_or_path, subfolder)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: not a folder (LLaRA SentenceTransformers load from local folders)"
            )
        config = json.loads((folder / ST_CONFIG_FILE).read_text())
        source = folder
        if config.get("checkpoint") is not None:
            source = (folder / config["checkpoint"]).resolve()
            if not source.exists():
                raise FileNotFoundError(
                    f"{folder / ST_CONFIG_FILE}: the checkpoint it refers to, {config['checkpoint']} "
                    f"({source}), is missing; keep the two folders side by side or export without --reference"
                )
        model_kwargs = model_kwargs or {}
        dtype = model_kwargs.get("dtype", model_kwargs.get("torch_dtype"))
        if dtype == "auto":
            dtype = stored_dtype(source)
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        in_use = PromptLayout.read(folder)  # the layout in use (a referenced checkpoint may say otherwise)
        llara = LlaraModel.from_pretrained(
            source,
            dtype=dtype,
            attn_implementation=model_kwargs.get("attn_implementation", "sdpa"),
            allow_untrained_slots=config.get("allow_untrained_slots", False),
            **(asdict(in_use) if in_use is not None else {}),
        )
        module = cls(
            llara.eval(),
            default_role=config.get("default_role", "passage"),
            checkpoint=config.get("checkpoint"),
            allow_untrained_slots=config.get("allow_untrained_slots", False),
        )
        module.source = source if config.get("checkpoint") is not None else None
        return module


# ---- export ----------------------------------------------------------------------------------------
def stored_dtype(path: str | Path) -> torch.dtype:
    """The dtype a checkpoint's weights are stored in (a LoRA adapter: its base model's); fp32 if unsaid."""
    from transformers import AutoConfig

    path = Path(path)
    source = adapter_base_path(path) if (path / "adapter_config.json").exists() else str(path)
    dtype = getattr(AutoConfig.from_pretrained(source), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def build(
    checkpoint: str | Path,
    *,
    default_role: str = "passage",
    dtype: torch.dtype | None = None,
    allow_untrained_slots: bool = False,
    device: str | None = None,
    **layout_overrides: Any,
):
    """A SentenceTransformer of ``checkpoint`` (a grid checkpoint, a LoRA adapter folder, a merged model,
    or a BAAI-layout folder), in memory; ``layout_overrides`` as for ``LlaraModel.from_pretrained``."""
    llara = LlaraModel.from_pretrained(
        checkpoint, dtype=dtype, allow_untrained_slots=allow_untrained_slots, **layout_overrides
    )
    return sentence_transformer(llara.eval(), default_role, allow_untrained_slots, device)


def sentence_transformer(
    llara: LlaraModel, default_role: str, allow_untrained_slots: bool, device: str | None = None
):
    """The in-memory SentenceTransformer of one :class:`LlaraSTModule` around a loaded model."""
    from sentence_transformers import SentenceTransformer

    module = LlaraSTModule(llara, default_role, None, allow_untrained_slots)
    return SentenceTransformer(modules=[module], similarity_fn_name=SIMILARITY, device=device)


def checked_layout(checkpoint: Path, allow_untrained_slots: bool = False, **overrides: Any) -> PromptLayout:
    """The layout ``LlaraModel.from_pretrained(checkpoint, **overrides)`` would use, with its checks
    (trained slots, slot tokens in the tokenizer), without loading the weights."""
    layout = PromptLayout.resolve(checkpoint, allow_untrained_slots=allow_untrained_slots, **overrides)
    load_tokenizer(checkpoint, tokenizer_style(layout), allow_untrained_slots, layout.append_eos)
    return layout


# ---- a layout without slots: stock sentence-transformers modules -------------------------------------
def eos_tokenizer(tokenizer: Any, where: str | Path = "the tokenizer") -> Any:
    """A copy of ``tokenizer`` that ends every text with its EOS by itself, as a stock sentence-transformers
    ``Transformer`` needs (it appends nothing): the backend's post-processor becomes ``<its leading
    special tokens> $A <eos>``, so the BOS a Llama tokenizer puts first stays, and truncation keeps the
    EOS. (``add_eos_token = True`` rebuilds the post-processor from flags that say no BOS for tokenizers
    saved by transformers 5, dropping the BOS.) A tokenizer that already does is copied as it is."""
    from tokenizers import processors

    tok = copy.deepcopy(tokenizer)
    if adds_eos(tok):
        return tok
    backend = getattr(tok, "backend_tokenizer", None)
    plain = tok(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    full = tok(PROBE_TEXT)["input_ids"]
    head = full[: len(full) - len(plain)]
    if backend is None or tok.eos_token_id is None or full[len(head) :] != plain:
        raise DataError(
            f"{where}: cannot make the tokenizer end every text with EOS (it has no fast backend, no EOS "
            "token, or puts special tokens after the text); export with --reference instead"
        )
    lead = tok.convert_ids_to_tokens(head)  # e.g. ["<s>"]
    eos = tok.eos_token
    specials = dict(zip(lead, head, strict=True)) | {eos: tok.eos_token_id}
    backend.post_processor = processors.TemplateProcessing(
        single=[*lead, "$A", eos],
        pair=[*lead, "$A", eos, *(f"{t}:1" for t in lead), "$B:1", f"{eos}:1"],
        special_tokens=list(specials.items()),
    )
    return tok


def check_stock_tokenizer(folder: Path, llara: LlaraModel) -> None:
    """The tokenizer written to ``folder``, reloaded as sentence-transformers will, must give the rows
    ``LlaraModel`` builds (prefix + text cut to the length, EOS last), at both lengths."""
    from transformers import AutoTokenizer

    written = AutoTokenizer.from_pretrained(str(folder))
    layout = llara.layout
    texts = [PROBE_TEXT, " ".join([PROBE_TEXT] * 400)]  # a short one, and one cut at either length
    for role in ROLES:
        length = layout.max_length_for(role)
        rows = [layout.prefix_for(role) + t for t in texts]
        ours = plain_rows(llara.tokenizer, rows, length, layout.append_eos)
        theirs = [list(r) for r in written(rows, truncation=True, max_length=length)["input_ids"]]
        if theirs != ours:
            raise DataError(
                f"{folder}: the exported tokenizer does not tokenize {role}s as the checkpoint does "
                f"({theirs[0]} vs {ours[0]}); export with --reference instead"
            )


def write_stock(folder: Path, llara: LlaraModel, default_role: str, dtype: torch.dtype) -> None:
    """The files of a stock sentence-transformers model of ``llara`` (a layout without slots) in
    ``folder``: ``Transformer`` + ``Pooling`` + ``Normalize``, the prefixes as prompts, and
    ``llara_prompt.json`` (the folder is a checkpoint ``llara.encode`` reads as well)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    layout = llara.layout
    stage = folder / "hf-model"  # the plain HF folder the Transformer module is made from
    llara.model.save_pretrained(stage)
    (eos_tokenizer(llara.tokenizer, stage) if layout.append_eos else llara.tokenizer).save_pretrained(stage)
    check_stock_tokenizer(stage, llara)
    transformer = Transformer(
        str(stage),
        model_kwargs={"dtype": dtype},
        max_seq_length=layout.max_length_for(default_role),  # a plain encode() is the default role's
        query_length=layout.query_max_length,
        document_length=layout.passage_max_length,
        # positions count from 0 at the first token, as ours do from each row's first real token
        processing_kwargs={"text": {"padding_side": "right"}},
    )
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=ST_POOLING[layout.pooling])
    model = SentenceTransformer(
        modules=[transformer, pooling, Normalize()],
        prompts={ST_PROMPTS[r]: layout.prefix_for(r) for r in ROLES},
        default_prompt_name=ST_PROMPTS[default_role],
        similarity_fn_name=SIMILARITY,
        device="cpu",
    )
    model.save_pretrained(str(folder), create_model_card=False)
    shutil.rmtree(stage)
    layout.save(folder)


def write_reference(
    folder: Path, layout: PromptLayout, checkpoint: str, default_role: str, allow_untrained_slots: bool
) -> None:
    """The files of a SentenceTransformer whose one module loads ``checkpoint`` (relative to ``folder``):
    what ``SentenceTransformer.save`` writes for it, without the weights."""
    import sentence_transformers
    import transformers

    name = f"{LlaraSTModule.__module__}.{LlaraSTModule.__name__}"
    modules = [{"idx": 0, "name": "0", "path": "", "type": name}]
    versions = {
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "pytorch": torch.__version__,
    }
    config = {
        "model_type": "SentenceTransformer",
        "__version__": versions,
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": SIMILARITY,
    }
    module = {
        "default_role": default_role,
        "checkpoint": checkpoint,
        "allow_untrained_slots": allow_untrained_slots,
    }
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / ST_CONFIG_FILE).write_text(json.dumps(module, indent=2) + "\n")
    layout.save(folder)


def card(layout: PromptLayout, source: str, reference: str | None) -> str:
    where = f"the checkpoint at `{reference}` (relative to this folder)" if reference else "this folder"
    if not layout.uses_slots:
        eos = " + EOS" if layout.append_eos else ""
        token = "the last token" if layout.pooling == "last" else "the mean over the tokens"
        stock = reference is None
        load = "" if stock else ", trust_remote_code=True"
        return f"""# Dense retriever (sentence-transformers{", stock modules" if stock else ""})

Written by `python -m llara.st` from `{source}`; weights: {where}.
Layout: queries `{layout.query_prefix!r}` + text{eos} (max {layout.query_max_length} tokens), passages
`{layout.passage_prefix!r}` + text{eos} (max {layout.passage_max_length} tokens); embedding = final hidden
state at {token}, L2-normalised; score = inner product.

```python
from sentence_transformers import SentenceTransformer{"" if stock else "  # needs `pip install llara`"}
model = SentenceTransformer("PATH/TO/THIS/FOLDER"{load})
q = model.encode_query(["a question"])  # the query prefix goes first
p = model.encode_document(["a passage"])
scores = model.similarity(q, p)
```
"""
    return f"""# LLaRA retriever (sentence-transformers)

Written by `python -m llara.st` from `{source}`; weights: {where}.
Prompt layout: style `{layout.style}`, queries `{layout.query_prompt}` (max {layout.query_max_length} tokens),
passages `{layout.passage_prompt}` (max {layout.passage_max_length} tokens); embedding = mean of the final
hidden states at the last {layout.n_slots} tokens, L2-normalised; score = inner product.

```python
from sentence_transformers import SentenceTransformer  # needs `pip install llara`
model = SentenceTransformer("PATH/TO/THIS/FOLDER", trust_remote_code=True)
q = model.encode_query(["a question"])
p = model.encode_document(["a passage"])
scores = model.similarity(q, p)
```
"""


def export(
    checkpoint: str | Path,
    output: str | Path,
    *,
    reference: bool = False,
    overwrite: bool = False,
    default_role: str = "passage",
    dtype: torch.dtype | None = None,
    allow_untrained_slots: bool = False,
    **layout_overrides: Any,
) -> Path:
    """Write the SentenceTransformer folder of ``checkpoint`` to ``output``, atomically: it is built in a
    temporary folder beside ``output`` and renamed when complete (an existing ``output`` is refused
    unless ``overwrite``). A copy holds the weights (a LoRA adapter merged) in the checkpoint's stored
    dtype unless ``dtype`` is given; ``reference`` writes no weights and loads none."""
    checkpoint, output = Path(checkpoint), Path(output)
    if not checkpoint.is_dir():
        raise DataError(f"{checkpoint}: no such checkpoint folder")
    if output.exists() and not overwrite:
        raise DataError(f"{output} exists; pass --overwrite to replace it")
    if output.resolve() == checkpoint.resolve():
        raise DataError(f"{output}: the output must not be the checkpoint itself")
    check_choice(default_role, ROLES, "default role")
    if reference:
        layout = checked_layout(checkpoint, allow_untrained_slots, **layout_overrides)
        ref = os.path.relpath(checkpoint.resolve(), output.resolve())
    else:
        dtype = dtype or stored_dtype(checkpoint)
        llara = LlaraModel.from_pretrained(
            checkpoint, dtype=dtype, allow_untrained_slots=allow_untrained_slots, **layout_overrides
        ).eval()
        layout, ref = llara.layout, None
    with atomic_folder(output, overwrite=overwrite) as tmp:
        if reference:
            write_reference(tmp, layout, ref, default_role, allow_untrained_slots)
        elif not layout.uses_slots:  # stock modules (see the module docstring)
            write_stock(tmp, llara, default_role, dtype)
        else:
            model = sentence_transformer(llara, default_role, allow_untrained_slots, device="cpu")
            model.save_pretrained(str(tmp), create_model_card=False)
        (tmp / "README.md").write_text(card(layout, ref or checkpoint.name, ref))
    return output


def load(path: str | Path, device: str | None = None, **kwargs: Any):
    """``SentenceTransformer(path, trust_remote_code=True)``: the folder's module class is ours (a folder
    of stock modules loads the same way)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(path), device=device, trust_remote_code=True, local_files_only=True, **kwargs
    )


# ---- MTEB on local files ---------------------------------------------------------------------------
def mteb_readme(split: str) -> str:
    """The dataset card header that names the parts for ``datasets.load_dataset(folder, part)``."""
    return (
        "---\nconfigs:\n"
        "- config_name: corpus\n  data_files:\n  - split: corpus\n    path: corpus.jsonl\n"
        "- config_name: queries\n  data_files:\n  - split: queries\n    path: queries.jsonl\n"
        f"- config_name: default\n  data_files:\n  - split: {split}\n    path: qrels/{split}.jsonl\n"
        "---\n"
    )


def write_mteb_folder(source: Any, output: str | Path, split: str = "test") -> Path:
    """A folder MTEB loads as a retrieval dataset without the hub: BEIR files (corpus.jsonl,
    queries.jsonl, qrels/<split>.tsv, so ``llara.encode`` reads it too) plus qrels/<split>.jsonl and a
    README.md header naming the parts. ``source`` is a BEIR folder or a ``llara.beir.BeirDataset``."""
    from llara.beir import load_beir, write_beir
    from llara.io import atomic_write_jsonl, atomic_write_text

    ds = load_beir(source, split) if isinstance(source, str | os.PathLike) else source
    output = Path(output)
    write_beir(ds, output, split)
    rows = (
        {"query-id": q, "corpus-id": d, "score": r} for q, docs in ds.qrels.items() for d, r in docs.items()
    )
    atomic_write_jsonl(output / "qrels" / f"{split}.jsonl", rows)
    atomic_write_text(output / "README.md", mteb_readme(split))
    return output


def local_retrieval_task(
    folder: str | Path, name: str, split: str = "test", ignore_identical_ids: bool = True
):
    """An MTEB retrieval task reading ``folder`` (see :func:`write_mteb_folder`), main score NDCG@10.
    ``ignore_identical_ids`` drops a retrieved document whose id is the query's, as ``llara.score`` does."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=name,
        description=f"local retrieval set {Path(folder).resolve()} (split {split})",
        dataset={"path": str(Path(folder).resolve()), "revision": "main"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
    )
    task_class = type(
        name, (AbsTaskRetrieval,), {"metadata": metadata, "ignore_identical_ids": ignore_identical_ids}
    )
    return task_class()


def fingerprint(folder: str | Path) -> str:
    """A short hash of the path, names, sizes and modification times of the files that make up the
    model of a folder written by :func:`export` (and of the checkpoint a ``--reference`` folder names):
    it changes whenever a file is rewritten, without reading the weights."""
    folder = Path(folder).resolve()
    dirs = [folder]
    module_config = folder / ST_CONFIG_FILE  # a folder of stock modules has none
    ref = json.loads(module_config.read_text()).get("checkpoint") if module_config.is_file() else None
    if ref is not None:
        dirs.append((folder / ref).resolve())
    digest = hashlib.sha256()
    for d in dirs:
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            stat = f.stat()
            digest.update(f"{f}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def mteb_model(path: str | Path, *, name: str | None = None, revision: str | None = None, **kwargs: Any):
    """MTEB's own SentenceTransformer wrapper around the folder's model, named ``llara/<folder name>``
    with :func:`fingerprint` as revision (MTEB keys its result cache by name and revision; a
    SentenceTransformer loaded from a folder has neither, so every LLaRA model would share one cache
    entry and a second model would be served the first one's scores). ``kwargs`` go to :func:`load`."""
    from mteb.models import SentenceTransformerEncoderWrapper

    wrapper = SentenceTransformerEncoderWrapper(load(path, **kwargs))
    meta = {"name": name or f"llara/{Path(path).resolve().name}", "revision": revision or fingerprint(path)}
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update=meta)
    return wrapper


# ---- CLI -------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m llara.st",
        description="Write a checkpoint's SentenceTransformer folder (load it with trust_remote_code=True).",
    )
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="checkpoint folder (grid checkpoint, LoRA adapter, merged, BAAI layout)",
    )
    p.add_argument("--output", required=True, type=Path, help="folder to write (atomically)")
    p.add_argument(
        "--reference",
        action="store_true",
        help="write no weights: the folder loads --model by its path relative to the output",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--default-role", choices=ROLES, default="passage", help="role of a plain encode() call")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="default: as stored")
    p.add_argument("--prompt-style", choices=PROMPT_STYLES, default=None, help="default: the checkpoint's")
    p.add_argument("--query-prompt", choices=KINDS, default=None, help="default: the checkpoint's")
    p.add_argument("--passage-prompt", choices=KINDS, default=None, help="default: the checkpoint's")
    p.add_argument("--query-max-length", type=int, default=None, help="default: the checkpoint's (64)")
    p.add_argument("--passage-max-length", type=int, default=None, help="default: the checkpoint's (160)")
    p.add_argument(
        "--layout-preset",
        choices=tuple(PRESETS),
        default=None,
        help="pooling fields of a method (repllama: prefixes + EOS, last token); default: the checkpoint's",
    )
    p.add_argument("--allow-untrained-slots", action="store_true")
    args = p.parse_args(argv)
    for name in ("query_max_length", "passage_max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    try:
        out = export(
            args.model,
            args.output,
            reference=args.reference,
            overwrite=args.overwrite,
            default_role=args.default_role,
            dtype=dtypes.get(args.dtype),
            allow_untrained_slots=args.allow_untrained_slots,
            **layout_flags(args),
        )
    except ValueError as exc:  # a DataError, or a bad value (a prompt whose slots were never trained)
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT
    layout = PromptLayout.read(out)
    stock = not (out / ST_CONFIG_FILE).exists()  # a layout without slots, not --reference
    how = "stock modules" if stock else "load with trust_remote_code=True"
    print(f"{out}: SentenceTransformer of {args.model} ({layout}); {how}")
    return 0


if __name__ == "__main__":
    # run the package's module, not this __main__ copy: the exported modules.json names the module
    # class by its module (llara.st.LlaraSTModule, which SentenceTransformer can import)
    from llara.st import main as _main

    sys.exit(_main())
