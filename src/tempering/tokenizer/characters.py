"""Character tokenizers for speech: one id per character (ASR targets, Talker inputs), as an HF `tokenizers` file.

A speech model's classes are the characters of an alphabet (`a`–`z`, apostrophe and space for
English ASR) or the IPA symbols of a phoneme set. They are saved as a `tokenizer.json`
(WordLevel over single characters, decoded by concatenation) so checkpoints carry them like
every other tokenizer — fingerprinted, copied into each checkpoint, loadable by
`transformers.PreTrainedTokenizerFast`. Ids: `<|bos|>` 0, `<|eos|>` 1, `<|pad|>` 2 (also the
CTC blank), `<|unk|>` 3 (a character outside the set), then the characters in the given order.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from tempering.errors import UserError
from tempering.tokenizer.bundle import TokenizerBundle
from tempering.tokenizer.special import BOS, EOS, PAD

UNK = "<|unk|>"
CHARACTER_SPECIALS = (BOS, EOS, PAD, UNK)


def build_character_tokenizer(characters: str) -> TokenizerBundle:
    """A tokenizer with one id per distinct character of `characters` (order kept) after the four specials."""
    symbols = list(dict.fromkeys(characters))
    if not symbols:
        raise UserError("the character set is empty: give at least one character (speech.alphabet)")
    if "\n" in symbols:
        raise UserError("a character set cannot hold a line break (speech.alphabet)")
    vocab = {token: index for index, token in enumerate((*CHARACTER_SPECIALS, *symbols))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character a word
    tokenizer.decoder = decoders.Fuse()  # join without spaces
    tokenizer.add_special_tokens(list(CHARACTER_SPECIALS))
    return TokenizerBundle.from_tokenizer(tokenizer)


def is_character_tokenizer(bundle: TokenizerBundle) -> bool:
    """Whether `bundle` was made by `build_character_tokenizer` (its specials come first and it has `<|unk|>`)."""
    return bundle.tokenizer.token_to_id(UNK) == len(CHARACTER_SPECIALS) - 1


def unknown_id(bundle: TokenizerBundle) -> int | None:
    """The id characters outside the set map to (None for byte-level tokenizers, which have none)."""
    return bundle.tokenizer.token_to_id(UNK)


def character_set(bundle: TokenizerBundle) -> str:
    """The characters a character tokenizer spells, in id order (what transcripts are normalised to)."""
    vocab = bundle.tokenizer.get_vocab()
    return "".join(token for token, _ in sorted(vocab.items(), key=lambda item: item[1]) if len(token) == 1)
