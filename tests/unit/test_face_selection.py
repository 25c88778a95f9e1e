"""Which face tracks an edit addresses: selectors, the tracks each picks, and the distances between tracks."""

from __future__ import annotations

import numpy as np
import pytest

from dva.editing.faces import FaceSelector, parse_faces, select_tracks, split_selector
from dva.face.tracks import identity_distances
from dva.errors import ConfigError, NoFaceError

# three tracks: person A large, person B small, and A again (re-entered after a long absence) at middle size
IDENTITIES = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.0]])
SIZES = [120.0, 60.0, 90.0]


def select(text, reference=None, min_cosine=0.5, sizes=SIZES, identities=IDENTITIES):
    return select_tracks(parse_faces(text), sizes, identities, reference, min_cosine)


def test_parse_and_text_form():
    assert parse_faces("all") == FaceSelector("all")
    assert parse_faces(" largest ") == FaceSelector("largest")
    assert parse_faces("02") == FaceSelector("index", index=2)
    assert parse_faces("match:s3://b/p@v2.jpg") == FaceSelector("match", uri="s3://b/p@v2.jpg")
    for text in ("all", "largest", "2", "match:C:/refs/p.jpg"):
        assert str(parse_faces(text)) == text
    for bad in ("", "Largest", "-1", "1.5", "match:", "match: ", "every", "match:s3://b/p@3"):
        with pytest.raises(ConfigError, match="face selector"):
            parse_faces(bad)


def test_split_at_the_last_at_that_starts_a_selector():
    assert split_selector("reconstruct@largest") == ("reconstruct", FaceSelector("largest"))
    assert split_selector("direction:s3://b/x@v2.safetensors:0.5") == ("direction:s3://b/x@v2.safetensors:0.5", None)
    assert split_selector("identity:a@b.jpg@match:s3://b/p@x.jpg") == (
        "identity:a@b.jpg", FaceSelector("match", uri="s3://b/p@x.jpg"))
    assert split_selector("identity:s3://b/x@1@all") == ("identity:s3://b/x@1", FaceSelector("all"))


def test_all_largest_and_index():
    assert select("all") == [0, 1, 2]
    assert select("largest") == [0]
    assert select("largest", sizes=[10.0, 30.0, 20.0]) == [1]
    assert select("2") == [2]
    assert select("all", sizes=[], identities=np.zeros((0, 3))) == []


def test_an_index_past_the_last_track_says_how_many_there_are():
    with pytest.raises(NoFaceError, match="edit addresses face 3 but the video has 3 tracks"):
        select("3")
    with pytest.raises(NoFaceError, match="face 1 but the video has 1 track "):
        select("1", sizes=[50.0], identities=IDENTITIES[:1])


def test_match_picks_the_tracks_of_the_reference_person():
    reference = np.array([2.0, 0.3, 0.1])  # A, not unit length: only the direction counts
    assert select("match:s3://b/a.jpg", reference) == [0, 2]
    assert select("match:s3://b/a.jpg", reference, min_cosine=0.999) == []
    assert select("match:s3://b/b.jpg", np.array([0.0, 1.0, 0.0])) == [1]
    assert select("match:s3://b/a.jpg", reference, min_cosine=-1.0) == [0, 1, 2]
    with pytest.raises(ValueError, match="reference"):
        select("match:s3://b/a.jpg")


def test_sizes_and_identities_must_agree():
    with pytest.raises(ValueError, match="one per size"):
        select("all", sizes=[1.0, 2.0])


def test_identity_distances():
    d = identity_distances(IDENTITIES * np.array([[2.0], [1.0], [5.0]]))  # lengths do not count
    assert d.shape == (3, 3) and np.allclose(d, d.T)
    assert np.all(np.diag(d) == 0.0)
    assert d[0, 1] == pytest.approx(1.0)
    assert d[0, 2] == pytest.approx(1 - 0.9 / np.hypot(0.9, 0.1))
    assert d[0, 2] < d[1, 2] < 1.0
    assert identity_distances(np.array([[1.0, 0.0], [-1.0, 0.0]]))[0, 1] == pytest.approx(2.0)
