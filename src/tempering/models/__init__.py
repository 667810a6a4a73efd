"""Model definitions (decoder LM first) and Hugging Face import/export."""

from tempering.models.chunked_loss import chunked_cross_entropy
from tempering.models.layers import KVCache
from tempering.models.llama import (
    DecoderLM,
    build_model,
    needs_document_mask,
    positions_from_documents,
)

__all__ = [
    "DecoderLM",
    "KVCache",
    "build_model",
    "chunked_cross_entropy",
    "needs_document_mask",
    "positions_from_documents",
]
