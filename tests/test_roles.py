"""Dev and test benchmarks (docs/dev-test.md): each scene's role from the config, the report's role
column and per-role means, and the sweep tools refusing test scenes."""
from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import CONFIG_SCHEMA, ROOT
from motionrefine.bench import synth
from motionrefine.config import plan
from motionrefine.config.schema import ConfigError, validate_config
from motionrefine.core.errors import MotionRefineError
from motionrefine.report.page import reading
from motionrefine.report.tables import before_after_table, load_evals, role_means

sys.path.insert(0, str(ROOT / "tools"))


def test_default_config_splits_dev_from_test(base_config, shared):
    scenes = plan.flow_scenes(validate_config(base_config, CONFIG_SCHEMA), shared)
    roles = {s.video: s.role for s in scenes}
    assert [v for v, r in roles.items() if r == "dev"] == ["realtex__s0", "realtex__s1", "realtex__s2"]
    assert roles["middlebury__motorcycle"] == "test"
    test = [s for s in scenes if s.role == "test" and s.kind == "real-texture"]
    assert 1 <= len(test) <= 3
    # The test scenes are textured from footage outside the sample sheet, never from a sample.
    sources = plan.texture_sources(base_config, ["tree", "dog_run", "carphone"], shared)
    for bench in {s.benchmark for s in test}:
        assert all(t.path is not None for t in sources[bench]), bench
    # One rigid sub-pixel scene at 256x448 or larger.
    rigid = [b for b, spec in base_config["benchmarks"].items() if spec and spec.get("presets") == ["rigid_subpixel"]]
    assert rigid and all(base_config["benchmarks"][b]["size"][0] >= 256 and base_config["benchmarks"][b]["size"][1] >= 448
                         for b in rigid)


def test_role_defaults_to_test_and_is_checked(base_config, shared):
    del base_config["benchmarks"]["realtex"]["role"]
    config = validate_config(base_config, CONFIG_SCHEMA)
    assert {s.role for s in plan.flow_scenes(config, shared)} == {"test"}
    base_config["benchmarks"]["middlebury"]["role"] = "train"
    with pytest.raises(ConfigError, match=r"benchmarks.*middlebury.*role"):
        validate_config(base_config, CONFIG_SCHEMA)
    # plan checks too (a config that skipped the schema), naming the key.
    with pytest.raises(MotionRefineError, match=r"'benchmarks\.x\.role': 'train'"):
        plan.benchmark_scenes({"benchmarks": {"x": {"kind": "real-texture", "role": "train"}}})


def test_relabelling_a_benchmark_changes_no_recorded_param():
    # Rules record Scenes by repr (Snakemake's params trigger): the role must not be in it, so
    # turning a benchmark from test to dev reruns no label chain. Equality still sees it.
    dev = plan.Scene("realtex", "s0", "real-texture", "results/scenes/realtex/s0.zarr", (), "dev")
    test = dev._replace(role="test")
    assert repr(dev) == repr(test) == ("Scene(benchmark='realtex', name='s0', kind='real-texture', "
                                       "source='results/scenes/realtex/s0.zarr', options=())")
    assert dev != test and dev.role == "dev"
    assert plan.scene_spec({"kind": "real-texture", "role": "dev", "seed": 1}) == {"kind": "real-texture", "seed": 1}


def test_select_role_refuses_test_scenes_without_allow_test():
    scenes = [plan.Scene("realtex", "s0", "real-texture", role="dev"),
              plan.Scene("middlebury", "motorcycle", "middlebury-stereo", role="test")]
    assert plan.select_role(scenes) == scenes[:1]
    with pytest.raises(MotionRefineError, match=r"middlebury/motorcycle: test scenes \(benchmarks\.middlebury\.role"):
        plan.select_role(scenes, "all")
    assert plan.select_role(scenes, "test", allow_test=True) == scenes[1:]
    with pytest.raises(MotionRefineError, match="role 'train'"):
        plan.select_role(scenes, "train")


def test_sweep_tools_refuse_a_test_scene(tmp_path):
    import budget_sweep
    import colour_sweep
    import label_sweep
    import tracking_scenes

    # Each refuses before loading a model or a scene (none of these paths need to exist).
    with pytest.raises(MotionRefineError, match=r"middlebury/motorcycle: test scenes"):
        label_sweep.main(["--middlebury", str(tmp_path / "motorcycle"), "--out", str(tmp_path / "x.csv")])
    with pytest.raises(MotionRefineError, match=r"realtex_test/s0: test scenes"):
        label_sweep.main([str(tmp_path / "results/scenes/realtex_test/s0.zarr"), "--out", str(tmp_path / "x.csv")])
    with pytest.raises(MotionRefineError, match=r"rigid_test/s0, middlebury/motorcycle: test scenes"):
        budget_sweep.main(["--budget", "steps=1", "--runs", "rigid_test__s0", "middlebury__motorcycle"])
    with pytest.raises(MotionRefineError, match=r"benchmarks\.realtex_test\.role"):
        colour_sweep.main(["--role", "all", "--out", str(tmp_path / "c.csv")])
    with pytest.raises(MotionRefineError, match=r"realtex_test/s1: test scenes"):
        tracking_scenes.main(["--out", str(tmp_path / "t"), "--config", str(ROOT / "config.yaml"),
                              "--scene", str(tmp_path / "results/scenes/realtex/s0.zarr"),
                              "--scene", str(tmp_path / "results/scenes/realtex_test/s1.zarr")])


def test_label_sweep_takes_the_configs_dev_scenes_by_default(tmp_path):
    import label_sweep

    args = label_sweep.argparse.Namespace(realtex=[], middlebury=None, config=str(ROOT / "config.yaml"),
                                          results=str(tmp_path / "results"), role="dev", allow_test=False)
    picked = label_sweep.sweep_scenes(args)
    assert [s.video for s in picked] == ["realtex__s0", "realtex__s1", "realtex__s2"]
    assert picked[0].source == str(tmp_path / "results/scenes/realtex/s0.zarr")


def _evals(path, run, rows):
    """A fake evaluation CSV: (benchmark, scene, EPE before, EPE after) per row."""
    out = []
    for bench, scene, before, after in rows:
        for model, epe in (("pretrained", before), ("refined", after)):
            out.append({"run": run, "scene": scene, "benchmark": bench, "model": model, "epe": epe,
                        "acc_1px": 0.5, "acc_3px": 0.8, "acc_5px": 0.9, "fl_all": 0.1})
    pd.DataFrame(out).to_csv(path, index=False)
    return str(path)


def test_report_means_split_by_role(tmp_path):
    # Heldout: dev scenes -40 % and -20 %, test scenes +10 % and -30 %; transductive: one test scene -50 %.
    evals = load_evals([
        _evals(tmp_path / "heldout.csv", "heldout", [("realtex", "s0", 1.0, 0.6), ("realtex", "s1", 1.0, 0.8),
                                                     ("realtex_test", "s0", 2.0, 2.2), ("middlebury", "motorcycle", 1.0, 0.7)]),
        _evals(tmp_path / "t.csv", "middlebury__motorcycle", [("middlebury", "motorcycle", 1.0, 0.5)]),
    ])
    table = before_after_table(evals, {"realtex": "dev", "realtex_test": "test", "middlebury": "test"})
    # A scene named like a dev scene in another benchmark keeps its own benchmark's role.
    assert table.set_index(["run", "benchmark", "scene"]).loc[("heldout", "realtex_test", "s0"), "role"] == "test"
    means = role_means(table).set_index(["protocol", "role"])
    assert means.loc[("heldout", "test"), "mean_change_pct"] == pytest.approx(-10.0)
    assert means.loc[("heldout", "dev"), "mean_change_pct"] == pytest.approx(-30.0)
    assert means.loc[("heldout", "test"), "improved"] == 1 and means.loc[("heldout", "dev"), "scenes"] == 2
    assert means.loc[("transductive", "test"), "mean_change_pct"] == pytest.approx(-50.0)
    assert ("transductive", "dev") not in means.index  # no dev scene there: no row, not a zero
    assert list(role_means(table)["role"][:2]) == ["test", "dev"]  # the figure to quote first
    text = reading(table, pd.DataFrame(), {"steps": 100, "profile": "demo"})
    assert re.search(r"Heldout, test scenes \(2; the figure to quote\): mean EPE change -10\.00%.*"
                     r"Heldout, dev scenes \(2; defaults were chosen on these.*\): mean EPE change -30\.00%", text)
    # Without roles every benchmark is test, the config's default.
    assert set(before_after_table(evals)["role"]) == {"test"}


def test_rigid_subpixel_preset_moves_below_a_pixel():
    # A texture with structure at every scale, as the workflow's real frames have.
    rng = np.random.default_rng(0)
    tex = (rng.random((300, 500, 3)) * 255).astype(np.uint8)
    for seed in (0, 1):
        cfg = synth.make_config("rigid_subpixel", height=64, width=112, frames=4, seed=seed)
        assert cfg.nonrigid_amplitude == 0 and cfg.layer_motion == "similarity"
        seq = synth.render_sequence([tex, tex[::-1].copy()], cfg)
        speed = np.linalg.norm(seq.flow_fw, axis=-1)
        assert speed.mean() < 1.0 and np.percentile(speed, 95) < 1.5
        assert speed.mean() > 0.05  # it does move
        easy = synth.render_sequence([tex, tex[::-1].copy()], synth.make_config("easy", height=64, width=112,
                                                                                frames=4, seed=seed))
        assert np.linalg.norm(easy.flow_fw, axis=-1).mean() > 2 * speed.mean()


def test_track_scene_names_qualify_only_on_a_shared_stem():
    assert plan.track_scene_names(["r/scenes/realtex/s0.zarr", "r/scenes/realtex/s1.zarr"]) == ["s0", "s1"]
    assert plan.track_scene_names(["r/scenes/realtex/s0.zarr", "r/scenes/rigid_test/s0.zarr"]) == [
        "realtex/s0", "rigid_test/s0"]
