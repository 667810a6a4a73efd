"""`temper generate`: load a checkpoint, build the prompt (plain or chat), stream the continuation."""

from __future__ import annotations

import sys
from typing import TextIO

from tempering.checkpoint.model_loading import load_model
from tempering.errors import UserError
from tempering.generation.sampling import generate_tokens, stream_text
from tempering.tracking.console import console
from tempering.training.device import pick_device


def run_generate(checkpoint: str, *, prompt: str | None, chat: str | None, system: str | None, max_new_tokens: int,
                 temperature: float, top_k: int | None, top_p: float | None, seed: int, device: str,
                 out: TextIO = sys.stdout) -> None:
    """Write the prompt and its sampled continuation to `out`, stopping at any end token the checkpoint lists."""
    if (prompt is None) == (chat is None):
        raise UserError("give exactly one of --prompt TEXT (continue text) or --chat MESSAGE (a chat turn)")
    loaded = load_model(checkpoint, device=pick_device(device))
    if "causal_lm" not in loaded.family.tasks:
        raise UserError(f"{loaded.checkpoint.path} holds an {loaded.family.name} model, which does not generate "
                        "text (a NER checkpoint tags: `temper tag`)")
    tokenizer = loaded.tokenizer
    # Every end token the checkpoint's generation_config.json lists (EOS, a chat model's end of turn).
    eos = loaded.checkpoint.generation_config.get("eos_token_id")
    stop_ids = frozenset(i for i in (eos if isinstance(eos, list) else [eos]) if isinstance(i, int))
    if chat is not None:
        prompt, end_of_turn = _chat_prompt(loaded.checkpoint.path, chat, system)
        stop_ids |= frozenset({tokenizer.tokenizer.token_to_id(end_of_turn)} - {None})
    elif not prompt:
        console.print("[yellow]warning:[/] the prompt is empty: sampling starts from the end-of-text token alone")
    prompt_ids = tokenizer.encode(prompt)
    context = loaded.family.context_length(loaded.arch)
    if context is not None and len(prompt_ids) + max_new_tokens > context:
        room = max(context - len(prompt_ids), 1)
        console.print(f"[yellow]warning:[/] --max-new-tokens {max_new_tokens} runs past the model's context of "
                      f"{context} tokens ({len(prompt_ids)} in the prompt): at most {room} new tokens")
    tokens = generate_tokens(loaded.model, prompt_ids, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                             temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop_ids=stop_ids)
    out.write(prompt)
    for piece in stream_text(tokens, tokenizer.decode):
        out.write(piece)
        out.flush()
    out.write("\n")


def _chat_prompt(checkpoint_dir, chat: str, system: str | None) -> tuple[str, str]:
    """The user turn rendered with the checkpoint's chat template, and the template's end-of-turn token."""
    from tempering.data.chat import Conversation, Message, load_tokenizer_template, render_prompt

    try:
        template = load_tokenizer_template(checkpoint_dir)
    except UserError as exc:
        if "no chat_template" not in str(exc):
            raise
        raise UserError(f"checkpoint {checkpoint_dir} has no chat template (it was not chat-tuned): use --prompt "
                        "TEXT to continue text, or chat-tune it first with `temper sft`") from None
    messages = ([Message("system", system)] if system else []) + [Message("user", chat)]
    return render_prompt(Conversation(messages), template), template.end_of_turn
