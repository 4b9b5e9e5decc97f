"""The one root of every error a person should read as a sentence rather than a traceback.

A refused upload, a plan that cannot run, a device this machine lacks, weights it cannot get, a
run that does not exist: each is a ``TransferLabError`` whose ``str()`` is one line saying what
to change. Each subclass also keeps the builtin base that fits it (``ValueError``,
``LookupError``, ``RuntimeError``), so callers that catch those keep working. A full disk is an
``OSError`` (ENOSPC) that ``one_line`` words as a sentence too. The command line turns this root,
and a full disk, into exit code 1 and one line on stderr, in one place (``core.cli.main``); the
pages show it as a message. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno

from core.inert import terminal

MAX_MESSAGE = 500
# A write that found no room: the disk is full, or its owner's quota is.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


class TransferLabError(Exception):
    """A refused input or a step that failed for a reason the user can act on."""


def one_line(exc: BaseException, limit: int | None = MAX_MESSAGE) -> str:
    """``exc`` as one line of at most ``limit`` characters, whitespace runs collapsed.

    Our own errors are sentences written for people and stand alone, and so does a full disk's;
    any other exception is prefixed with its type, without which its text is often cryptic
    (``KeyError: 'fc'``).
    """
    if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
        text = terminal(disk_full(exc))
    elif isinstance(exc, MemoryError):
        detail = f" ({' '.join(str(exc).split())})" if str(exc) else ""
        text = terminal(f"MemoryError: out of memory{detail}; a smaller batch or image size needs less")
    else:
        text = terminal(" ".join(str(exc).split()))
        if not isinstance(exc, TransferLabError) or not text:
            text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or the error it was handling when it was raised (a failure to record
    a failure), is a write that found no room."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return True
        exc = exc.__context__
    return False


def disk_full(exc: OSError) -> str:
    """What a person reads when a write failed for want of space (or over a disk quota): which
    file, and what to do."""
    where = f" {exc.filename}" if exc.filename else " a file"
    return f"the disk is full: could not write{where}; free some space there and try again"
