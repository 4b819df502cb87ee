"""The workflow's configuration: schema validation, asset paths, the sample sheet.

Pure Python so it is testable without running Snakemake; ``workflow/rules/common.smk``
calls it with the project root (the folder holding the Snakefile) and the schema files,
so the library assumes nothing about where it is installed. Path rules (also in the README):

- relative ``asset_root``, ``samples`` and ``tracking.checkpoint`` in the config resolve
  against the project root, so ``--directory`` moves only the results;
- relative ``path`` cells of the sample sheet and the ``weights`` entries resolve
  against ``asset_root``; absolute paths (and ``~``) are used as they are.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import jsonschema
import pandas as pd
import yaml

from motionrefine.core.errors import AssetMissingError, MotionRefineError
from motionrefine.io.video import parse_resize
from motionrefine.core.limits import RAFT_MIN_SIDE as MIN_SIDE

SAMPLE_COLUMNS = ("name", "path", "start", "end", "stride", "resize", "queries")
_INT_COLUMNS = ("start", "end", "stride")


class ConfigError(MotionRefineError):
    """An invalid config value or sample sheet row."""


@dataclass(frozen=True)
class AssetSource:
    where: str
    sha256: str | None = None


# Where to get the assets the default config names; an unknown key still gets a clear message.
KNOWN_ASSETS = {
    "raft_small": AssetSource(
        "the official RAFT release https://github.com/princeton-vl/RAFT "
        "(download models.zip, take models/raft-small.pth)",
        "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332",
    ),
    "raft_things": AssetSource(
        "the official RAFT release https://github.com/princeton-vl/RAFT "
        "(download models.zip, take models/raft-things.pth)",
    ),
}


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _with_defaults(validator_class):
    """``validator_class`` whose ``properties`` check first fills each missing property that
    has a ``default`` (as snakemake.utils.validate does), so validation also completes the config."""
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_check})


def validate_config(config: dict, schema: str | os.PathLike) -> dict:
    """Validate ``config`` in place against the ``schema`` file (YAML or JSON), filling
    schema defaults; needs jsonschema only, not Snakemake. ``$ref`` may point within the file.

    Raises ConfigError naming the key and what was expected, e.g.
    ``config key 'model.iters': 'twelve' is not of type 'integer'``.
    """
    with open(schema) as fh:
        contents = yaml.safe_load(fh)
    validator_class = _with_defaults(jsonschema.validators.validator_for(contents))
    # Defaults are filled while validating, so the first error is reported as Snakemake did;
    # best_match picks the most specific error among its anyOf/oneOf branches.
    err = next(validator_class(contents).iter_errors(config), None)
    if err is not None:
        err = jsonschema.exceptions.best_match([err]) or err
        raise ConfigError(f"config key '{_key_path(err)}': {err.message}")
    return config


def load_config_file(path: str | os.PathLike, schema: str | os.PathLike) -> dict:
    """Read and validate a YAML config file (for tests and tools outside Snakemake)."""
    with open(path) as fh:
        config = yaml.safe_load(fh) or {}
    return validate_config(config, schema)


def _resolve(path: str | os.PathLike, base: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (base / p)


def asset_root(config: dict, project_root: str | os.PathLike) -> Path:
    return _resolve(config["asset_root"], Path(project_root).resolve()).resolve()


def samples_path(config: dict, project_root: str | os.PathLike) -> Path:
    return _resolve(config["samples"], Path(project_root).resolve())


def resolve_asset(config: dict, key: str, project_root: str | os.PathLike) -> Path:
    """Absolute path of ``weights.<key>``; AssetMissingError naming the file, where, and where to get it."""
    weights = config.get("weights", {})
    if key not in weights:
        raise ConfigError(f"config key 'weights.{key}' is not set (known: {', '.join(sorted(weights)) or 'none'})")
    root = asset_root(config, project_root)
    path = _resolve(weights[key], root)
    if path.is_file():
        return path
    source = KNOWN_ASSETS.get(key)
    hint = (
        f"Get it from {source.where}" + (f", sha256 {source.sha256}" if source.sha256 else "")
        if source else "Put the file there"
    )
    raise AssetMissingError(
        f"asset weights.{key} not found: looked for {path} "
        f"(weights.{key} = {weights[key]!r} under asset_root {config['asset_root']!r} = {root}). "
        f"{hint}, and place it at that path or point asset_root / weights.{key} at it."
    )


def model_checkpoint(config: dict, project_root: str | os.PathLike) -> Path:
    return resolve_asset(config, config["model"]["checkpoint"], project_root)


def infer_checkpoint(config: dict, project_root: str | os.PathLike) -> Path:
    """The RAFT weights `snakemake infer` applies: ``infer.checkpoint`` as a key of ``weights``
    or a path, else the pretrained model's.

    A path is made absolute against the working directory (where results/ is), so that no
    rule's output matches it: results/model/raft.pth of an earlier run is used as it is, never
    rebuilt by refining on the clips being inferred."""
    name = (config.get("infer") or {}).get("checkpoint")
    if name is None:
        return model_checkpoint(config, project_root)
    if name in config["weights"]:
        return resolve_asset(config, name, project_root)
    return Path(os.path.expanduser(name)).absolute()


def infer_tracker(config: dict, project_root: str | os.PathLike) -> Path:
    """The tracker file `snakemake infer` runs: ``infer.tracker`` (absolute against the working
    directory, as infer.checkpoint) or tracking.checkpoint."""
    name = (config.get("infer") or {}).get("tracker")
    return tracker_checkpoint(config, project_root) if name is None else Path(os.path.expanduser(name)).absolute()


def tracker_raft_checkpoint(config: dict, project_root: str | os.PathLike) -> Path:
    """The RAFT-small weights a FlowPips tracker runs on: ``weights.<tracking.raft>``."""
    return resolve_asset(config, config["tracking"].get("raft", "raft_small"), project_root)


def tracker_checkpoint(config: dict, project_root: str | os.PathLike) -> Path:
    """The tracker weights ``tracking.checkpoint`` (relative: to the project root, which ships them)."""
    value = config["tracking"].get("checkpoint")
    if not value:
        raise ConfigError("config key 'tracking.checkpoint' is not set (the tracker weights)")
    path = Path(value) if Path(value).is_absolute() else Path(project_root).resolve() / value
    if not path.is_file():
        raise ConfigError(f"config key 'tracking.checkpoint': tracker weights not found at {path}")
    return path


# envs/motionrefine.yaml installs the package with `pip install -e ${MOTIONREFINE_ROOT}`: Snakemake
# builds a conda env from a copy of that file, so no path relative to it reaches the project.
PROJECT_ROOT_ENV = "MOTIONREFINE_ROOT"


def export_project_root(project_root: str | os.PathLike) -> None:
    """Set :data:`PROJECT_ROOT_ENV` for the conda env builds of ``--sdm conda`` (run by this process)."""
    os.environ[PROJECT_ROOT_ENV] = str(Path(project_root).resolve())


def rule_resources(config: dict, rule: str) -> dict:
    """threads/mem_mb/runtime/gpu of ``rule``: its ``resources.<rule>`` entry over ``resources.default``."""
    res = config["resources"]
    return {**res["default"], **res.get(rule, {})}


def _load_samples_schema(path: str | os.PathLike):
    with open(path) as fh:
        return jsonschema.Draft202012Validator(yaml.safe_load(fh))


def load_samples(config: dict, project_root: str | os.PathLike, schema: str | os.PathLike) -> pd.DataFrame:
    """Read, type and check the sample sheet against the row ``schema`` file; index = sample name.

    Columns out: name, path (absolute), kind ('video' | 'folder'), start, end (None =
    to the last frame, exclusive), stride, resize (normalised string or None), queries
    (absolute path of the video's query-point CSV, or None).
    Every problem raises one ConfigError naming the sheet, row and column.
    """
    sheet = samples_path(config, project_root)
    if not sheet.is_file():
        raise ConfigError(f"sample sheet not found: {sheet} (config key 'samples' = {config['samples']!r})")
    # Everything as text: our own parsing gives errors that name the cell, and '' means "default".
    table = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    table.columns = [c.strip() for c in table.columns]

    unknown = [c for c in table.columns if c not in SAMPLE_COLUMNS]
    if unknown:
        raise ConfigError(f"{sheet}: unknown column(s) {unknown}; allowed: {', '.join(SAMPLE_COLUMNS)}")
    missing = [c for c in ("name", "path") if c not in table.columns]
    if missing:
        raise ConfigError(f"{sheet}: missing required column(s) {missing}")
    if table.empty:
        raise ConfigError(f"{sheet}: no samples listed")

    root = asset_root(config, project_root)
    validator = _load_samples_schema(schema)
    seen: dict[str, int] = {}
    records = []
    for i, row in enumerate(table.to_dict("records"), start=1):
        where = f"{sheet} row {i} (name {row.get('name', '')!r})"
        record = {}
        for col, raw in row.items():
            text = raw.strip()
            if text == "":
                continue
            if col in _INT_COLUMNS:
                try:
                    record[col] = int(text)
                except ValueError:
                    raise ConfigError(f"{where}, column '{col}': expected an integer, got {text!r}") from None
            else:
                record[col] = text
        for col in ("name", "path"):
            if col not in record:
                raise ConfigError(f"{where}, column '{col}': empty, but required")
        # Unknown columns and empty required cells are handled above, so every error names a column.
        errors = sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))
        if errors:
            raise ConfigError(f"{where}, column '{_key_path(errors[0])}': {errors[0].message}")
        name = record["name"]
        if name in seen:
            raise ConfigError(f"{where}, column 'name': duplicate sample name {name!r} (also row {seen[name]})")
        seen[name] = i

        start, end, stride = record.get("start", 0), record.get("end"), record.get("stride", 1)
        if end is not None and end <= start:
            raise ConfigError(f"{where}, column 'end': end={end} must be greater than start={start} (end is exclusive)")
        if end is not None and len(range(start, end, stride)) < 2:
            raise ConfigError(
                f"{where}, column 'end': start={start} end={end} stride={stride} selects "
                f"{len(range(start, end, stride))} frame(s); at least 2 are needed"
            )
        try:
            resize = parse_resize(record.get("resize"))
        except ValueError as exc:
            raise ConfigError(f"{where}, column 'resize': {exc}") from None
        if resize and min(s for s in (resize.width, resize.height, resize.short_side) if s) < MIN_SIDE:
            raise ConfigError(f"{where}, column 'resize': {resize} makes a side shorter than {MIN_SIDE} px, "
                              "too small for RAFT's correlation pyramid")

        path = _resolve(record["path"], root)
        if not path.exists():
            raise ConfigError(
                f"{where}, column 'path': {path} does not exist "
                f"(relative paths are resolved against asset_root {root})"
            )
        if not (path.is_file() or path.is_dir()):
            raise ConfigError(f"{where}, column 'path': {path} is neither a video file nor a frame folder")
        queries = None
        if "queries" in record:
            queries = _resolve(record["queries"], root)
            if not queries.is_file():
                raise ConfigError(f"{where}, column 'queries': {queries} is not a file "
                                  f"(relative paths are resolved against asset_root {root})")
        records.append({
            "name": name,
            "path": str(path),
            "kind": "folder" if path.is_dir() else "video",
            "start": start,
            "end": end,
            "stride": stride,
            "resize": str(resize) if resize else None,
            "queries": str(queries) if queries else None,
        })
    # object dtype keeps ints as ints and a missing end as None (not NaN floats).
    return pd.DataFrame(records, dtype=object).set_index("name", drop=False)


@contextlib.contextmanager
def job_log(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Route a workflow script's logging to its Snakemake log file.

    A MotionRefineError ends the job with its one-line message (it already names the
    file or key at fault) in the log and on stderr; anything else keeps its traceback.
    """
    logger = logging.getLogger("motionrefine")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    try:
        yield logger
    except MotionRefineError as exc:
        logger.error("%s", exc)
        raise SystemExit(1) from None
    except BaseException:
        logger.exception("job failed")
        raise
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
