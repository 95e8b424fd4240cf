"""The reader registry: reader specs with options, and the safe-name rule for scene ids."""

from __future__ import annotations

import re

import pytest

from perfdata.errors import ConfigError, InputError
from perfdata.readers import check_scene_id, get_reader, list_scenes, parse_reader_spec, scene_dirs
from perfdata.readers.co3d import Options


def test_parse_reader_spec():
    assert parse_reader_spec("llff") == ("llff", {})
    assert parse_reader_spec("co3d:min_quality=0.5, depth=off") == ("co3d", {"min_quality": "0.5", "depth": "off"})
    assert parse_reader_spec("co3d:") == ("co3d", {})
    with pytest.raises(ConfigError, match=r"reader option 'depth' in 'co3d:depth' must be KEY=VALUE"):
        parse_reader_spec("co3d:depth")


def test_options_are_parsed_by_field_type():
    reader = get_reader("co3d:min_quality=0.5,depth=off,masks=yes")
    assert reader.name == "co3d" and reader.options == Options(min_quality=0.5, depth=False, masks=True)
    assert get_reader("co3d").options == Options()
    assert get_reader("llff").options is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("co3d:quality=1", r"reader 'co3d' has no option quality; its options: min_quality, depth, masks"),
        ("co3d:depth=maybe", r"reader option depth='maybe' in 'co3d:depth=maybe': expected on or off"),
        ("co3d:min_quality=high", r"min_quality='high' .*expected a float"),
        ("llff:factor=8", r"reader 'llff' takes no options \(got factor\)"),
        ("nerf:x=1", r"unknown reader 'nerf'; known readers: blender, co3d, colmap, llff, replica"),
    ],
)
def test_bad_specs_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        get_reader(spec)


@pytest.mark.parametrize("scene_id", ["", "..", ".hidden", "../../escaped", "/etc", "a\\b", "a\0b", "x" * 201])
def test_unsafe_scene_ids(scene_id):
    with pytest.raises(InputError, match=f"^annotations.jgz: scene id {re.escape(repr(scene_id))} "):
        check_scene_id(scene_id, "annotations.jgz")


def test_safe_scene_ids_pass():
    for name in ("fern", "101_11758_21048", "obj_0000_torus", "a.b-c", "x" * 200):
        assert check_scene_id(name, None) == name


def test_folder_listing_skips_dot_names(tmp_path):
    for name in ("b", "a", ".cache"):
        (tmp_path / name).mkdir()
    assert list(scene_dirs(tmp_path, lambda p: p.is_dir() and p != tmp_path)) == ["a", "b"]
    with pytest.raises(InputError, match="no llff scenes found here"):
        list_scenes("llff", tmp_path)
