"""Run configuration: defaults, YAML files, keyword overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from multimodal_seg.config import KEYWORDS, SegmentConfig, load_config, with_overrides
from multimodal_seg.errors import ParameterError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults():
    cfg = load_config()
    assert cfg == SegmentConfig()
    assert (cfg.chips.size, cfg.chips.stride) == ("auto", None)
    assert (cfg.encoder.name, cfg.encoder.weights, cfg.encoder.allow_download) == ("auto", None, False)
    assert (cfg.encoder.batch_size, cfg.encoder.device, cfg.encoder.options) == ("auto", "auto", {})
    assert (cfg.graph.k, cfg.graph.n_pcs) == (15, 30)
    assert (cfg.communities.method, cfg.communities.resolution, cfg.communities.n_iterations) == ("leiden", 1.0, -1)
    assert cfg.seed == 0


def test_demo_yaml_writes_out_the_defaults():
    assert load_config(CONFIGS / "demo.yaml") == SegmentConfig()


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    assert isinstance(load_config(CONFIGS / name), SegmentConfig)


def test_yaml_file_sets_every_section(tmp_path):
    path = _write(tmp_path, """
chips:       {size: 48, stride: 12}
encoder:     {name: fourier, options: {n_radial: 8, n_angular: 6}, batch_size: 16}
graph:       {k: 20, n_pcs: null}
communities: {method: louvain, resolution: 0.5}
seed: 7
""")
    for source in (path, str(path)):
        cfg = load_config(source)
        assert (cfg.chips.size, cfg.chips.stride) == (48, 12)
        assert cfg.encoder.name == "fourier" and cfg.encoder.options == {"n_radial": 8, "n_angular": 6}
        assert cfg.encoder.batch_size == 16
        assert cfg.graph.k == 20 and cfg.graph.n_pcs is None
        assert cfg.communities.method == "louvain" and cfg.communities.resolution == 0.5
        assert cfg.seed == 7
        # Sections not mentioned keep their defaults.
        assert cfg.encoder.device == "auto" and cfg.communities.n_iterations == -1


def test_partial_yaml_and_empty_yaml_keep_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "graph:\n  k: 5\n"))
    assert cfg.graph.k == 5 and cfg.graph.n_pcs == 30 and cfg.chips == SegmentConfig().chips
    assert load_config(_write(tmp_path, "", "empty.yaml")) == SegmentConfig()
    assert load_config(_write(tmp_path, "# only a comment\n", "comment.yaml")) == SegmentConfig()


def test_physical_chip_sizes_are_kept_as_text():
    cfg = load_config({"chips": {"size": "2 nm", "stride": "0.5 nm"}})
    assert (cfg.chips.size, cfg.chips.stride) == ("2 nm", "0.5 nm")


def test_dict_and_model_sources():
    cfg = load_config({"seed": 3, "graph": {"k": 9}})
    assert cfg.seed == 3 and cfg.graph.k == 9
    copy = load_config(cfg)
    assert copy == cfg and copy is not cfg
    copy.graph.k = 11  # a deep copy: the original is unchanged
    assert cfg.graph.k == 9


@pytest.mark.parametrize(
    "data,key",
    [
        ({"graph": {"kk": 3}}, "graph.kk"),
        ({"colour": "red"}, "colour"),
        ({"chips": {"size": 32, "overlap": 0.5}}, "chips.overlap"),
    ],
)
def test_unknown_keys_are_named(data, key):
    with pytest.raises(ParameterError) as info:
        load_config(data)
    assert f"unknown key '{key}'" in str(info.value)
    assert info.value.fix


@pytest.mark.parametrize(
    "data,key",
    [
        ({"graph": {"k": 0}}, "graph.k"),
        ({"graph": {"k": 5000}}, "graph.k"),
        ({"graph": {"n_pcs": 0}}, "graph.n_pcs"),
        ({"chips": {"size": -32}}, "chips.size"),
        ({"chips": {"stride": 0}}, "chips.stride"),
        ({"communities": {"method": "spectral"}}, "communities.method"),
        ({"communities": {"resolution": 0}}, "communities.resolution"),
        ({"communities": {"resolution": "high"}}, "communities.resolution"),
        ({"encoder": {"batch_size": 0}}, "encoder.batch_size"),
        ({"encoder": {"batch_size": "large"}}, "encoder.batch_size"),
        ({"encoder": {"batch_size": True}}, "encoder.batch_size"),
        ({"seed": -1}, "seed"),
        ({"graph": {"k": "many"}}, "graph.k"),
    ],
)
def test_bad_values_are_named(data, key):
    with pytest.raises(ParameterError) as info:
        load_config(data)
    assert f"'{key}'" in str(info.value)
    assert info.value.where == "config"


def test_every_problem_is_reported_at_once():
    with pytest.raises(ParameterError) as info:
        load_config({"graph": {"k": 0}, "seed": -2, "bogus": 1})
    message = str(info.value)
    assert "'graph.k'" in message and "'seed'" in message and "unknown key 'bogus'" in message


def test_errors_in_a_yaml_file_name_the_file(tmp_path):
    path = _write(tmp_path, "graph:\n  k: -4\n")
    with pytest.raises(ParameterError) as info:
        load_config(path)
    assert info.value.where == str(path) and "'graph.k'" in str(info.value)


def test_invalid_yaml_is_a_parameter_error(tmp_path):
    path = _write(tmp_path, "graph: {k: 15\nseed: [0\n")
    with pytest.raises(ParameterError) as info:
        load_config(path)
    assert "YAML" in str(info.value) and info.value.where == str(path)


@pytest.mark.parametrize("text", ["- k: 15\n- seed: 0\n", "just a sentence\n", "42\n"])
def test_non_mapping_yaml_is_a_parameter_error(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ParameterError) as info:
        load_config(path)
    assert "mapping" in str(info.value) and info.value.where == str(path)


def test_missing_file_is_a_parameter_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ParameterError) as info:
        load_config(missing)
    assert info.value.where == str(missing) and "not found" in str(info.value)
    with pytest.raises(ParameterError):
        load_config(tmp_path)  # a folder is not a config file


# --- keyword overrides ---------------------------------------------------------------


def test_overrides_map_keywords_to_sections(tmp_path):
    base = load_config()
    cfg = with_overrides(
        base, chip_size=64, stride=16, encoder="fourier", weights=tmp_path / "w.pth",
        allow_download=True, batch_size=8, device="cpu", k=7, n_pcs=12, method="louvain",
        resolution=2.5, seed=42,
    )
    assert (cfg.chips.size, cfg.chips.stride) == (64, 16)
    assert cfg.encoder.name == "fourier" and cfg.encoder.weights == str(tmp_path / "w.pth")
    assert cfg.encoder.allow_download is True and cfg.encoder.batch_size == 8 and cfg.encoder.device == "cpu"
    assert (cfg.graph.k, cfg.graph.n_pcs) == (7, 12)
    assert (cfg.communities.method, cfg.communities.resolution) == ("louvain", 2.5)
    assert cfg.seed == 42
    assert base == SegmentConfig(), "the input config must not change"


def test_every_keyword_is_mapped_to_an_existing_field():
    cfg = SegmentConfig()
    for keyword, (section, field) in KEYWORDS.items():
        owner = getattr(cfg, section) if section else cfg
        assert field in type(owner).model_fields, keyword


def test_none_keeps_the_configured_value():
    base = load_config({"chips": {"size": 48, "stride": 24}, "graph": {"k": 9}, "seed": 5})
    cfg = with_overrides(base, chip_size=None, stride=None, k=None, seed=None, method=None, resolution=None)
    assert cfg == base
    assert with_overrides(base, k=11).chips == base.chips


def test_overrides_are_validated():
    with pytest.raises(ParameterError) as info:
        with_overrides(SegmentConfig(), resolution=-1.0)
    # named as given (the keyword, which is the command line's option), and where it lives in a config file
    assert "'resolution' (communities.resolution)" in str(info.value) and info.value.where == "options"
    with pytest.raises(ParameterError) as info:
        with_overrides(SegmentConfig(), method="kmeans")
    assert "'method' (communities.method)" in str(info.value)
    with pytest.raises(ParameterError) as info:
        with_overrides(SegmentConfig(), chip_size=0)
    assert "'chip_size' (chips.size)" in str(info.value)
    with pytest.raises(ParameterError) as info:
        with_overrides(SegmentConfig(), seed=-1)
    assert "'seed': " in str(info.value)


def test_unknown_override_keyword_is_named():
    with pytest.raises(ParameterError) as info:
        with_overrides(SegmentConfig(), neighbours=10)
    assert info.value.where == "neighbours"
    assert "k" in info.value.fix and "resolution" in info.value.fix
