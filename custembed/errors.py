"""What went wrong, as types: a user mistake exits 2 with one line, anything else is a crash.

``UserError`` and its subclasses are mistakes the user can fix (configuration,
input files, command-line arguments, tables not written yet): every job's
``main`` prints them in one line and exits 2. Any other exception is a crash:
it exits 1 with the stack trace in the log.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or environment, not a bug: one line, exit code 2."""


class ConfigError(UserError, ValueError):
    """A configuration value is unknown, of the wrong type or malformed (names the key and the file)."""


class InputError(UserError, ValueError):
    """An input (events file, table, column, argument) is missing or not in the expected shape."""


class TableNotFoundError(InputError):
    """A table the job reads has not been written yet: run the job that writes it first."""


class QueryError(InputError):
    """A SQL query given by the user failed to parse or run."""
