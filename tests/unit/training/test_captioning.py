"""The caption objective and its batches: only caption tokens scored, batches a pure function of their index."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tempering.data.images.batches import IGNORE, CaptionBatches, CaptionExample
from tempering.data.images.sample import write_sample_images
from tempering.models.llama.architecture import Architecture
from tempering.models.vision.architecture import PRESETS
from tempering.models.vision.model import CaptionModel
from tempering.training.captioning import Captioning, CaptionScores, greedy_captions


@pytest.fixture
def model():
    torch.manual_seed(0)
    lm = Architecture(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64,
                      rope_theta=10000.0, tie_embeddings=True, norm_eps=1e-5)
    return CaptionModel(replace(PRESETS["vision_tiny"], lm=lm)).eval()


def test_loss_sums_cross_entropy_over_caption_tokens_only(model):
    prompt, caption = [5, 6, 7], [20, 21, 22, 2]  # 2 = EOS
    tokens = torch.tensor([prompt + caption])
    labels = torch.tensor([[IGNORE] * 3 + caption])
    pixels = torch.randn(1, 3, 32, 32)
    result = Captioning(str, eos_id=2)(model, {"tokens": tokens, "labels": labels, "pixels": pixels})
    logits = model(tokens, pixels=pixels)[0, model.arch.num_patches - 1:-1]  # position i predicts text token i
    expected = F.cross_entropy(logits[3:], torch.tensor(caption), reduction="sum")
    torch.testing.assert_close(result.loss_sum, expected, atol=1e-4, rtol=1e-5)
    assert int(result.num_units) == 4
    assert Captioning(str, eos_id=2).count_units({"labels": labels.numpy()}) == 4


def test_greedy_captions_stop_at_eos_and_exact_match_compares_decoded_text(model):
    batch = {"tokens": torch.tensor([[5, 20, 2], [5, 30, 2]]), "labels": torch.tensor([[IGNORE, 20, 2], [IGNORE, 30, 2]]),
             "pixels": torch.randn(2, 3, 32, 32)}
    captions = greedy_captions(model, batch, eos_id=2, max_new_tokens=5)
    assert len(captions) == 2 and all(len(c) <= 5 and 2 not in c for c in captions)
    scores = CaptionScores(lambda ids: " ".join(map(str, ids)))
    scores.update(batch, [[20], [31]])
    assert scores.compute() == {"exact_match": 0.5, "cer": pytest.approx(1 / 4)}  # one edit in 4 characters


def test_batches_are_a_pure_function_of_their_index(tmp_path):
    write_sample_images(tmp_path, num_images=24, seed=0)
    images = sorted(str(p) for p in (tmp_path / "scenes" / "train").glob("*.png"))
    examples = [CaptionExample(path, np.array([1, 10 + i, 2]), 1) for i, path in enumerate(images)]

    def batches():
        return CaptionBatches([examples], [1.0], batch_size=4, seed=3, image_size=32, pad_id=0, augment_images=True)

    read_in_order = batches()
    sequence = [read_in_order.batch(g) for g in range(8)]  # through the prefetch thread
    fresh = batches()
    for g in (7, 2, 6):  # out of order, no prefetch
        for key in ("pixels", "tokens", "labels"):
            np.testing.assert_array_equal(fresh.make_batch(g)[key], sequence[g][key])
    assert read_in_order.batches_per_epoch == 6
    # The same image in two epochs gets different augmentations; labels mask the prompt.
    first, second = sequence[0], sequence[6]
    assert not np.array_equal(first["pixels"], second["pixels"])
    assert (first["labels"][:, 0] == IGNORE).all() and (first["labels"][:, 1:] != IGNORE).all()
