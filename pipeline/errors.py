"""Errors that mean "the user's input is wrong" (as opposed to a bug).

Entry points catch `UserError`, print its message (which names the culprit: file, arch string,
column, config key) and exit with status 2, without a traceback.
"""


class UserError(Exception):
    """Bad input: a malformed arch string, a missing column, an unknown config key, a corrupt shard..."""


class ConfigError(UserError):
    """A config file or override is invalid."""


class DataError(UserError):
    """A data file (table, shard, manifest) is missing, malformed or inconsistent."""


class ArchError(UserError):
    """An architecture description is malformed or not in the search space."""
