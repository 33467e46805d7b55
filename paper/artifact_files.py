"""Files of an artifact root, read back safely and written readable: the one home of both.

No Django imports (the runbook commands use it on a copied root).

Anything under an artifact root may have been replaced by hand: a session folder by a symlink
out of the root, a file by a symlink to /proc/kmsg (whose read blocks), by a FIFO (whose open
blocks while nobody writes it), by a device, or by a file of gigabytes. So every read back of
a session's files goes through `read_file`/`open_file`:

- the session folder is opened as a folder (O_DIRECTORY) without following a link in its own
  name (O_NOFOLLOW); everything in it is opened relative to that descriptor (dir_fd), each
  name checked with lstat first and opened with O_NOFOLLOW | O_NONBLOCK, so no link is
  followed out of the folder and no open waits;
- the opened descriptor is fstat'ed: anything but a regular file is refused, and so is a file
  larger than the read limit of its kind (`limit_for`); at most its size is read.

A refusal is a `Refused` (an OSError whose strerror says why in words), so callers that
already report an OSError as "unreadable (...)" report it unchanged. A name that is not there
(FileNotFoundError), a folder where a file belongs (IsADirectoryError) and a file where a
folder belongs on the way (NotADirectoryError) are what they were: `file_state` counts all
three as "missing".
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from pathlib import Path

# Read limits by kind. A session's JSON files are a few kilobytes and its report a few more;
# trades.csv is about 100 bytes a fill, and a chart PNG some tens of kilobytes.
MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_TEXT_BYTES = 8 * 1024 * 1024
MAX_CSV_BYTES = 64 * 1024 * 1024
MAX_PNG_BYTES = 32 * 1024 * 1024
LIMITS = {".json": MAX_JSON_BYTES, ".md": MAX_TEXT_BYTES, ".csv": MAX_CSV_BYTES, ".png": MAX_PNG_BYTES}

_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW


class Refused(OSError):
    """A file or folder that is not read, and why (`strerror`, in words)."""

    def __init__(self, reason: str):
        super().__init__(errno.EPERM, reason)


def limit_for(name: str) -> int:
    """The read limit of an artifact file, by its suffix (the JSON limit for an unknown one)."""
    return LIMITS.get(os.path.splitext(name)[1].lower(), MAX_JSON_BYTES)


_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def kind(mode: int) -> str:
    """What a file of this mode is, in words."""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def _link_text(name: str, dir_fd: int) -> str:
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return "a symlink (not followed)"
    shown = repr(target) if len(target) <= 80 else f"{target[:80]!r}..."
    return f"a symlink to {shown} (not followed)"


def _check(name: str, dir_fd: int, *, folder: bool) -> None:
    """lstat `name` in `dir_fd` and refuse anything that is not what it must be (before any open:
    opening a device may do something)."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise Refused(_link_text(name, dir_fd))
    if folder and not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"{kind(st.st_mode)}, not a folder")
    if not folder and stat.S_ISDIR(st.st_mode):  # a folder where a file belongs: no such file
        raise IsADirectoryError(errno.EISDIR, "a folder, not a regular file")
    if not folder and not stat.S_ISREG(st.st_mode):
        raise Refused(f"{kind(st.st_mode)}, not a regular file")


def _open_at(name: str, dir_fd: int, *, folder: bool) -> int:
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise Refused(f"{name!r} is not a plain file name")
    _check(name, dir_fd, folder=folder)
    try:
        return os.open(name, _DIR_FLAGS if folder else _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):  # replaced since the lstat
            _check(name, dir_fd, folder=folder)
        raise


def open_folder(path: str | os.PathLike) -> int:
    """A descriptor of the folder `path`, refused when its own name is a symlink (or not a folder).

    The folders above it (the root, as configured or as an operator typed it) are trusted.
    Close it with os.close.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if not name:  # "/"
        return os.open(path, _DIR_FLAGS)
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _open_at(name, parent_fd, folder=True)
    finally:
        os.close(parent_fd)


def open_file(dir_fd: int, relpath: str, *, limit: int | None = None) -> tuple[int, int]:
    """(descriptor, size) of the regular file `relpath` ("a.json", "artifacts/b.png") in the folder
    `dir_fd`, no link followed on the way; refused if it is not a regular file or is over `limit`
    (default: `limit_for(relpath)`). Close it with os.close."""
    limit = limit_for(relpath) if limit is None else limit
    *folders, name = relpath.split("/")
    opened: list[int] = []
    try:
        at = dir_fd
        for part in folders:
            at = _open_at(part, at, folder=True)
            opened.append(at)
        fd = _open_at(name, at, folder=False)
    finally:
        for fd_ in opened:
            os.close(fd_)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise Refused(f"too large ({st.st_size:,} bytes, at most {limit:,})")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_at(dir_fd: int, relpath: str, *, limit: int | None = None) -> bytes:
    """The bytes of `relpath` in the folder `dir_fd` (see `open_file`): at most its size when opened."""
    fd, size = open_file(dir_fd, relpath, limit=limit)
    try:
        chunks, left = [], size
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:  # it shrank while read
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_file(folder: str | os.PathLike, relpath: str, *, limit: int | None = None) -> bytes:
    """The bytes of `folder/relpath`: `folder` must be a real folder, `relpath` a regular file in it."""
    dir_fd = open_folder(folder)
    try:
        return read_at(dir_fd, relpath, limit=limit)
    finally:
        os.close(dir_fd)


def file_state(dir_fd: int, relpath: str) -> str | None:
    """None for a regular file `relpath` in `dir_fd` (no link followed), "missing" when it (or a
    folder on its way) is not there, else why it would be refused ("a FIFO, not a regular file")."""
    *folders, name = relpath.split("/")
    opened: list[int] = []
    try:
        at = dir_fd
        for part in folders:
            at = _open_at(part, at, folder=True)
            opened.append(at)
        _check(name, at, folder=False)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return "missing"
    except Refused as exc:
        return exc.strerror
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    finally:
        for fd_ in opened:
            os.close(fd_)
    return None


def is_regular(folder: str | os.PathLike, relpath: str) -> bool:
    """Whether `folder/relpath` is a regular file that `read_file` would open (size aside)."""
    try:
        dir_fd = open_folder(folder)
    except OSError:
        return False
    try:
        return file_state(dir_fd, relpath) is None
    finally:
        os.close(dir_fd)


# -- writing -------------------------------------------------------------------------------------

_umask: int | None = None
_umask_lock = threading.Lock()


def process_umask() -> int:
    """The process umask, read once. From /proc/self/status where there is one (reading it changes
    nothing); otherwise by setting it and back, with 077 meanwhile, so a file another thread
    creates in that instant is private rather than open to all."""
    global _umask
    with _umask_lock:
        if _umask is None:
            _umask = _umask_from_proc()
            if _umask is None:
                _umask = os.umask(0o077)
                os.umask(_umask)
        return _umask


def _umask_from_proc() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    return None


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `path` whole or not at all: a temp file in the same folder, then a rename, so a reader
    never sees half a file. The file's mode is what the umask gives a new file (0644 under 022),
    not mkstemp's 0600. Text is written as UTF-8, newlines as given."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~process_umask())
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- CSV cells a spreadsheet does not run ---------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_line(cells) -> str:
    """One CSV record of text cells, ended by "\n": the csv module's minimal quoting, except that a
    cell holding a CR is quoted too (the module only quotes the line terminator's characters, so
    with "\n" a bare CR would end the record in a reader and start a row of the cell's choosing)."""
    return ",".join(f'"{cell.replace(chr(34), chr(34) * 2)}"' if any(ch in cell for ch in ',"\r\n') else cell
                    for cell in cells) + "\n"


def formula_safe(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting with = + - @ tab or CR gets a leading
    apostrophe (OWASP, CSV injection). Only for text: a number is written as itself, not here."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text
