"""Rename a Hugging Face BERT (or bare DistilBERT) state dict into the encoder's DistilBERT names, at import.

BERT's blocks are DistilBERT's under other names (self.query → q_lin, output.dense → out_lin,
intermediate/output → ffn.lin1/lin2, ...). BERT adds a token-type embedding to every token;
single sentences are all type 0, so row 0 is folded into the position embeddings, which makes
the imported model's logits equal BERT's for `token_type_ids` of zeros. The pooler and the
next-sentence head have no use in masked LM or token classification and are dropped. A bare
`DistilBertModel` / `BertModel` saves its tensors without the `distilbert.` / `bert.` prefix,
which is added back.
"""

from __future__ import annotations

import re

import torch

from tempering.models.encoder.architecture import PREFIX

_BERT_RENAMES = (
    (r"^bert\.embeddings\.(word_embeddings|position_embeddings|LayerNorm)\.", r"distilbert.embeddings.\1."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.query\.", r"distilbert.transformer.layer.\1.attention.q_lin."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.key\.", r"distilbert.transformer.layer.\1.attention.k_lin."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.value\.", r"distilbert.transformer.layer.\1.attention.v_lin."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"distilbert.transformer.layer.\1.attention.out_lin."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"distilbert.transformer.layer.\1.sa_layer_norm."),
    (r"^bert\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"distilbert.transformer.layer.\1.ffn.lin1."),
    (r"^bert\.encoder\.layer\.(\d+)\.output\.dense\.", r"distilbert.transformer.layer.\1.ffn.lin2."),
    (r"^bert\.encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"distilbert.transformer.layer.\1.output_layer_norm."),
    (r"^cls\.predictions\.transform\.dense\.", "vocab_transform."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "vocab_layer_norm."),
    (r"^cls\.predictions\.decoder\.weight$", "vocab_projector.weight"),
    (r"^cls\.predictions\.bias$", "vocab_projector.bias"),
)
_BERT_DROPPED = re.compile(r"^(bert\.pooler\.|cls\.seq_relationship\.|"
                           r"bert\.embeddings\.(token_type_embeddings\.weight|position_ids|token_type_ids)$)")
_BARE_PREFIXES = ("embeddings.", "transformer.", "encoder.")


def import_weights(model_type: str, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The HF state dict of a DistilBERT or BERT directory, in the encoder's names."""
    if any(name.startswith(_BARE_PREFIXES) for name in weights):  # a bare DistilBertModel / BertModel
        prefix = "bert." if model_type == "bert" else PREFIX
        weights = {(prefix + name if name.startswith(_BARE_PREFIXES) else name): t for name, t in weights.items()}
    if model_type != "bert":
        return weights
    converted = {}
    for name, tensor in weights.items():
        if _BERT_DROPPED.match(name):
            continue
        if name == "cls.predictions.decoder.bias":  # the same tensor as cls.predictions.bias when both exist
            if "cls.predictions.bias" in weights:
                continue
            name = "cls.predictions.bias"
        for pattern, replacement in _BERT_RENAMES:
            name = re.sub(pattern, replacement, name)
        converted[name] = tensor
    token_types = weights.get("bert.embeddings.token_type_embeddings.weight")
    positions = f"{PREFIX}embeddings.position_embeddings.weight"
    if token_types is not None and positions in converted:
        converted[positions] = converted[positions] + token_types[0]
    return converted
