from pathlib import Path

import pytest

from repcam.config import ConfigError, demo_config, from_dict, load_config


def test_yaml_and_toml_load_the_same(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("name: x\npairs:\n  epochs: 3\nselection:\n  methods: [s1, rank-a]\n")
    (tmp_path / "a.toml").write_text('name = "x"\n[pairs]\nepochs = 3\n[selection]\nmethods = ["s1", "rank-a"]\n')
    a, b = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.toml")
    assert a == b and a.pairs.epochs == 3 and a.selection.methods == ["s1", "rank-a"]
    assert a.multiclass.lr == 1e-4 and a.evaluation.threshold == 0.15  # the paper's defaults


@pytest.mark.parametrize(
    "values,match",
    [
        ({"pairs": {"epoch": 3}}, r"unknown key 'pairs.epoch'; valid keys here: .*epochs"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"pairs": {"epochs": "ten"}}, "'pairs.epochs' must be int"),
        ({"selection": {"methods": ["s9"]}}, "unknown method 's9'"),
        ({"data": {"kind": "voc"}}, "'data.root' is required"),
        ({"evaluation": {"threshold": 1.5}}, r"'evaluation.threshold' must be in \(0, 1\)"),
        ({"multiclass": {"mode": "soft"}}, "'multiclass.mode' must be one of single, multilabel; got 'soft'"),
        ({"execution": {"kind": "dask"}}, "'execution.kind' must be one of inprocess, process, ray; got 'dask'"),
        ({"selection": {"n": 0}}, "'selection.n' must be >= 1"),
        ({"evaluation": {"variants": ["median"]}}, "'evaluation.variants' has unknown variant 'median'; choose from max, geomean"),
        ({"pairs": {"init": "imagenet"}}, "'pairs.init' must be one of pretrained, multiclass; got 'imagenet'"),
    ],
)
def test_invalid_configs_name_the_key(values, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(values, "test.yaml")


def test_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot parse"):
        load_config(bad)


def test_demo_config_is_valid():
    cfg = demo_config()
    assert cfg.data.kind == "partsworld" and cfg.backbone.name == "tiny_cnn_s8" and cfg.pairs.init == "multiclass"
