"""Devices, dtypes and the encoding front of :class:`llara.model.LlaraModel` used by ``llara.encode``."""

from __future__ import annotations

from pathlib import Path

import torch

from llara.model import LlaraModel, PromptLayout, last_hidden, resize_for_tokenizer

__all__ = ["LlaraEmbedder", "default_device", "default_dtype", "last_hidden", "resize_for_tokenizer"]


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on a GPU that has it, fp16 on other GPUs, fp32 on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class LlaraEmbedder:
    """Texts -> L2-normalised embeddings with a LLaRA model; ``embed(texts, kind, max_length)``."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        prompt_style: str = "released",
        layout: PromptLayout | None = None,
    ) -> None:
        self.llara = LlaraModel(model.eval(), tokenizer, layout or PromptLayout(style=prompt_style))
        self.tokenizer = tokenizer
        self.prompter = self.llara.prompter

    @property
    def layout(self) -> PromptLayout:
        return self.llara.layout

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        prompt_style: str | None = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
        allow_untrained_slots: bool = False,
    ) -> LlaraEmbedder:
        """The prompt layout comes from the checkpoint (``llara_prompt.json``); ``prompt_style``
        overrides it, with a warning when they disagree."""
        device = device or default_device()
        llara = LlaraModel.from_pretrained(
            path,
            dtype=dtype or default_dtype(device),
            attn_implementation=attn_implementation,
            allow_untrained_slots=allow_untrained_slots,
            style=prompt_style,
        )
        return cls(llara.model.to(device), llara.tokenizer, layout=llara.layout)

    @property
    def device(self) -> torch.device:
        return self.llara.device

    @torch.inference_mode()
    def embed(self, texts: list[str], kind: str, max_length: int) -> torch.Tensor:
        """One batch of texts -> (N, H) float32 embeddings, prompt ``kind`` ("ebae" or "ebar")."""
        batch = self.llara.prompt_batch(texts, kind, max_length)
        return self.llara.embed({k: v.to(self.device) for k, v in batch.items()}).float()
