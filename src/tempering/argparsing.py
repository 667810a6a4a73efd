"""How `temper` parses its command line: one-line errors, range-checked values, underscore flag spellings.

Built on argparse. What it adds: errors as one line (exit 2) instead of usage text; value
types that check ranges (`ranged`), so out-of-range flags are refused before anything runs;
the underscore spelling of every long flag (`--batch_size` for `--batch-size`), the habit of
the training scripts users come from, accepted without being listed twice in `--help`; and
a suggestion for a misspelt flag. The alias registration uses argparse's
`_option_string_actions` table, stable since Python 2.7, because argparse has no public way
to add an option string that help does not show.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterator

from tempering.errors import EXIT_USER_ERROR

UNDERSCORE_NOTE = "Long flags may also be spelt with underscores: {underscored} is {dashed}."


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: temper generate: argument --top-p: ...`, exit 2), no abbreviations.

    Abbreviated flags are off: with underscore spellings every prefix would be ambiguous, and a
    misspelt flag gets a suggestion instead of a silent guess.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """Print one line naming the command and the problem, and exit with the user-error status."""
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def ranged(kind: type, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           what: str = "") -> Callable[[str], int | float]:
    """An argparse `type` that parses `kind` and checks low <= value <= high (low < value when low_open)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if value != value or too_low or (high is not None and value > high):  # value != value: NaN
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}")
        return value

    return parse


def leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser that runs a command (`temper prep`, `temper config show`, ...), depth first."""
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subcommands:
        yield parser
    for action in subcommands:
        for child in dict.fromkeys(action.choices.values()):
            yield from leaf_parsers(child)


def command_summaries(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(command, one-line help) for every command, nested ones as `config show`."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, child in action.choices.items():
            children = list(command_summaries(child, f"{prefix}{name} "))
            yield from children or [(f"{prefix}{name}", helps.get(name, ""))]


def add_underscore_spellings(parser: argparse.ArgumentParser) -> None:
    """Accept `--a_b` for every `--a-b` of every command, unlisted; say so once in each command's help."""
    for leaf in leaf_parsers(parser):
        dashed = [option for action in leaf._actions for option in action.option_strings
                  if option.startswith("--") and "-" in option[2:]]
        for option in dashed:
            leaf._option_string_actions.setdefault("--" + option[2:].replace("-", "_"), leaf._option_string_actions[option])
        if dashed:
            note = UNDERSCORE_NOTE.format(underscored="--" + dashed[-1][2:].replace("-", "_"), dashed=dashed[-1])
            leaf.epilog = f"{leaf.epilog}\n{note}" if leaf.epilog else note
        leaf.set_defaults(_parser=leaf)


def command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the command `argv` names (`prep` in `temper prep ...`), or `parser` itself."""
    for word in argv:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands or word not in commands[0].choices:
            break
        parser = commands[0].choices[word]
    return parser


def first_unknown_flag(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The first `--flag` in `argv` that the command does not know (checked before argparse's own errors)."""
    command = command_parser(parser, argv)
    for word in argv:
        if word == "--":
            break
        if word.startswith("--") and word.split("=", 1)[0] not in command._option_string_actions:
            return word
    return None


def unknown_flag_message(parser: argparse.ArgumentParser, flag: str) -> str:
    """'unknown flag --batch-szie; did you mean --batch-size?' against the command's own flags."""
    name = flag.split("=", 1)[0]
    known = sorted({option for option in parser._option_string_actions if option.startswith("--") and "_" not in option})
    close = difflib.get_close_matches(name.replace("_", "-"), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f" (see `{parser.prog} --help`)"
    return f"{parser.prog}: unknown flag {name}{hint}"
