"""`temper inspect-data`: show chat examples exactly as the model will see them.

Trained (loss) tokens are highlighted; a summary gives lengths, truncation, drops and the
packing efficiency (non-pad fraction) the SFT run will get.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text

from tempering.config.schema import Config
from tempering.data.chat import (
    get_template,
    load_conversations,
    render_conversation,
    render_for_display,
)
from tempering.data.example_batches import (
    LOW_FILL,
    ExampleBatches,
    packed_row_length,
    packing_stats,
)
from tempering.errors import UserError
from tempering.tokenizer import TokenizerBundle
from tempering.tracking.console import print_table, stdout


def inspect_chat_data(config: Config, tokenizer: TokenizerBundle, *, num_samples: int = 3) -> dict:
    """Print `num_samples` rendered examples with trained spans highlighted, then a summary; return it."""
    if not config.data.datasets:
        raise UserError("no data to inspect: the config has no data.datasets (or give --data PATH)")
    template = get_template(config.sft.template, tokenizer.path)
    examples, truncated, dropped, read = [], 0, 0, 0
    for dataset in config.data.datasets:
        for conversation in load_conversations(dataset.path, dataset.format, dataset.transform, dataset.limit):
            read += 1
            example = render_conversation(conversation, template, tokenizer, max_seq_length=config.data.seq_len,
                                          train_on_prompt=config.sft.train_on_prompt,
                                          truncation=config.sft.truncation)
            if example is None:
                dropped += 1
                continue
            truncated += example.num_truncated_tokens > 0
            examples.append(example)
    for index, example in enumerate(examples[:num_samples]):
        stdout.rule(f"example {index}: {example.num_tokens} tokens, {example.num_trained_tokens} trained")
        text = Text()
        for piece, trained in render_for_display(example, tokenizer):
            if stdout.is_terminal:
                text.append(piece, style="bold green on grey15" if trained else "dim")
            else:  # no colours in a pipe or file: mark trained spans with brackets
                text.append(f"⟦{piece}⟧" if trained else piece)
        stdout.print(text)
    summary = _summary(config, examples, read, truncated, dropped, tokenizer)
    print_table(f"{read} examples, template {template.name}, seq_len {config.data.seq_len} "
                "(trained tokens bold green, or ⟦between brackets⟧ when not a terminal)", ["", "value"], [[k, v] for k, v in summary.items()])
    return summary


def _summary(config: Config, examples: list, read: int, truncated: int, dropped: int, tokenizer) -> dict:
    lengths = np.array([e.num_tokens for e in examples]) if examples else np.zeros(1, int)
    trained = sum(e.num_trained_tokens for e in examples)
    summary = {"examples rendered": len(examples), "truncated": truncated, "dropped": dropped,
               "tokens min / median / max": f"{lengths.min()} / {int(np.median(lengths))} / {lengths.max()}",
               "trained tokens": f"{trained:,} ({trained / max(int(lengths.sum()), 1):.0%} of tokens)"}
    if examples:
        seq_len = config.data.seq_len
        row_len = packed_row_length(seq_len, config.sft.pack_length)
        pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id

        def batches(packing: bool) -> ExampleBatches:
            return ExampleBatches(examples, seq_len=seq_len, batch_size=config.training.batch_size,
                                  seed=config.run.seed, packing=packing, pad_id=pad_id, row_len=row_len)

        packing = batches(True)
        packed = packing_stats(packing)
        summary[f"packing into rows of {row_len}: non-pad fraction"] = f"{packed.non_pad_fraction:.1%}"
        summary["packing: examples per row"] = f"{packed.examples_per_row:.2f}"
        if config.sft.pack_length is None and packed.non_pad_fraction < LOW_FILL:
            longer = packing_stats(packing.with_row_len(2 * seq_len))
            summary[f"packing into rows of {2 * seq_len} (sft.pack_length={2 * seq_len}, half the batch_size)"] = \
                f"{longer.non_pad_fraction:.1%}"
        summary["padding: non-pad fraction"] = f"{packing_stats(batches(False)).non_pad_fraction:.1%}"
    return summary
