"""Files and Zarr v3 stores written atomically, and file hashes.

A job killed mid-write must leave nothing that a later run (or Snakemake) reads as
finished, so every store or file is built under a temporary sibling path and renamed
into place only after the last byte is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from motionrefine.core.errors import MotionRefineError, StoreWriteError

# Zstd through Blosc with byte shuffle: good ratio on images and smooth float fields.
DEFAULT_COMPRESSORS = (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),)


@contextlib.contextmanager
def atomic_group(path: str | os.PathLike, overwrite: bool = True) -> Iterator[zarr.Group]:
    """Yield a fresh Zarr v3 group that appears at ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        yield group
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} already exists")
            shutil.rmtree(final)
        os.replace(tmp, final)
        # Leftovers of earlier writers of this store that were killed (SIGKILL skips their cleanup).
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, MotionRefineError) and exc.errno and not exc.filename:
            # Chunk writes deep inside zarr (full disk, quota, file-size limit) name no file.
            raise StoreWriteError(exc.errno, f"{exc.strerror} while writing Zarr store", str(final)) from exc
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` only if the block succeeds (a folder
    of exported files appears complete or not at all)."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def create_array(group: zarr.Group, name: str, shape, dtype, chunks=None, **attrs) -> zarr.Array:
    """Create a compressed array; ``chunks`` defaults to one chunk per leading index (per frame/pair)."""
    if chunks is None:
        chunks = (1,) + tuple(shape[1:]) if len(shape) > 1 else tuple(shape)
    arr = group.create_array(name, shape=tuple(shape), dtype=dtype, chunks=tuple(chunks),
                             compressors=DEFAULT_COMPRESSORS, fill_value=0)
    if attrs:
        arr.attrs.update(attrs)
    return arr


def write_array(group: zarr.Group, name: str, data: np.ndarray, chunks=None, **attrs) -> zarr.Array:
    arr = create_array(group, name, data.shape, data.dtype, chunks=chunks, **attrs)
    arr[...] = data
    return arr


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object], keep_suffix: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    ``keep_suffix``: the temporary name ends in the target's suffix, for writers that pick
    the format from it (matplotlib, the flow file writers)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}" + (p.suffix if keep_suffix else ""))
    try:
        write(tmp)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (JSON, markdown, HTML) via a temporary sibling and a rename."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_atomic(obj, path: str | os.PathLike) -> str:
    """``torch.save`` via a temporary sibling and a rename. Returns the sha256 of the file."""
    import torch  # only the trainers and model writers need it

    write_atomic(path, lambda tmp: torch.save(obj, tmp))
    return sha256_file(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def open_group(path: str | os.PathLike) -> zarr.Group:
    """Open an existing store read-only, with an error that names the path if it is missing."""
    p = Path(path)
    if not p.exists():
        from motionrefine.core.errors import AssetMissingError

        raise AssetMissingError(f"Zarr store not found: {p}")
    return zarr.open_group(str(p), mode="r")
