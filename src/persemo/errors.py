"""Errors that cross layers: each carries one line for the user, naming the file or field."""


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the field."""


class MissingExtra(ConfigError):
    """A member kind the config names needs an optional package (an extra) that is not installed."""
