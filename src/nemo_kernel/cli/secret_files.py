"""Files that hold secrets (admin credentials, cached tokens): created 0600 before a byte is written."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def write_secret_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically with ``data`` as JSON, readable by the owner only (see :func:`write_secret`)."""
    write_secret(path, json.dumps(data))


def write_secret(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by the owner only.

    The temporary file is created with mode 0600 by ``open(2)`` itself, so there is no moment at which the
    secret sits in a file others may read; the rename then swaps it in whole (no torn file after a crash).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` if it is missing or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
