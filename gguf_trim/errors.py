"""The two kinds of failure the CLI reports as one line: bad input (exit 2) and internal faults (exit 1)."""


class TrimError(Exception):
    """A problem with the user's input or request; the message is shown as is, exit code 2."""


class GGUFError(TrimError):
    """The file is not a GGUF this tool can read (wrong magic, truncated, corrupt)."""


class InternalError(Exception):
    """Something gguf-trim itself got wrong (a check of its own output failed, a worker died): exit code 1,
    one line; GGUF_TRIM_DEBUG=1 shows the traceback."""


def one_line(e: BaseException) -> str:
    """An exception as a short single line, for wrapping library errors into TrimError."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
