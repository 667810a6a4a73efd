"""`temper sft`: supervised fine-tuning on chats — load, render with a loss mask, pack, train."""

from __future__ import annotations

from tempering.checkpoint.resolution import fill_config_placeholders, record_run, source_names
from tempering.config.schema import Config, DatasetConfig
from tempering.data.chat import RenderedExample, load_conversations, render_conversation
from tempering.data.example_batches import (
    LOW_FILL,
    ExampleBatches,
    packed_row_length,
    packing_stats,
)
from tempering.errors import UserError
from tempering.tracking.console import console, warn
from tempering.training.causal_lm import ChatSft
from tempering.training.chat_setup import (
    ChatStart,
    assemble_chat,
    chat_checkpoint_configs,
    chat_meta,
    load_chat_start,
    split_items,
    start_chat_run,
)
from tempering.training.device import pick_device
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, train


class ExampleEvalSet:
    """Validation examples, batched in order (packed like training, so the loss is comparable)."""

    def __init__(self, examples: list[RenderedExample], *, seq_len: int, packing: bool, pad_id: int,
                 row_len: int | None = None):
        self.examples, self.seq_len, self.packing, self.pad_id = examples, seq_len, packing, pad_id
        self.row_len = row_len
        self._batches: dict[int, ExampleBatches] = {}

    def eval_batches(self, batch_size: int):
        """Yield every validation batch once."""
        if batch_size not in self._batches:
            self._batches[batch_size] = ExampleBatches(self.examples, seq_len=self.seq_len, batch_size=batch_size,
                                                       seed=0, packing=self.packing, pad_id=self.pad_id,
                                                       shuffle=False, row_len=self.row_len)
        batches = self._batches[batch_size]
        for index in range(batches.batches_per_epoch):
            yield batches.batch(index)


class RenderedData:
    """Every dataset of a config rendered into training examples, with what was dropped."""

    def __init__(self, datasets: list[DatasetConfig], start: ChatStart, config: Config):
        self.examples: list[RenderedExample] = []
        self.dataset_ids: list[int] = []
        self.num_dropped = self.num_truncated = self.num_unanswered = 0
        for index, dataset in enumerate(datasets):
            for conversation in load_conversations(dataset.path, dataset.format, dataset.transform, dataset.limit):
                if not conversation.messages or conversation.messages[-1].role != "assistant":
                    self.num_unanswered += 1  # ends before the assistant answers: likely cut-off data
                    continue
                example = render_conversation(conversation, start.template, start.tokenizer,
                                              max_seq_length=config.data.seq_len,
                                              train_on_prompt=config.sft.train_on_prompt,
                                              truncation=config.sft.truncation)
                if example is None:
                    self.num_dropped += 1
                    continue
                self.num_truncated += example.num_truncated_tokens > 0
                self.examples.append(example)
                self.dataset_ids.append(index)


def run_sft(config: Config, *, cli_checkpoint: str | None = None, restart: bool = False) -> dict:
    """Fine-tune the resolved checkpoint on chat data; resume the run in save_dir if there is one."""
    if not config.data.datasets:
        raise UserError("no training data: give --data PATH (chat JSONL/JSON/Parquet)")
    row_len = packed_row_length(config.data.seq_len, config.sft.pack_length)
    start = load_chat_start(config, cli_checkpoint)
    config = fill_config_placeholders(config, source_names(start.source.meta))
    train_examples, train_ids, val_examples = _training_and_validation(config, start)
    packing, seq_len = config.sft.packing, config.data.seq_len
    pad_id = start.tokenizer.pad_id if start.tokenizer.pad_id is not None else start.tokenizer.eos_id
    batches = ExampleBatches(train_examples, seq_len=seq_len, batch_size=config.training.batch_size,
                             seed=config.run.seed, packing=packing, pad_id=pad_id, dataset_ids=train_ids,
                             weights=[d.weight for d in config.data.datasets], row_len=row_len)
    trained_tokens = sum(e.num_trained_tokens for e in train_examples)
    total_steps, length_reason = count_total_steps(
        config.training, batches.batches_per_epoch,
        samples_per_batch=len(train_examples) / batches.batches_per_epoch,
        tokens_per_batch=trained_tokens / batches.batches_per_epoch if packing else None)
    if packing and config.sft.pack_length is None:
        _suggest_longer_rows(config, batches)
    device = pick_device(config.training.device)
    assembly = assemble_chat(config, start, ChatSft(), device)
    run_dir, tokenizer_dir = start_chat_run(config, start, restart=restart)
    val_sets = {"val": [ExampleEvalSet(val_examples, seq_len=seq_len, packing=packing, pad_id=pad_id,
                                       row_len=row_len)]} if val_examples else {}
    console.print(f"sft: {len(train_examples)} training examples ({trained_tokens:,} trained tokens), "
                  f"{len(val_examples)} validation; template {start.template.name}; "
                  f"{f'packed into rows of {row_len}' if packing else 'padded'}, "
                  f"{batches.batches_per_epoch} batches per epoch; "
                  f"{total_steps} steps")
    hf_config, generation_config = chat_checkpoint_configs(assembly, start, config)
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, train_batches=batches, val_sets=val_sets,
        device=device, total_steps=total_steps, length_reason=length_reason, hf_config=hf_config,
        generation_config=generation_config, tokenizer_dir=tokenizer_dir, meta=chat_meta(start, config, assembly))
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


def _suggest_longer_rows(config: Config, batches: ExampleBatches) -> None:
    """Print a hint when rows twice as long (and half as many per batch) would be much fuller."""
    fill = packing_stats(batches).non_pad_fraction
    batch_size, seq_len = config.training.batch_size, config.data.seq_len
    if fill >= LOW_FILL or batch_size % 2:
        return
    longer = packing_stats(batches.with_row_len(2 * seq_len)).non_pad_fraction
    if longer - fill >= 0.05:
        console.print(f"[dim]hint: packed rows are {fill:.0%} full (many examples are longer than half of "
                      f"data.seq_len); --pack-length {2 * seq_len} --batch-size {batch_size // 2} fills {longer:.0%} "
                      "with the same tokens per step (attention then spans twice the keys: compare tokens/s)[/dim]")


def _training_and_validation(config: Config, start: ChatStart):
    rendered = RenderedData(config.data.datasets, start, config)
    if rendered.num_unanswered:
        warn(f"{rendered.num_unanswered} conversation(s) do not end with an assistant turn (cut off before the "
             "answer?); skipped")
    if rendered.num_dropped or rendered.num_truncated:
        console.print(f"rendering: {rendered.num_truncated} examples truncated ({config.sft.truncation}), "
                      f"{rendered.num_dropped} dropped (too long with truncation=drop, or nothing left to train)")
    if not rendered.examples:
        raise UserError("no training examples left after rendering (all dropped); raise --seq-len or change "
                        "sft.truncation")
    pairs = list(zip(rendered.examples, rendered.dataset_ids, strict=True))
    if config.data.val_data:
        train_pairs = pairs
        val_examples = RenderedData(config.data.val_data, start, config).examples
    else:
        train_pairs, val_pairs = split_items(pairs, config.data.val_split, config.run.seed)
        val_examples = [example for example, _ in val_pairs]
    return [e for e, _ in train_pairs], [i for _, i in train_pairs], val_examples
