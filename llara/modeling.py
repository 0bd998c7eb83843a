"""Loading decoders for LLaRA and turning texts into embeddings with the stock transformers models.

No model forward is copied here: the joint pass only passes a 4-D mask and position ids
(:mod:`llara.masks`); embeddings always go through :func:`llara.pooling.pool`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from llara.masks import position_ids_from_mask
from llara.pooling import pool
from llara.prompts import Prompter, check_kind, prepare_tokenizer


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on a GPU that has it, fp16 on other GPUs, fp32 on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str | Path, style: str):
    """Tokenizer from ``path``, prepared for ``style`` (slot tokens, pad token, left padding)."""
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    prepare_tokenizer(tokenizer, style)
    return tokenizer


def resize_for_tokenizer(model: PreTrainedModel, tokenizer) -> bool:
    """Grow the embedding matrix (and LM head) when the tokenizer gained tokens; True if it did."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer))
        return True
    return False


def load_causal_lm(
    path: str | Path, style: str, attn_implementation: str = "sdpa", dtype: torch.dtype | None = None
):
    """A causal LM and its tokenizer ready for adaptation under prompt ``style``."""
    tokenizer = load_tokenizer(path, style)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), attn_implementation=attn_implementation, dtype=dtype or torch.float32
    )
    resize_for_tokenizer(model, tokenizer)
    return model, tokenizer


def load_backbone(path: str | Path, attn_implementation: str = "sdpa", dtype: torch.dtype | None = None):
    """The decoder without its LM head (``AutoModel``); a LoRA adapter folder is loaded and merged."""
    path = Path(path)
    adapter = path / "adapter_config.json"
    if adapter.exists():
        from peft import PeftModel

        base_path = json.loads(adapter.read_text())["base_model_name_or_path"]
        base = AutoModel.from_pretrained(base_path, attn_implementation=attn_implementation, dtype=dtype)
        resize_for_tokenizer(
            base, AutoTokenizer.from_pretrained(str(path))
        )  # slot tokens added at fine-tuning
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    return AutoModel.from_pretrained(str(path), attn_implementation=attn_implementation, dtype=dtype)


def last_hidden(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final hidden states (after the final norm) of a backbone for a left-padded batch. (B, T, H)"""
    position_ids = batch.get("position_ids")
    if position_ids is None and batch["attention_mask"].dim() == 2:
        position_ids = position_ids_from_mask(batch["attention_mask"])
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=position_ids
    )
    return out.last_hidden_state


class LlaraEmbedder:
    """Texts -> L2-normalised embeddings with a LLaRA model (passages: EBAE prompt, queries: EBAR)."""

    def __init__(self, model: torch.nn.Module, tokenizer, prompt_style: str = "released") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prompter = Prompter(tokenizer, prompt_style)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        prompt_style: str = "released",
        device: str | None = None,
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
    ) -> LlaraEmbedder:
        device = device or default_device()
        tokenizer = load_tokenizer(path, prompt_style)
        model = load_backbone(path, attn_implementation, dtype or default_dtype(device))
        resize_for_tokenizer(model, tokenizer)
        return cls(model.to(device), tokenizer, prompt_style)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def embed(self, texts: list[str], kind: str, max_length: int) -> torch.Tensor:
        """One batch of texts -> (N, H) float32 embeddings, prompt ``kind`` ("ebae" or "ebar")."""
        batch = self.prompter.batch(texts, check_kind(kind), max_length)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return pool(last_hidden(self.model, batch), self.prompter.n_slots).float()
