"""Command-line entry points (see ``setup.cfg``: ``omnijet-weaver-*``) and their one error path.

Every command is a module with ``PROG`` (its command name) and ``main(argv=None)`` wrapped by :func:`command`,
so all of them behave alike:

- bad input (an :class:`~omnijet_weaver.errors.OmniJetError`, or a ``ValueError``, ``OSError``, ``KeyError``,
  ``ImportError`` raised on it) and bad options -> one line ``<command>: error: <message>`` on stderr, exit 2;
- a failed ``weaver`` run inside a study (:class:`~omnijet_weaver.errors.WeaverRunError`) -> the message with
  the end of the weaver log (several lines), exit 1;
- Ctrl-C -> one line, exit 130 (outputs are published only when complete, so nothing half-written is left).

The options several commands share are defined once, in :mod:`omnijet_weaver.cli.options`; a study's parsed
options become its config dataclass in one generic step (:func:`config_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

from ..errors import OmniJetError, WeaverRunError

#: What the commands report as one ``error:`` line (exit 2): our errors and the built-ins raised on bad input.
BAD_INPUT = (OmniJetError, ValueError, OSError, KeyError, ImportError)


# --------------------------------------------------------------------------------------------------------
# the one error path
# --------------------------------------------------------------------------------------------------------


def fail(prog: str, message, code: int = 2):
    """Print ``<prog>: error: <message>`` as one line on stderr and exit with ``code``."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def error_message(err: BaseException) -> str:
    """The text of an exception (a ``KeyError``'s message without the quotes ``str`` adds)."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    return str(err)


def run_command(prog: str, body, *args):
    """Run ``body(*args)`` on the error path every command shares (see the module docstring)."""
    try:
        return body(*args)
    except WeaverRunError as err:  # its message carries the end of the weaver log: keep the lines
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(1)
    except BAD_INPUT as err:
        fail(prog, error_message(err))
    except KeyboardInterrupt:
        fail(prog, "interrupted; no output written (outputs appear only when complete)", code=130)


def command(prog: str):
    """Decorator: ``main(argv=None)`` of command ``prog``, run through :func:`run_command`."""

    def decorate(body):
        @functools.wraps(body)
        def main(argv=None):
            return run_command(prog, body, argv)

        return main

    return decorate


class CommandParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors are one line (``<prog>: error: ... (see <prog> --help)``), exit 2."""

    def error(self, message):
        fail(self.prog, f"{message}{self._list_hint(message)} (see {self.prog} --help)")

    def _list_hint(self, message: str) -> str:
        """A hint when a list option may have swallowed the input files (``--seeds 0 1 top.root``)."""
        positional = {a.dest for a in self._actions if a.nargs == "+" and not a.option_strings}
        lists = {s for a in self._actions if a.nargs == "+" for s in a.option_strings}
        option = message.split(":", 1)[0].removeprefix("argument ").split("/")[0]
        missing = message.partition("the following arguments are required: ")[2].split(", ")
        if positional and lists and (option in lists or positional & set(missing)):
            return ("; a list option takes every value up to the next option: give the input files first, "
                    "or end the list with --")
        return ""


def command_parser(prog: str, doc: str) -> CommandParser:
    """The parser of a command: description = first paragraph of ``doc``, epilog = the rest (examples)."""
    description, _, epilog = doc.strip().partition("\n\n")
    return CommandParser(prog=prog, description=description, epilog=epilog or None,
                         formatter_class=argparse.RawDescriptionHelpFormatter)


def config_from_args(cls, args, **overrides):
    """The dataclass ``cls`` (a study's config) of parsed options: every option whose ``dest`` is a field of ``cls``
    and whose value is not None (None = not given: the dataclass default applies), lists as tuples where the field
    is a tuple, then ``overrides``. Adding an option to a study is thus one ``add_argument`` line."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    for k, v in values.items():
        if isinstance(v, list) and fields[k].type in (tuple, "tuple"):
            values[k] = tuple(v)
    values.update(overrides)
    return cls(**values)


# --------------------------------------------------------------------------------------------------------
# torchrun
# --------------------------------------------------------------------------------------------------------


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank_output(path: str, overwrite: bool, suffixes=(".root", ".parquet")) -> tuple[int, int, str]:
    """(rank, world size, the checked output path of this rank: :func:`part_path`) under torchrun, else
    ``(0, 1, path)``."""
    from ..io.files import check_output_path

    rank, world = distributed_rank()
    return rank, world, check_output_path(part_path(path, rank, world), overwrite, suffixes=suffixes)


def part_path(path: str, rank: int, world: int) -> str:
    """``out.parquet`` -> ``out.part1of4.parquet`` under torchrun (one file per rank), else unchanged."""
    if world <= 1:
        return path
    base, ext = os.path.splitext(path)
    return f"{base}.part{rank}of{world}{ext}"
