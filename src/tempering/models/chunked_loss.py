"""Summed cross-entropy of `hidden @ lm_head.T` without materialising all logits.

Plain `F.cross_entropy(lm_head(hidden))` keeps (N, V) fp32 logits and their
gradient alive (N*V*8 bytes: 0.5 GB at N=2048, V=32000). Here rows go through
the head `chunk_size` at a time, and each chunk's gradient (softmax - one-hot) is
turned into d_hidden and d_weight right away, during the forward pass, so no logits
outlive their chunk and nothing is recomputed in the backward pass (the same three
matmuls as the plain version). Hand-written because torch has no fused
linear+cross-entropy, and the libraries that do (Liger-Kernel) are GPU-only Triton.
"""

from __future__ import annotations

import torch

from tempering.models.layers import compute_dtype

DEFAULT_CHUNK_SIZE = 256  # rows; (256, V) fp32 logits: 8 MB at V=8192, 33 MB at V=32000


def chunked_cross_entropy(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                          *, chunk_size: int = DEFAULT_CHUNK_SIZE, ignore_index: int = -100,
                          labelled_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (summed CE over labelled tokens, number of labelled tokens), both 0-dim tensors.

    `hidden` is (..., D), `labels` the matching (...) targets (already shifted);
    tokens labelled `ignore_index` add nothing. Divide the sum by the token count of
    the whole optimizer step, not per micro-batch. `labelled_only` runs the head on the
    labelled rows alone (chat SFT, where prompts and padding carry no loss): the same sum
    for less work, at the price of one `nonzero` (a host sync on a GPU).
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
    flat_labels = labels.reshape(-1)  # (N,)
    if labelled_only:
        rows = (flat_labels != ignore_index).nonzero().squeeze(1)
        flat_hidden, flat_labels = flat_hidden.index_select(0, rows), flat_labels.index_select(0, rows)
    loss_sum = _LinearCrossEntropy.apply(flat_hidden, lm_head_weight, flat_labels,
                                         chunk_size, ignore_index)
    return loss_sum, (flat_labels != ignore_index).sum()


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed CE of (N, D) @ (V, D).T, with the gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size, ignore_index):
        want_hidden_grad, want_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        matmul_dtype = compute_dtype(hidden)
        grad_hidden = torch.empty_like(hidden) if want_hidden_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight_grad else None
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(matmul_dtype)
            for start in range(0, hidden.shape[0], chunk_size):
                h = hidden[start:start + chunk_size].to(matmul_dtype)  # (n, D)
                y = labels[start:start + chunk_size]  # (n,)
                valid = (y != ignore_index).unsqueeze(0)  # (1, n)
                target = torch.where(valid, y, torch.zeros_like(y))  # (1, n)
                # Logits transposed, (V, n): `w @ h.T` is the faster GEMM layout for a tall head.
                logits = (w @ h.T).float()  # (V, n)
                target_logit = logits.gather(0, target)  # (1, n)
                # logsumexp by hand, in place: saves a (V, n) temporary and a second exp pass.
                col_max = logits.amax(dim=0, keepdim=True)  # (1, n)
                exp_shifted = logits.sub_(col_max).exp_()  # (V, n), reuses the logits buffer
                sum_exp = exp_shifted.sum(dim=0, keepdim=True)  # (1, n)
                lse = col_max + sum_exp.log()
                loss_sum += ((lse - target_logit) * valid).sum()
                if not (want_hidden_grad or want_weight_grad):
                    continue
                # d(sum CE)/d logits = softmax - one_hot(target), zero on ignored rows.
                probs = exp_shifted.mul_(valid / sum_exp)
                probs.scatter_add_(0, target, -valid.to(probs.dtype))
                grad_logits = probs.to(matmul_dtype)  # (V, n)
                if want_hidden_grad:
                    grad_hidden[start:start + chunk_size] = grad_logits.T @ w
                if want_weight_grad:
                    if matmul_dtype == torch.float32:
                        grad_weight.addmm_(grad_logits, h)
                    else:
                        grad_weight += (grad_logits @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss_sum

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None
