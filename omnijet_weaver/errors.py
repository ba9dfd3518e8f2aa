"""The one exception hierarchy of omnijet-weaver.

Every error the package raises on purpose derives from :class:`OmniJetError`, and each message names the file
or option at fault and what to do. The subclasses also derive from the matching built-in exception
(``ValueError``, ``FileExistsError``, ...), so code that catches those keeps working. The commands turn any of
them into one ``<command>: error: <message>`` line and exit code 2 (:func:`omnijet_weaver.cli.run_command`).
"""

from __future__ import annotations


class OmniJetError(Exception):
    """Base class of every error omnijet-weaver raises on purpose."""


class ConfigError(OmniJetError, ValueError):
    """An option, network option (``-o``) or data config that cannot work (the message says which and why)."""


class InputFileError(OmniJetError, ValueError):
    """An input file cannot be read as needed (missing, unreadable, RNTuple instead of TTree, lacking branches)."""


class CheckpointError(OmniJetError, ValueError):
    """A file is not a usable omnijet-weaver checkpoint (missing, unreadable, wrong kind, other sizes)."""


class OutputExistsError(OmniJetError, FileExistsError):
    """An output file or folder exists and may not be replaced (no ``--overwrite``, or not ours to replace)."""


class WeaverRunError(OmniJetError, RuntimeError):
    """A ``weaver`` run started by a study failed, or wrote less than expected (the message names its log)."""


class MissingDependencyError(OmniJetError, ImportError):
    """An optional dependency is not installed (the message gives the ``pip install`` command)."""


__all__ = ["OmniJetError", "ConfigError", "InputFileError", "CheckpointError", "OutputExistsError",
           "WeaverRunError", "MissingDependencyError"]
