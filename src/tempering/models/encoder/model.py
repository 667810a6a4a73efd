"""The DistilBERT-style encoder, with Hugging Face `DistilBertFor{MaskedLM,TokenClassification}` parameter names.

Post-norm blocks (x = LN(x + attention(x)); x = LN(x + FFN(x))), learned positions, exact
GELU, LayerNorm epsilon 1e-12, biases everywhere, and dropout where DistilBERT has it (on
the embeddings, the attention probabilities, the FFN output and before the classifier).
Written by hand so the numerics match `transformers` to 1e-5. Padding is an additive key mask
built from `attention_mask`, and every per-token layer (embeddings, projections, FFN,
LayerNorm) runs on the real tokens only, padded just around attention (`models/unpadding.py`):
a batch of mixed lengths costs its tokens, not its rectangle. Real positions get the values of
a padded forward, padding positions zeros; finding the tokens is one `nonzero` (a host sync on a
GPU). A batch without padding passes None and takes SDPA's unmasked path, with no sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tempering.models.encoder.architecture import NORM_EPS, EncoderArchitecture
from tempering.models.unpadding import TokenIndex, padded_if, unpadded_if

INIT_STD = 0.02


def key_padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An additive (B, 1, 1, T) mask from a (B, T) 0/1 mask: 0 on tokens, the dtype's minimum on padding.

    The minimum rather than -inf: a row whose keys were all padding would otherwise give NaN.
    """
    blocked = torch.finfo(dtype).min
    return ((1.0 - attention_mask.to(dtype)) * blocked)[:, None, None, :]


class EncoderEmbeddings(nn.Module):
    """Word plus position embeddings, LayerNorm, dropout."""

    def __init__(self, arch: EncoderArchitecture, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(arch.vocab_size, arch.d_model)
        self.position_embeddings = nn.Embedding(arch.max_seq_len, arch.d_model)
        self.LayerNorm = nn.LayerNorm(arch.d_model, eps=NORM_EPS)
        self.dropout = dropout

    def forward(self, input_ids: torch.Tensor, index: TokenIndex | None = None) -> torch.Tensor:
        """(B, T) ids → (B, T, D), or (N, D) for the real tokens when `index` is given."""
        positions = self.position_embeddings.weight[: input_ids.shape[1]]  # (T, D)
        if index is None:
            x = self.LayerNorm(self.word_embeddings(input_ids) + positions)
        else:
            ids = input_ids.flatten().index_select(0, index.flat)
            x = self.LayerNorm(self.word_embeddings(ids) + positions.index_select(0, index.positions()))
        return F.dropout(x, self.dropout, self.training) if self.dropout else x


class EncoderAttention(nn.Module):
    """Multi-head self-attention over the whole sequence (no causal mask)."""

    def __init__(self, arch: EncoderArchitecture, dropout: float):
        super().__init__()
        d = arch.d_model
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(d, d) for _ in range(4))
        self.n_heads, self.head_dim, self.dropout = arch.n_heads, arch.head_dim, dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, index: TokenIndex | None = None) -> torch.Tensor:
        """(B, T, D) → (B, T, D), or (N, D) → (N, D) with `index`; `bias` is the additive key mask or None."""
        batch, seq_len = (x.shape[0], x.shape[1]) if index is None else (index.batch, index.seq_len)
        shape = (batch, seq_len, self.n_heads, self.head_dim)
        q, k, v = (padded_if(index, proj(x)).view(shape).transpose(1, 2)  # (B, H, T, hd)
                   for proj in (self.q_lin, self.k_lin, self.v_lin))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, seq_len, -1)
        return self.out_lin(unpadded_if(index, out))


class EncoderFFN(nn.Module):
    """lin1 → GELU → lin2 → dropout."""

    def __init__(self, arch: EncoderArchitecture, dropout: float):
        super().__init__()
        self.lin1 = nn.Linear(arch.d_model, arch.d_ff)
        self.lin2 = nn.Linear(arch.d_ff, arch.d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) → (..., D)."""
        h = self.lin2(F.gelu(self.lin1(x)))
        return F.dropout(h, self.dropout, self.training) if self.dropout else h


class EncoderBlock(nn.Module):
    """Post-norm block: x = LN(x + attention(x)), then x = LN(x + FFN(x))."""

    def __init__(self, arch: EncoderArchitecture, dropout: float):
        super().__init__()
        self.attention = EncoderAttention(arch, dropout)
        self.sa_layer_norm = nn.LayerNorm(arch.d_model, eps=NORM_EPS)
        self.ffn = EncoderFFN(arch, dropout)
        self.output_layer_norm = nn.LayerNorm(arch.d_model, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, index: TokenIndex | None = None) -> torch.Tensor:
        """Apply the block to (B, T, D), or to the (N, D) real tokens of `index`."""
        x = self.sa_layer_norm(x + self.attention(x, bias, index))
        return self.output_layer_norm(x + self.ffn(x))


class EncoderTransformer(nn.Module):
    """The stack of blocks (`transformer.layer.{i}` in HF names)."""

    def __init__(self, arch: EncoderArchitecture, dropout: float):
        super().__init__()
        self.layer = nn.ModuleList(EncoderBlock(arch, dropout) for _ in range(arch.n_layers))


class EncoderBackbone(nn.Module):
    """Container for the `distilbert.` half of the HF names: embeddings and transformer."""

    def __init__(self, arch: EncoderArchitecture, dropout: float):
        super().__init__()
        self.embeddings = EncoderEmbeddings(arch, dropout)
        self.transformer = EncoderTransformer(arch, dropout)


class EncoderModel(nn.Module):
    """DistilBERT-style encoder with its head; `state_dict()` keys equal the HF class of `arch.head`."""

    def __init__(self, arch: EncoderArchitecture, dropout: float = 0.0):
        super().__init__()
        arch.check()
        self.arch = arch
        self.distilbert = EncoderBackbone(arch, dropout)
        self.dropout = dropout
        if arch.head == "mlm":
            self.vocab_transform = nn.Linear(arch.d_model, arch.d_model)
            self.vocab_layer_norm = nn.LayerNorm(arch.d_model, eps=NORM_EPS)
            self.vocab_projector = nn.Linear(arch.d_model, arch.vocab_size)
            if arch.tie_embeddings:
                self.vocab_projector.weight = self.distilbert.embeddings.word_embeddings.weight
        elif arch.head == "token_classification":
            self.classifier = nn.Linear(arch.d_model, arch.num_labels)
        self.gradient_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Linear and embedding weights ~ normal(0, 0.02), biases 0, LayerNorm 1/0 (BERT's scheme)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return (B, T, D) final hidden states; `attention_mask` (B, T) is 1 on tokens, 0 on padding.

        Only the real tokens are computed: padding positions come back as zeros.
        """
        if input_ids.shape[1] > self.arch.max_seq_len:
            raise ValueError(f"{input_ids.shape[1]} tokens are more than max_seq_len {self.arch.max_seq_len}")
        index = None if attention_mask is None else TokenIndex.of(attention_mask)
        x = self.distilbert.embeddings(input_ids, index)
        bias = None if attention_mask is None else key_padding_bias(attention_mask, x.dtype)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.distilbert.transformer.layer:
            x = checkpoint(layer, x, bias, index, use_reentrant=False) if checkpointing else layer(x, bias, index)
        return x if index is None else index.pad(x)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states → (..., V) vocabulary logits through the MLM head."""
        return self.vocab_projector(self.vocab_layer_norm(F.gelu(self.vocab_transform(hidden))))

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states → (..., num_labels) label logits (dropout first, as DistilBERT)."""
        if self.dropout:
            hidden = F.dropout(hidden, self.dropout, self.training)
        return self.classifier(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The head's output for (B, T) ids: vocabulary logits (mlm), label logits, or hidden states (none)."""
        hidden = self.hidden_states(input_ids, attention_mask)
        if self.arch.head == "mlm":
            return self.mlm_logits(hidden)
        if self.arch.head == "token_classification":
            return self.classify(hidden)
        return hidden

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Return the tensors to save, HF-style: a tied `vocab_projector.weight` is left out."""
        state = {name: t.detach().contiguous() for name, t in self.state_dict().items()}
        if self.arch.head == "mlm" and self.arch.tie_embeddings:
            del state["vocab_projector.weight"]
        return state

    def load_exported_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by `export_state_dict` (or by HF), filling a tied projection."""
        if self.arch.head == "mlm" and self.arch.tie_embeddings and "vocab_projector.weight" not in state:
            state = {**state, "vocab_projector.weight": state["distilbert.embeddings.word_embeddings.weight"]}
        self.load_state_dict(state, strict=True)


@torch.no_grad()
def adapt_model(model: EncoderModel, arch: EncoderArchitecture, *, dropout: float = 0.0) -> EncoderModel:
    """A model of `arch` (another head, more labels, a larger vocabulary) carrying over what `model` learned.

    Built fresh (under the caller's seed), then every tensor both share by name and shape is
    copied; classifier rows are copied by label name, so a label keeps its row and new labels
    start fresh; grown vocabulary rows start at the mean of the old ones.
    """
    new = EncoderModel(arch, dropout=dropout)
    old_state, new_state = model.export_state_dict(), new.export_state_dict()
    for name, tensor in new_state.items():
        if name in ("classifier.weight", "classifier.bias"):
            _copy_label_rows(tensor, old_state.get(name), model.arch.labels, arch.labels)
        elif name in old_state and old_state[name].shape == tensor.shape:
            tensor.copy_(old_state[name])
        elif name in old_state and name.endswith(("word_embeddings.weight", "vocab_projector.weight",
                                                  "vocab_projector.bias")):
            old = old_state[name]
            tensor[: len(old)] = old
            tensor[len(old):] = old.mean(0, keepdim=True) if old.ndim == 2 else 0.0
    new.load_exported_state_dict(new_state)
    new.gradient_checkpointing = model.gradient_checkpointing
    return new.to(model.distilbert.embeddings.word_embeddings.weight.device)


def _copy_label_rows(target: torch.Tensor, source: torch.Tensor | None, old_labels: tuple[str, ...],
                     new_labels: tuple[str, ...]) -> None:
    if source is None:
        return
    for new_id, label in enumerate(new_labels):
        if label in old_labels:
            target[new_id] = source[old_labels.index(label)]
