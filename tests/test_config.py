"""Config schema, asset paths and sample sheet checks (motionrefine/config/schema.py), no Snakemake run."""
from __future__ import annotations

import copy
import os
import pickle
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import CONFIG_SCHEMA, ROOT, SAMPLES_SCHEMA
from motionrefine.config import plan, settings
from motionrefine.config.schema import (
    PROJECT_ROOT_ENV,
    ConfigError,
    load_config_file,
    load_samples,
    model_checkpoint,
    resolve_asset,
    rule_resources,
    tracker_checkpoint,
)
from motionrefine.config.schema import validate_config as _validate_config
from motionrefine.core.errors import AssetMissingError, MotionRefineError


def validate_config(config: dict) -> dict:
    return _validate_config(config, CONFIG_SCHEMA)


def samples_of(config: dict):
    return load_samples(config, ROOT, SAMPLES_SCHEMA)

HEADER = "name\tpath\tstart\tend\tstride\tresize\n"


def write_sheet(tmp_path, text: str, config: dict) -> dict:
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(text)
    config["samples"] = str(sheet)
    return config


def test_default_and_tiny_configs_are_valid(root, shared):
    for path in (root / "config.yaml", root / "tests/data/tiny/config.yaml"):
        config = load_config_file(path, CONFIG_SCHEMA)
        samples = samples_of(config)
        assert len(samples) >= 2
        assert samples["path"].map(lambda p: p.startswith(str(shared))).all()
        assert model_checkpoint(config, root) == shared / "weights" / "raft-small.pth"


def test_schema_fills_defaults(base_config):
    del base_config["verify"]
    del base_config["model"]["iters"]
    config = validate_config(base_config)
    assert config["model"]["iters"] == 12
    assert config["verify"] == {"alpha": 0.002, "beta": 0.5, "colour": 0.02, "max_flow": 400,
                                "checks": "fb+colour", "speed_bins": [0, 1, 2, 4.5], "colour_norm": "raw"}
    assert config["finetune"]["lr"] == 1e-4


def test_defaults_match_snakemake_validate(base_config):
    """The library's default filling gives the config snakemake.utils.validate gave (it used to call it)."""
    from snakemake.utils import validate

    for key in ("verify", "finetune", "tracking"):
        del base_config[key]
    del base_config["model"]["iters"]
    theirs = copy.deepcopy(base_config)
    validate(theirs, str(CONFIG_SCHEMA))
    assert validate_config(base_config) == theirs
    # Filled defaults are copies: changing one config leaves the schema's default alone.
    base_config["verify"]["speed_bins"].append(99)
    assert validate_config({k: v for k, v in theirs.items() if k != "verify"})["verify"]["speed_bins"] == [0, 1, 2, 4.5]


def test_validation_works_without_snakemake(tmp_path):
    """The library validates a config with jsonschema alone: snakemake cannot be imported here."""
    child = textwrap.dedent(f"""
        import sys, yaml

        class NoSnakemake:
            def find_spec(self, name, path=None, target=None):
                if name == "snakemake" or name.startswith("snakemake."):
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
                return None

        sys.meta_path.insert(0, NoSnakemake())
        try:
            import snakemake
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("snakemake is still importable")
        from motionrefine.config.schema import ConfigError, validate_config
        config = yaml.safe_load(open({str(ROOT / "config.yaml")!r}))
        del config["verify"]
        validate_config(config, {str(CONFIG_SCHEMA)!r})
        assert config["verify"]["beta"] == 0.5, config["verify"]
        config["model"]["iters"] = "twelve"
        try:
            validate_config(config, {str(CONFIG_SCHEMA)!r})
        except ConfigError as exc:
            print(exc)
        assert not [m for m in sys.modules if m.split(".")[0] == "snakemake"]
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "workflow"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "config key 'model.iters': 'twelve' is not of type 'integer'"


@pytest.mark.parametrize(
    "mutate, key, expectation",
    [
        (lambda c: c["model"].update(iters="twelve"), "model.iters", "is not of type 'integer'"),
        (lambda c: c["model"].update(variant="huge"), "model.variant", "is not one of ['small', 'large']"),
        (lambda c: c["verify"].update(alpha=-1), "verify.alpha", "less than the minimum of 0"),
        (lambda c: c["resources"]["flow"].update(threads=0), "resources.flow.threads", "less than the minimum of 1"),
        (lambda c: c["model"].update(sha256="abc"), "model.sha256", "does not match"),
        (lambda c: c.update(verfy={}), "(top level)", "'verfy' was unexpected"),
        (lambda c: c["model"].update(batchsize=2), "model", "'batchsize' was unexpected"),
    ],
)
def test_wrong_value_names_key_and_expectation(base_config, mutate, key, expectation):
    mutate(base_config)
    with pytest.raises(ConfigError) as info:
        validate_config(base_config)
    msg = str(info.value)
    assert f"config key '{key}'" in msg
    assert expectation in msg


def test_rule_resources_fall_back_to_default(base_config):
    config = validate_config(base_config)
    assert rule_resources(config, "flow")["mem_mb"] == 6000  # the rule's entry
    assert rule_resources(config, "flow")["threads"] == 1
    assert rule_resources(config, "flow")["gpu"] == 1  # model-heavy rule asks for a GPU
    assert rule_resources(config, "labels")["gpu"] == 0  # from default
    assert rule_resources(config, "no_such_rule") == config["resources"]["default"]


def test_missing_asset_names_file_where_and_source(base_config, tmp_path):
    base_config["asset_root"] = str(tmp_path)
    config = validate_config(base_config)
    with pytest.raises(AssetMissingError) as info:
        resolve_asset(config, "raft_small", ROOT)
    msg = str(info.value)
    assert str(tmp_path / "weights" / "raft-small.pth") in msg
    assert "asset_root" in msg
    assert "github.com/princeton-vl/RAFT" in msg and "models.zip" in msg
    assert "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_unknown_weights_key(base_config):
    base_config["model"]["checkpoint"] = "raft_huge"
    config = validate_config(base_config)
    with pytest.raises(ConfigError, match=r"weights\.raft_huge"):
        model_checkpoint(config, ROOT)


def test_relative_paths_resolve_against_project_root_and_asset_root(base_config, root, shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    samples = samples_of(validate_config(base_config))
    assert samples.loc["tree", "path"] == str(shared / "data/videos/tree.avi")
    assert samples.loc["dog_run", "kind"] == "folder"
    assert samples.loc["tree", "end"] == 24 and isinstance(samples.loc["tree", "end"], int)


def test_sheet_defaults_and_absolute_path(base_config, shared, tmp_path):
    video = shared / "data/videos/tree.avi"
    config = write_sheet(tmp_path, f"name\tpath\na\t{video}\n", validate_config(base_config))
    row = samples_of(config).loc["a"]
    assert (row["path"], row["start"], row["end"], row["stride"], row["resize"]) == (str(video), 0, None, 1, None)


@pytest.mark.parametrize(
    "rows, pattern",
    [
        # duplicate names: the second row is named, with the first
        ("a\tdata/videos/tree.avi\t0\t8\t1\t\na\tdata/frames/dog_run\t0\t8\t1\t\n",
         r"row 2 \(name 'a'\), column 'name': duplicate sample name 'a' \(also row 1\)"),
        ("a b\tdata/videos/tree.avi\t0\t8\t1\t\n", r"row 1 \(name 'a b'\), column 'name': .*does not match"),
        ("a\tdata/videos/tree.avi\t10\t5\t1\t\n", r"row 1 \(name 'a'\), column 'end': end=5 must be greater than start=10"),
        ("a\tdata/videos/tree.avi\t0\t8\t8\t\n", r"row 1 \(name 'a'\), column 'end': .*selects 1 frame"),
        ("a\tdata/videos/tree.avi\t-1\t8\t1\t\n", r"row 1 \(name 'a'\), column 'start': -1 is less than the minimum of 0"),
        ("a\tdata/videos/tree.avi\t0\t8\t0\t\n", r"row 1 \(name 'a'\), column 'stride': 0 is less than the minimum of 1"),
        ("a\tdata/videos/tree.avi\tzero\t8\t1\t\n", r"row 1 \(name 'a'\), column 'start': expected an integer, got 'zero'"),
        ("a\tdata/videos/tree.avi\t0\t8\t1\t96by64\n", r"row 1 \(name 'a'\), column 'resize'"),
        ("a\tdata/videos/tree.avi\t0\t8\t1\t128x56\n", r"column 'resize': 128x56 makes a side shorter than 57 px"),
        ("a\tdata/videos/tree.avi\t0\t8\t1\t48\n", r"column 'resize': 48 makes a side shorter than 57 px"),
        ("a\tdata/videos/none.avi\t0\t8\t1\t\n", r"row 1 \(name 'a'\), column 'path': .*none\.avi does not exist.*asset_root"),
        ("\tdata/videos/tree.avi\t0\t8\t1\t\n", r"row 1 \(name ''\), column 'name': empty, but required"),
        ("a\t\t0\t8\t1\t\n", r"row 1 \(name 'a'\), column 'path': empty, but required"),
    ],
)
def test_bad_sheet_rows_name_row_and_column(base_config, tmp_path, rows, pattern):
    config = write_sheet(tmp_path, HEADER + rows, validate_config(base_config))
    with pytest.raises(ConfigError, match=pattern) as info:
        samples_of(config)
    assert str(tmp_path / "samples.tsv") in str(info.value)


def test_unknown_column(base_config, tmp_path):
    config = write_sheet(tmp_path, "name\tpath\tfps\na\tdata/videos/tree.avi\t25\n", validate_config(base_config))
    with pytest.raises(ConfigError, match=re.escape("unknown column(s) ['fps']")):
        samples_of(config)


def test_missing_required_column_and_missing_sheet(base_config, tmp_path):
    config = write_sheet(tmp_path, "name\tstart\na\t0\n", validate_config(base_config))
    with pytest.raises(ConfigError, match=r"missing required column\(s\) \['path'\]"):
        samples_of(config)
    config["samples"] = str(tmp_path / "nope.tsv")
    with pytest.raises(ConfigError, match="sample sheet not found"):
        samples_of(config)


def test_tracking_sections_are_checked_at_parse_time(base_config):
    """tracking.labels and tracking.finetune list their library fields: a typo fails validation."""
    base_config["tracking"]["labels"]["theta_rf"] = 8.0
    with pytest.raises(ConfigError, match=r"config key 'tracking\.labels': .*'theta_rf' was unexpected"):
        validate_config(base_config)
    del base_config["tracking"]["labels"]["theta_rf"]
    base_config["tracking"]["finetune"]["step"] = 3
    with pytest.raises(ConfigError, match=r"config key 'tracking\.finetune': .*'step' was unexpected"):
        validate_config(base_config)
    del base_config["tracking"]["finetune"]["step"]
    base_config["tracking"]["labels"]["queries"] = "sift"
    with pytest.raises(ConfigError, match=r"config key 'tracking\.labels\.queries'"):
        validate_config(base_config)


def test_tracking_schema_lists_the_library_fields():
    """Every TrackLabelConfig / TrackFinetuneConfig field the workflow does not set itself is in the schema."""
    from dataclasses import fields

    from motionrefine.track.finetune import TrackFinetuneConfig
    from motionrefine.track.labels import TrackLabelConfig

    tracking = yaml.safe_load(CONFIG_SCHEMA.read_text())["properties"]["tracking"]["properties"]
    # Set by the workflow: tracking.size / tracking.sha256 / tracking.max_pixels, the video, the
    # rule's threads; `teachers` is read by the rules (which label stores a video's track labels come from).
    assert set(tracking["labels"]["properties"]) - {"teachers"} == {f.name for f in fields(TrackLabelConfig)} - {
        "size", "expected_sha256", "video", "max_pixels"}
    assert "max_pixels" in tracking
    assert set(tracking["finetune"]["properties"]) == {f.name for f in fields(TrackFinetuneConfig)} - {
        "size", "threads"}


def test_stage_settings_are_recorded_by_snakemake(base_config, shared):
    """Rules pass settings as params: Snakemake records (and reruns on) a param only if it is a
    builtin type, by its repr; so the repr must be deterministic and the objects picklable."""
    from snakemake.persistence import PersistenceBase

    config = validate_config(base_config)
    built = settings.build(config)
    assert built == settings.build(validate_config(yaml.safe_load((ROOT / "config.yaml").read_text())))
    assert repr(built) == repr(settings.build(config))
    scenes = plan.benchmark_scenes(config, shared)
    for value in [*built, scenes, scenes[0]]:
        # The persistence layer's own serializer (None: it does not use its instance).
        assert PersistenceBase._serialize_param_builtin(None, value) == repr(value)
        assert pickle.loads(pickle.dumps(value)) == value
    for value in [*built, *scenes]:
        hash(value)
    assert built.labels.speed_bins == (0, 1, 2, 4.5)
    # Lists become tuples so the settings hash (Snakemake records them as params).
    labels = {k: tuple(v) if isinstance(v, list) else v for k, v in config["tracking"]["labels"].items()}
    assert built.track_labels.kwargs() == {**labels, "size": config["tracking"]["size"],
                                           "expected_sha256": config["tracking"]["sha256"],
                                           "max_pixels": config["tracking"]["max_pixels"]}


def test_scenes_carry_source_and_reader_options(base_config, shared):
    base_config["benchmarks"]["sintel"] = {"kind": "sintel", "path": "/data/sintel", "scenes": ["alley_1"],
                                           "options": {"split": "clean"}}
    scenes = {s.video: s for s in plan.benchmark_scenes(validate_config(base_config), shared)}
    assert scenes["realtex__s1"].source == "results/scenes/realtex/s1.zarr"
    assert scenes["middlebury__motorcycle"].source == str(shared / "data/stereo/motorcycle")
    assert scenes["sintel__alley_1"].source == "/data/sintel"
    assert scenes["sintel__alley_1"].reader_options == {"split": "clean"}
    assert plan.benchmark_scenes(base_config)[-1].source is None  # no asset_root: names only


def test_tracker_checkpoint_resolves_against_the_project_root(base_config, tmp_path):
    config = validate_config(base_config)
    rel = config["tracking"]["checkpoint"]
    assert tracker_checkpoint(config, ROOT) == ROOT / rel
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / rel))):
        tracker_checkpoint(config, tmp_path)


def test_conda_env_pins_match_requirements(root):
    """envs/motionrefine.yaml (for --sdm conda) pins the same versions as requirements.txt."""
    reqs = {}
    for line in (root / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            reqs[name.lower()] = version
    env = yaml.safe_load((root / "envs/motionrefine.yaml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)(==|=)([^=\s]+)", item)
            if m:
                pins[m.group(1).lower()] = m.group(3)
    pins.pop("python")
    # snakemake and its SLURM plugin run the workflow; they are not needed inside a rule's env.
    runtime = {k: v for k, v in reqs.items() if not k.startswith("snakemake")}
    assert pins == runtime
    # The rule scripts import the package: the env installs it from the project root.
    assert f"-e ${{{PROJECT_ROOT_ENV}}}" in env["dependencies"][-1]["pip"]


def test_settings_from_mappings_refuse_unknown_keys():
    from motionrefine.flow.augment import AugmentConfig
    from motionrefine.flow.finetune import FinetuneConfig
    from motionrefine.track.finetune import TrackFinetuneConfig
    from motionrefine.track.labels import TrackLabelConfig
    from motionrefine.track.pretrain import PretrainConfig

    for cls, what in ((AugmentConfig, "augmentation"), (FinetuneConfig, "fine-tuning config"),
                      (TrackFinetuneConfig, "track fine-tuning config"), (TrackLabelConfig, "track-label config"),
                      (PretrainConfig, "pre-training config")):
        assert cls.from_dict({}) == cls()
        with pytest.raises(MotionRefineError, match=rf"unknown {what} keys: \['bogus', 'zz'\]"):
            cls.from_dict({"zz": 1, "bogus": 2})


def test_texture_sources_default_to_the_samples_and_take_paths(base_config, shared):
    config = validate_config(base_config)
    textures = plan.texture_sources(config, ["clip"], shared)
    assert textures["realtex"] == [plan.Texture("results/frames/clip.zarr")]
    # The default test benchmarks are textured from paths outside the sheet, the sample or not.
    assert textures["realtex_test"][0] == plan.Texture("results/textures/realtex_test/0-vtest.zarr",
                                                       str(shared / "data/videos/vtest.avi"))
    config["benchmarks"]["realtex"]["sources"] = ["clip", "data/videos/vtest.avi", str(shared / "data/frames/hallway")]
    got = plan.texture_sources(config, ["clip"], shared)["realtex"]
    assert got[0] == plan.Texture("results/frames/clip.zarr")
    assert got[1] == plan.Texture("results/textures/realtex/1-vtest.zarr", str(shared / "data/videos/vtest.avi"))
    assert got[2].store == "results/textures/realtex/2-hallway.zarr" and got[2].path == str(shared / "data/frames/hallway")
    config["benchmarks"]["realtex"]["sources"] = ["clp"]
    with pytest.raises(MotionRefineError, match=r"'benchmarks\.realtex\.sources': 'clp' is neither a sample name \(clip\)"):
        plan.texture_sources(config, ["clip"], shared)


def test_a_null_benchmark_is_dropped(base_config, shared):
    base_config["benchmarks"]["middlebury"] = None
    config = validate_config(base_config)
    assert {s.benchmark for s in plan.benchmark_scenes(config, shared)} == {"realtex", "realtex_test", "rigid_test"}
    assert "middlebury" not in plan.texture_sources(config, ["a"], shared)


def test_queries_column_resolves_like_path(base_config, shared, tmp_path):
    csv = tmp_path / "q.csv"
    csv.write_text("frame,x,y\n0,10,20\n")
    config = write_sheet(tmp_path, "name\tpath\tqueries\na\tdata/videos/tree.avi\t" + str(csv) + "\nb\tdata/videos/tree.avi\t\n",
                         validate_config(base_config))
    table = samples_of(config)
    assert table.loc["a", "queries"] == str(csv) and table.loc["b", "queries"] is None
    config = write_sheet(tmp_path, "name\tpath\tqueries\na\tdata/videos/tree.avi\tnone.csv\n", validate_config(base_config))
    with pytest.raises(ConfigError, match=r"column 'queries': .*none\.csv is not a file"):
        samples_of(config)


def test_a_benchmark_can_leave_out_the_transductive_runs(base_config, shared):
    config = validate_config(base_config)
    runs = plan.runs(config, ["a"], shared)
    # The dev scenes (realtex) are evaluated heldout only; the test scenes get their own runs.
    assert not any(r.startswith("realtex__") for r in runs)
    assert {"realtex_test__s0", "realtex_test__s1", "rigid_test__s0", "middlebury__motorcycle"} <= set(runs)
    assert {s.benchmark for s in runs["heldout"]["eval"]} == {"realtex", "realtex_test", "rigid_test", "middlebury"}
    config["benchmarks"]["realtex"]["transductive"] = True
    assert "realtex__s0" in plan.runs(config, ["a"], shared)
