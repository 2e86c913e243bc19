"""Errors the CLI reports as one line with exit code 2 (bad input, refused requests)."""


class TrimError(Exception):
    """A problem with the user's input or request; the message is shown as is."""


class GGUFError(TrimError):
    """The file is not a GGUF this tool can read (wrong magic, truncated, corrupt)."""
