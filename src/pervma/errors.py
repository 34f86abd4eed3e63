"""pervma's small exception family.

Every error a user can cause derives from :class:`PervmaError`; the CLI prints
it as one line and exits 2.  This module imports nothing of pervma, so every
layer (``config``, ``layout``, ``host``, the model, the drivers) may use it.
"""


class PervmaError(Exception):
    """Base of every error a user can cause."""

    exit_code = 2


class UsageError(PervmaError):
    """Bad command-line arguments or an impossible request."""


class ConfigError(PervmaError):
    """A malformed ``.config`` fragment or an unknown preset."""


class BTFError(PervmaError):
    """Unreadable, truncated or corrupt BTF."""


class ScenarioError(PervmaError):
    """An impossible scenario, schedule or replay file."""


class HostError(PervmaError):
    """The running system lacks something a command needs (/proc, sysfs, root)."""


class InputError(PervmaError):
    """A file pervma was asked to read is missing, too large, not UTF-8 or malformed."""


class OutputError(PervmaError):
    """An output path pervma may not or cannot write (it would lose a user's file)."""
