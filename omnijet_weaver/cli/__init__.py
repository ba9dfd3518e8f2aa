"""Command-line entry points (see ``setup.cfg``: ``omnijet-weaver-*``) and their one error path.

Every command is a module with ``PROG`` (its command name) and ``main(argv=None)`` wrapped by :func:`command`,
so all of them behave alike:

- bad input (an :class:`~omnijet_weaver.errors.OmniJetError`, or a ``ValueError``, ``OSError``, ``KeyError``,
  ``ImportError`` raised on it) and bad options -> one line ``<command>: error: <message>`` on stderr, exit 2;
- a failed ``weaver`` run inside a study (:class:`~omnijet_weaver.errors.WeaverRunError`) -> the message with
  the end of the weaver log (several lines), exit 1;
- Ctrl-C -> one line, exit 130; SIGTERM (a batch system's kill, ``timeout``) and SIGHUP are handled the same
  way, exit 143 / 129: the weaver processes a study started are stopped and every partial output is removed
  (outputs are published only when complete, so nothing half-written is left). After SIGKILL, the next run
  with the same output removes what the killed one left (:mod:`omnijet_weaver.atomic`).

The options several commands share are defined once, in :mod:`omnijet_weaver.cli.options`; a study's parsed
options become its config dataclass in one generic step (:func:`config_from_args`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import signal
import sys
import threading

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


class Terminated(KeyboardInterrupt):
    """A SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's ``KeyboardInterrupt``, so that the same
    clean-up runs (``finally`` blocks, partial outputs removed, child processes stopped)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the clean-up of the first
    raise Terminated(signum)


@contextlib.contextmanager
def termination_as_interrupt():
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, _terminate) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_command(prog: str, body, *args):
    """Run ``body(*args)`` on the error path every command shares (see the module docstring)."""
    try:
        with termination_as_interrupt():
            return body(*args)
    except WeaverRunError as err:  # its message carries the end of the weaver log: keep the lines
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(1)
    except BAD_INPUT as err:
        fail(prog, error_message(err))
    except Terminated as err:
        fail(prog, f"stopped by {err}; nothing partial is left (outputs appear only when complete)",
             code=128 + err.signum)
    except KeyboardInterrupt:
        fail(prog, "interrupted; nothing partial is left (outputs appear only when complete)", code=130)


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
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by torchrun (neither set).

    Raises :class:`~omnijet_weaver.errors.ConfigError` naming the variable and its value for a value that is not
    a whole number, ``WORLD_SIZE`` < 1, ``RANK`` outside 0 .. WORLD_SIZE - 1, only one of the two set, or
    ``LOCAL_RANK`` (when set) not a whole number from 0 to RANK."""
    from ..errors import ConfigError

    hint = "is not a valid torchrun environment; unset RANK and WORLD_SIZE or launch with torchrun"
    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if env["RANK"] is None and env["WORLD_SIZE"] is None:
        return 0, 1
    values = {}
    for key, text in env.items():
        if text is None:
            continue
        try:
            if not text.strip().isascii():
                raise ValueError(text)
            values[key] = int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r} (not a whole number) {hint}") from None
    if "RANK" not in values or "WORLD_SIZE" not in values:
        missing = "WORLD_SIZE" if "WORLD_SIZE" not in values else "RANK"
        raise ConfigError(f"{' '.join(f'{k}={env[k]!r}' for k in ('RANK', 'WORLD_SIZE') if env[k] is not None)} "
                          f"without {missing} {hint}")
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={env['WORLD_SIZE']!r} (must be at least 1) {hint}")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={env['RANK']!r} with WORLD_SIZE={env['WORLD_SIZE']!r} (RANK must be 0 to "
                          f"{world - 1}) {hint}")
    local = values.get("LOCAL_RANK")
    if local is not None and not 0 <= local <= rank:
        raise ConfigError(f"LOCAL_RANK={env['LOCAL_RANK']!r} with RANK={env['RANK']!r} (LOCAL_RANK must be 0 to "
                          f"{rank}) {hint}")
    return rank, world


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
