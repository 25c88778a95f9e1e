"""Edit specs: string and YAML forms, errors that list the valid forms, stable filesystem-safe edit ids."""

from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf

from dva.editing import EditDirection, EditSpec, edited_identity, l2norm, parse_edit, parse_edits
from dva.errors import ConfigError

CASES = {
    "classifier:Smiling:1.5,Young:-1": EditSpec("classifier", attributes=(("Smiling", 1.5), ("Young", -1.0))),
    "classifier:No_Beard:-2": EditSpec("classifier", attributes=(("No_Beard", -2.0),)),
    "direction:s3://bucket/dirs/beard.safetensors:0.5": EditSpec("direction", uri="s3://bucket/dirs/beard.safetensors",
                                                                 scale=0.5),
    "direction:/data/d.safetensors:-1e-1": EditSpec("direction", uri="/data/d.safetensors", scale=-0.1),
    'clip:"face":"face with beard":0.5': EditSpec("clip", source="face", target="face with beard", scale=0.5),
    "clip:'face':'a face: smiling':1": EditSpec("clip", source="face", target="a face: smiling", scale=1.0),
    "clip:face:old face:0.25": EditSpec("clip", source="face", target="old face", scale=0.25),
    "identity:s3://bucket/ref/person.mp4": EditSpec("identity", uri="s3://bucket/ref/person.mp4"),
    "reconstruct": EditSpec("reconstruct"),
    # the faces an edit changes: a suffix @SELECTOR, split at the last '@' that starts one
    "classifier:Smiling:1.5@largest": EditSpec("classifier", attributes=(("Smiling", 1.5),), faces="largest"),
    "reconstruct@1": EditSpec("reconstruct", faces="1"),
    "identity:/data/a.jpg@match:s3://b/person.jpg": EditSpec("identity", uri="/data/a.jpg",
                                                             faces="match:s3://b/person.jpg"),
    'clip:"face":"face with beard":0.5@match:C:/refs/p@2x.jpg': EditSpec(
        "clip", source="face", target="face with beard", scale=0.5, faces="match:C:/refs/p@2x.jpg"),
    "direction:s3://b/x@v2.safetensors:0.5": EditSpec("direction", uri="s3://b/x@v2.safetensors", scale=0.5),
    "direction:s3://b/x@v2.safetensors:0.5@0": EditSpec("direction", uri="s3://b/x@v2.safetensors", scale=0.5,
                                                        faces="0"),
    "identity:s3://b/me@home": EditSpec("identity", uri="s3://b/me@home"),
    # a URI that itself ends in something that reads as a selector is written with @all after it
    "identity:s3://b/x@1@all": EditSpec("identity", uri="s3://b/x@1"),
}


@pytest.mark.parametrize("text", list(CASES))
def test_string_form_parses_and_round_trips(text):
    spec = parse_edit(text)
    assert spec == CASES[text]
    assert parse_edit(str(spec)) == spec
    assert parse_edit(spec.to_dict()) == spec


def test_yaml_form():
    cfg = OmegaConf.create("""
edits:
  - {kind: classifier, attributes: {Smiling: 1.5, Young: -1}}
  - {kind: direction, uri: "s3://bucket/dirs/beard.safetensors", scale: 0.5}
  - {kind: clip, source: face, target: face with beard, scale: 0.5}
  - {kind: identity, uri: /data/ref.jpg}
  - {kind: reconstruct}
  - "classifier:Bald:2"
""")
    specs = parse_edits(cfg.edits)
    assert [s.kind for s in specs] == ["classifier", "direction", "clip", "identity", "reconstruct", "classifier"]
    assert specs[0] == CASES["classifier:Smiling:1.5,Young:-1"]
    assert specs[2] == CASES['clip:"face":"face with beard":0.5']
    assert parse_edits("reconstruct") == [EditSpec("reconstruct")]


def test_every_face_is_the_default_and_is_not_written():
    assert parse_edit('clip:"face":"face with beard":0.5@all') == CASES['clip:"face":"face with beard":0.5']
    assert str(parse_edit("classifier:Smiling:1.5,Young:-1@all")) == "classifier:Smiling:1.5,Young:-1"
    assert "faces" not in parse_edit("reconstruct@all").to_dict()
    assert str(parse_edit("reconstruct@007")) == "reconstruct@7"
    assert str(EditSpec("identity", uri="s3://b/x@largest")) == "identity:s3://b/x@largest@all"
    cfg = OmegaConf.create("""
edits:
  - {kind: classifier, attributes: {Smiling: 1.5}, faces: largest}
  - {kind: reconstruct, faces: 1}
  - {kind: identity, uri: /data/a.jpg, faces: "match:s3://b/person.jpg"}
  - {kind: reconstruct, faces: all}
""")
    specs = parse_edits(cfg.edits)
    assert [str(s) for s in specs] == ["classifier:Smiling:1.5@largest", "reconstruct@1",
                                       "identity:/data/a.jpg@match:s3://b/person.jpg", "reconstruct"]
    assert specs[2].face_selector.kind == "match" and specs[2].face_selector.uri == "s3://b/person.jpg"
    assert specs[1].face_selector.index == 1 and specs[3].face_selector.kind == "all"


@pytest.mark.parametrize("bad", [
    "classifer:Smiling:1", "classifier:Smiling", "classifier:Smiling:lots", "classifier:Smiling:1,Smiling:2",
    "classifier:Smiling:nan", "direction:s3://b/x.safetensors", "clip:\"face\":\"beard\"", 'clip:"face":"x":1:2',
    'clip:"face":"":1', "clip:\"face:1", "identity:", "reconstruct:now", "", {"kind": "clip", "source": "a"},
    {"kind": "direction", "uri": "x", "scale": 1, "extra": 2}, {"kind": "warp"},
    {"kind": "classifier", "attributes": ["Smiling"]}, 42,
    "reconstruct@larget", "classifier:Smiling:1.5@Largest", "reconstruct@-1", "reconstruct@match:", "reconstruct@",
    {"kind": "reconstruct", "faces": "biggest"}, {"kind": "reconstruct", "faces": -1}, {"kind": "reconstruct",
                                                                                       "faces": True},
    {"kind": "identity", "uri": "/a.jpg", "faces": "match:s3://b/p@1"}, {"kind": "reconstruct", "faces": [0]},
])
def test_bad_specs_list_the_valid_forms(bad):
    with pytest.raises(ConfigError) as err:
        parse_edit(bad)
    assert "valid edit forms" in str(err.value) and "clip:\"SOURCE TEXT\":\"TARGET TEXT\":SCALE" in str(err.value)


def test_a_misspelt_selector_is_named():
    with pytest.raises(ConfigError, match="'@Largest' chooses faces, it is none of the selectors all | largest"):
        parse_edit("classifier:Smiling:1.5@Largest")
    with pytest.raises(ConfigError, match="reads as a face selector"):
        parse_edit({"kind": "reconstruct", "faces": "match:s3://b/p@largest"})


def test_edit_ids_of_every_face_are_unchanged():
    """Outputs written before faces could be chosen keep their keys (ids as the code before it gave them)."""
    before = {
        "classifier:Smiling:1.5,Young:-1": "classifier-Smiling_p1.5-Young_m1",
        "direction:s3://bucket/dirs/beard.safetensors:0.5": "direction-beard_p0.5-ebca5986",
        'clip:"face":"face with beard":0.5': "clip-face-to-face_with_beard_p0.5-c5d02347",
        "identity:s3://bucket/ref/person.mp4": "identity-person-26e60d30",
        "direction:s3://b/x@v2.safetensors:0.5": "direction-x_v2_p0.5-5949846a",
        "identity:/data/a.jpg": "identity-a-4821e013",
        "reconstruct": "reconstruct",
        "classifier:" + ",".join(f"Attribute_Number_{i}:1" for i in range(20)):
            "classifier-Attribute_Number_0_p1-Attribute_Number_1_p1-Attribute_Number_10_p1-Attribute_Number_11_p1"
            "-Attribute_-09dd06ed",
    }
    for text, ident in before.items():
        assert parse_edit(text).edit_id == ident
        assert parse_edit(text + "@all").edit_id == ident


def test_edit_ids_name_the_faces():
    assert parse_edit("classifier:Smiling:1.5@largest").edit_id == "classifier-Smiling_p1.5-faces_largest"
    assert parse_edit("reconstruct@1").edit_id == "reconstruct-faces_1"
    match = parse_edit("identity:/data/a.jpg@match:s3://b/person.jpg").edit_id
    assert re.fullmatch(r"identity-a-4821e013-faces_match-[0-9a-f]{8}", match), match
    assert match != parse_edit("identity:/data/a.jpg@match:s3://b/other.jpg").edit_id
    long = "classifier:" + ",".join(f"Attribute_Number_{i}:1" for i in range(20))
    ids = [parse_edit(f"{long}@{faces}").edit_id for faces in ("match:s3://b/p.jpg", "match:s3://b/q.jpg", "123456")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,128}", i) for i in ids), ids
    assert ids[0].endswith("-faces_match-" + ids[0][-8:]) and ids[2].endswith("-faces_123456")
    assert len(set(ids)) == 3
    # the same edit of other faces is another output; the same edit written twice is refused
    assert len({s.edit_id for s in parse_edits(["reconstruct", "reconstruct@largest", "reconstruct@0"])}) == 3
    with pytest.raises(ConfigError, match="same edit is asked for twice"):
        parse_edits(["reconstruct", "reconstruct@all"])


def test_edit_ids_are_safe_stable_and_distinct():
    ids = [parse_edit(t).edit_id for t in CASES]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,128}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert parse_edit("classifier:Smiling:1.5,Young:-1").edit_id == "classifier-Smiling_p1.5-Young_m1"
    assert parse_edit("classifier:Young:-1,Smiling:1.5").edit_id == "classifier-Smiling_p1.5-Young_m1"
    assert parse_edit("reconstruct").edit_id == "reconstruct"
    clip = parse_edit('clip:"face":"face with beard":0.5').edit_id
    assert clip.startswith("clip-face-to-face_with_beard_p0.5-") and clip == parse_edit(
        {"kind": "clip", "source": "face", "target": "face with beard", "scale": 0.5}).edit_id
    # both prompts and the scale are in the name: each is a different output file
    assert parse_edit('clip:"man":"face with beard":0.5').edit_id.startswith("clip-man-to-face_with_beard_p0.5-")
    assert parse_edit('clip:"face":"face with beard":-1').edit_id.startswith("clip-face-to-face_with_beard_m1-")
    long_clip = parse_edit(f'clip:"{"a very long source text " * 8}":"{"target " * 20}":0.123456789012345').edit_id
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", long_clip), long_clip
    assert parse_edit("direction:s3://a/beard.safetensors:0.5").edit_id != parse_edit(
        "direction:s3://b/beard.safetensors:0.5").edit_id
    long = "classifier:" + ",".join(f"Attribute_Number_{i}:1" for i in range(20))
    assert len(parse_edit(long).edit_id) <= 128
    with pytest.raises(ConfigError, match="same edit is asked for twice"):
        parse_edits(["classifier:Smiling:1,Young:2", "classifier:Young:2,Smiling:1"])


def test_edited_identity_dispatch():
    z = torch.tensor([3.0, 4.0, 0.0])
    assert torch.equal(edited_identity(parse_edit("reconstruct"), z, encoder_id="e"), z)  # not re-normalised
    direction = EditDirection(delta=torch.tensor([0.0, 0.0, 10.0]), encoder_id="e")
    got = edited_identity(parse_edit("direction:x.safetensors:0.5"), z, encoder_id="e", direction=direction)
    assert torch.allclose(got, l2norm(torch.tensor([3.0, 4.0, 5.0])))
    ref = torch.tensor([0.0, 1.0, 0.0])
    assert torch.equal(edited_identity(parse_edit("identity:/r.jpg"), z, encoder_id="e", reference_z_id=ref), ref)
    with pytest.raises(ConfigError, match="pass `classifier`"):
        edited_identity(parse_edit("classifier:Smiling:1"), z, encoder_id="e")
