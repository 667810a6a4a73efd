"""Image-caption micro-batches: addressable by global index, decoded ahead of the step in a background thread.

Each example is an image and its token row `prompt + caption + EOS`; labels are -100 on the
prompt (and padding), so only caption tokens (and the EOS that ends a caption) are scored.
Micro-batch g is batch (g mod per_epoch) of epoch (g div per_epoch), the order a pure function
of (seed, epoch) and each training image's augmentation a pure function of (seed, epoch,
image), so a resumed run sees the same pixels. While the loop trains on batch g, one thread
decodes g+1 and g+2 (Pillow and numpy release the GIL), and decoded, resized images stay in
memory up to `CACHE_BYTES`, so after the first epoch a batch costs only its augmentation.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tempering.data.images.pixels import augment, load_image, normalise
from tempering.data.images.records import CaptionRecord
from tempering.data.packing import plan_epoch

IGNORE = -100
PREFETCH_BATCHES = 2
CACHE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class CaptionExample:
    """One image and its token row: prompt ids, then caption ids and EOS."""

    image: str
    tokens: np.ndarray  # int64 (n,)
    num_prompt_tokens: int

    @property
    def num_caption_tokens(self) -> int:
        """Scored tokens: the caption and its EOS."""
        return len(self.tokens) - self.num_prompt_tokens


def tokenize_examples(records: list[CaptionRecord], tokenizer, prompt: str,
                      max_text_tokens: int) -> tuple[list[CaptionExample], int]:
    """Examples of `records` (captions cut to fit `max_text_tokens` with the prompt and EOS); also how many were cut."""
    prompt_ids = tokenizer.encode(prompt) if prompt else []
    room = max_text_tokens - len(prompt_ids) - 1
    examples, num_cut = [], 0
    captions = tokenizer.encode_batch([r.caption for r in records]) if records else []
    for record, ids in zip(records, captions, strict=True):
        num_cut += len(ids) > room
        row = np.array([*prompt_ids, *ids[:room], tokenizer.eos_id], dtype=np.int64)
        examples.append(CaptionExample(str(record.image), row, len(prompt_ids)))
    return examples, num_cut


class ImageCache:
    """Decoded, resized images by path, kept while they fit `CACHE_BYTES` (thread-safe)."""

    def __init__(self, size: int):
        self.size = size
        self._images: dict[str, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> np.ndarray:
        """The (size, size, 3) uint8 image at `path`."""
        with self._lock:
            image = self._images.get(path)
        if image is None:
            image = load_image(path, self.size)
            with self._lock:
                if self._bytes + image.nbytes <= CACHE_BYTES:
                    self._images[path] = image
                    self._bytes += image.nbytes
        return image


def collate(examples: list[CaptionExample], images: list[np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """{"pixels": float32 (B, 3, S, S), "tokens": int64 (B, n), "labels": int64 (B, n)}, right-padded to the longest row."""
    width = max(len(e.tokens) for e in examples)
    tokens = np.full((len(examples), width), pad_id, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE, dtype=np.int64)
    for row, example in enumerate(examples):
        tokens[row, :len(example.tokens)] = example.tokens
        labels[row, example.num_prompt_tokens:len(example.tokens)] = example.tokens[example.num_prompt_tokens:]
    return {"pixels": normalise(np.stack(images)), "tokens": tokens, "labels": labels}


class CaptionBatches:
    """Training micro-batches over one or more example sets, mixed by weight (post-training: old and new data)."""

    def __init__(self, datasets: list[list[CaptionExample]], weights: list[float], *, batch_size: int, seed: int,
                 image_size: int, pad_id: int, augment_images: bool, shuffle: bool = True):
        self.datasets, self.weights, self.batch_size, self.seed = datasets, weights, batch_size, seed
        self.pad_id, self.augment_images, self.shuffle = pad_id, augment_images, shuffle
        self.cache = ImageCache(image_size)
        sizes = [len(d) for d in datasets]
        self.examples_per_epoch = sum(int(round(s * w)) for s, w in zip(sizes, weights, strict=True))
        self.batches_per_epoch = self.examples_per_epoch // batch_size
        self._plan: tuple[int, object] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future] = {}

    def batch(self, micro_batch: int) -> dict[str, np.ndarray]:
        """Global micro-batch `micro_batch` (decoded ahead when the loop reads in order)."""
        future = self._ahead.pop(micro_batch, None)
        result = future.result() if future is not None else self.make_batch(micro_batch)
        self._prefetch(micro_batch + 1)
        return result

    def make_batch(self, micro_batch: int) -> dict[str, np.ndarray]:
        """Build micro-batch `micro_batch` now: a pure function of its index."""
        epoch, index = divmod(micro_batch, self.batches_per_epoch)
        datasets, positions = self._epoch_plan(epoch)
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        examples, images = [], []
        for dataset, position in zip(datasets[rows], positions[rows], strict=True):
            example = self.datasets[int(dataset)][int(position)]
            image = self.cache.get(example.image)
            if self.augment_images:
                image = augment(image, np.random.default_rng([self.seed, epoch, int(dataset), int(position)]))
            examples.append(example)
            images.append(image)
        return collate(examples, images, self.pad_id)

    def _epoch_plan(self, epoch: int):
        plan = self._plan
        if plan is None or plan[0] != epoch:
            made = plan_epoch([len(d) for d in self.datasets], self.weights, self.seed, epoch, shuffle=self.shuffle)
            plan = self._plan = (epoch, (made.dataset_index, made.sequence_index))
        return plan[1]

    def _prefetch(self, first: int) -> None:
        """Decode the next PREFETCH_BATCHES micro-batches in the background; forget any the loop jumped over."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-prefetch")
        for stale in [index for index in self._ahead if index < first]:
            self._ahead.pop(stale).cancel()
        for index in range(first, first + PREFETCH_BATCHES):
            if index not in self._ahead:
                self._ahead[index] = self._pool.submit(self.make_batch, index)


class CaptionEvalSet:
    """Validation examples in file order, unaugmented; decoded batches are kept (up to CACHE_BYTES) for the next evaluation."""

    def __init__(self, examples: list[CaptionExample], *, image_size: int, pad_id: int):
        self.examples, self.image_size, self.pad_id = examples, image_size, pad_id
        self.keep = len(examples) * 3 * image_size * image_size * 4 <= CACHE_BYTES
        self._batches: dict[int, list[dict[str, np.ndarray]]] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def eval_batches(self, batch_size: int):
        """Yield every validation batch once (the last one may be smaller)."""
        if batch_size in self._batches:
            yield from self._batches[batch_size]
            return
        made = []
        for start in range(0, len(self.examples), batch_size):
            chunk = self.examples[start:start + batch_size]
            batch = collate(chunk, [load_image(e.image, self.image_size) for e in chunk], self.pad_id)
            if self.keep:
                made.append(batch)
            yield batch
        if self.keep:
            self._batches = {batch_size: made}
