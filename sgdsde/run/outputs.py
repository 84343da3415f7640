"""Writing result files: atomically, readable by the group, never over what the user did
not ask to replace, and cleaning up after writers that were killed.

* **Atomic.** Every file is written to a temporary beside its final name and renamed
  onto it (``os.replace``), so a final name holds either the old file or the whole new
  one, never a truncated file; ``write_together`` writes several files (a dataset and
  its figure) to temporaries first and renames them only once all are written.
* **Readable.** Temporaries are created with mode 0o666 minus the umask (0644 under the
  usual umask 022), not 0600 as ``tempfile.mkstemp`` would.
* **Temporaries are ours by name**: ``.<final name>.sgdsde-<host>-<pid>-<8 hex>.tmp``.
  Before writing into a folder, ``clean_stale_temporaries`` removes the ones whose
  writer is gone: written on this host by a process that no longer exists, or (any
  host: a pid cannot be checked across machines sharing a file system) untouched for
  ``STALE_AFTER_S`` (a day). Nothing else in the folder is ever touched.
* **Overwrite policy**: ``check_new_files`` refuses, before any work, to write over an
  existing file unless the caller asked to replace it; ``check_output_folder`` finds a
  folder that cannot be created or written into, also before any work.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

#: Our temporaries older than this are stale whichever host wrote them (seconds).
STALE_AFTER_S = 24 * 3600

_TEMPORARY = re.compile(
    r"\.(?P<target>.+)\.sgdsde-(?P<host>[A-Za-z0-9-]+)-(?P<pid>[0-9]+)-[0-9a-f]{8}\.tmp"
)


def host_tag() -> str:
    """This host's name reduced to ``[A-Za-z0-9-]`` (as it appears in temporary names)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def new_temporary(path: Path) -> Path:
    """Create (exclusively, mode 0o666 minus the umask) and return an empty temporary for
    ``path`` in the same folder, named as ``clean_stale_temporaries`` recognizes."""
    for _ in range(100):
        tmp = path.parent / (
            f".{path.name}.sgdsde-{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        )
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove our temporaries in ``folder`` whose writer is gone (see the module
    docstring) and return them; other files, and temporaries of live writers, stay."""
    removed = []
    here, now = host_tag(), time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        dead = match["host"] == here and not _process_exists(int(match["pid"]))
        if old or dead:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or a pid we cannot judge): keep
    return True


def write_together(writers: Mapping[Path, Callable[[Path], None]]) -> list[Path]:
    """Write several files as one: ``writers[path](tmp)`` writes each file's content to
    its temporary; once every writer has returned, the temporaries are renamed onto
    their final paths, back to back in the given order. If a writer raises (or the
    process is interrupted), no final path has changed and the temporaries are removed.
    Returns the final paths."""
    staged: list[tuple[Path, Path]] = []
    try:
        for folder in {Path(path).parent for path in writers}:
            folder.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(folder)
        for path, write in writers.items():
            tmp = new_temporary(Path(path))
            staged.append((tmp, Path(path)))
            write(tmp)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in staged]


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` writes the content to a temporary, which is then renamed onto
    ``path`` (see ``write_together``). Returns ``path``."""
    return write_together({Path(path): write})[0]


def check_output_folder(folder: str | os.PathLike, what: str = "out_dir") -> Path:
    """Create ``folder`` if needed and check that files can be created in it, before any
    work; a ValueError names ``what`` (the argument or option), the folder and the fix."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder: give a folder for the results")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        new_temporary(folder / "write-probe").unlink()
    except OSError as err:
        raise ValueError(
            f"{what} {folder} is not a folder we can write to ({err.strerror or err}): "
            "choose a writable folder"
        ) from err
    return folder


def check_new_files(paths: Iterable[Path], overwrite: bool, fix: str) -> None:
    """Refuse, before any work, to write where a file exists unless ``overwrite``, and
    over anything that is not a regular file even then; ``fix`` says how to ask for a
    replacement (e.g. "pass --overwrite")."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.exists() and not path.is_file():
            raise ValueError(f"{path} exists and is not a file: remove it or choose another name")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ValueError(f"{' and '.join(existing)} already {verb}: {fix}")
