"""Writing files all or nothing, and reading them whole.

Every file gguf-trim writes (trimmed models, plans, caches, job sidecars, merged translations)
goes to a temp file in the destination's own folder and is renamed into place only when it is
complete (and checked), so an interrupted or failed write never leaves a partial file under the
real name. `atomic_write` does this for a file written front to back; the streaming model writer
(rewrite/) keeps its temp files open across threads and renames a set of shards together, so it
uses `temp_file` and `os.replace` itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from gguf_trim.errors import TrimError, one_line

READ_CHUNK = 1 << 20
COPY_CHUNK = 256 << 20


def check_output(out: str | Path, source: str | Path | list[Path]) -> tuple[Path, Path]:
    """Refuse an output that is the input (any of its shards), a directory, or in a missing or
    unwritable folder. Returns (output path, its folder)."""
    out = Path(out)
    sources = source if isinstance(source, list) else [source]
    if out.exists() and any(out.resolve() == Path(s).resolve() for s in sources):
        raise TrimError(f"-o {out} is the input file; refusing to overwrite the input")
    if out.is_dir():
        raise TrimError(f"-o {out} is a directory; give a file name")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise TrimError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrimError(f"output folder {folder} is not writable")
    return out, folder


def temp_file(out: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """A new hidden temp file (fd, path) beside `out`, so that renaming it onto `out` is atomic.

    Its name carries this process's id and host (`.OUT.PID@HOST.XXXX.tmp`) so that the temp files a
    killed writer left (SIGKILL, power loss: nothing of ours runs to remove them, and a model's can be
    gigabytes) are removed by the next write of the same output on the same host. A temp file whose
    writer still runs, or was written from another host, is never touched."""
    folder = out.parent if str(out.parent) else Path(".")
    remove_stale_temps(out)
    try:
        return tempfile.mkstemp(dir=folder, prefix=f".{out.name}.{os.getpid()}@{_host()}.", suffix=suffix)
    except OSError as e:
        raise TrimError(f"cannot write in output folder {folder}: {e.strerror}") from None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove the temp files of `out` whose writer (by the process id in the name, on this host) is gone."""
    folder = out.parent  # Path("name").parent is Path(".")
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(\d+)@{re.escape(_host())}\..+\.tmp")
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if not m or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(folder / name)
            removed.append(folder / name)
        except OSError:
            pass  # another writer got there first, or the folder refuses: not this write's business
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None, fsync: bool = False,
                 check: Callable[[str], Any] | None = None) -> Iterator[IO]:
    """Write `path` all or nothing: yields a file open on a temp file beside it; when the block
    ends without error the temp file is closed, made readable (0644), checked (`check(temp
    path)`, which raises to refuse it) and renamed into place. On any error it is removed."""
    path = Path(path)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's raw bytes, streamed."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise TrimError(f"{path}: cannot read ({one_line(e)})") from e
    return h.hexdigest()


def copy_range(src: Any, fd: int, s: int, d: int, left: int, stop: threading.Event) -> None:
    """Copy bytes [s, s+left) of the source file (a GGUFFile: `fileno()`, `view(offset, n)`) to
    offset d of `fd`, in the kernel where copy_file_range works, else through the memory map."""
    while left and not stop.is_set():
        try:
            n = os.copy_file_range(src.fileno(), fd, min(left, COPY_CHUNK), s, d)
        except (OSError, AttributeError):
            n = os.pwrite(fd, src.view(s, min(left, COPY_CHUNK)), d)
        if n <= 0:
            raise OSError("copy of tensor data stalled")
        s, d, left = s + n, d + n, left - n


def cache_dir() -> Path:
    """Where gguf-trim keeps what it can recompute (token counts, SPM merge tables):
    $GGUF_TRIM_CACHE, else the XDG cache folder."""
    env = os.environ.get("GGUF_TRIM_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gguf-trim"


def save_cache(path: Path, write: Callable[[IO], Any]) -> None:
    """Write a cache file atomically with write(binary file); a cache that cannot be written is
    skipped, not an error (a read-only home must not stop a trim)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            write(f)
    except (OSError, TrimError):  # TrimError: no temp file can be made there
        pass
