"""Writing files so that nothing half-written is ever left behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path, write, executable: bool = False, previous=None) -> None:
    """Call write(binary_file) on a temporary file beside path, then rename it over path:
    a reader (or a resumed run) sees the old file or the new one, never half of one.

    With `previous`, the old file is first renamed to that name: killed between the
    two renames, the folder holds `previous` (the old file, whole) and no `path`."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        mode = 0o777 if executable else 0o666
        os.chmod(temp, mode & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(temp, path)
        _sync_folder(path.parent)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        interrupt = _interrupt(error)
        if interrupt is not None and interrupt is not error:
            # Ctrl-C (or SIGTERM, raised as one) inside torch.save makes its zip writer
            # fail on the way out with a RuntimeError; what happened is the interrupt
            raise interrupt from None
        raise


def _interrupt(error: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that `error` was raised while handling, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__context__
    return None


def atomic_write_text(path, text: str, executable: bool = False) -> None:
    atomic_write(path, lambda out: out.write(text.encode("utf-8")), executable)


def _sync_folder(folder: Path) -> None:
    """The renames on disk too, so that a power cut keeps them (where the system allows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
