"""Project exceptions survive pickling (Ray carries them from actors and tasks to the driver that way)."""

from __future__ import annotations

import pickle

from ray import cloudpickle  # what Ray uses to carry exceptions
import pytest

import dva.errors as errors

# One constructed example per class; a new class in dva.errors without an example fails the coverage test below.
EXAMPLES = {
    errors.DvaError: lambda: errors.DvaError("something went wrong"),
    errors.ConfigError: lambda: errors.ConfigError("config key `steps`: too few"),
    errors.MissingWeightsError: lambda: errors.MissingWeightsError("/w/model.safetensors", "model.checkpoint",
                                                                   "is not a readable safetensors file"),
    errors.VideoError: lambda: errors.VideoError("/v/a.mp4: the file is empty (0 bytes)"),
    errors.NoFaceError: lambda: errors.NoFaceError("/v/a.mp4: no face was detected in any of its 5 frames"),
    errors.StorageError: lambda: errors.StorageError("cannot write s3://b/x: access denied"),
}


def test_every_project_exception_has_an_example():
    classes = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DvaError)}
    assert classes == set(EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_round_trip_keeps_class_message_and_attributes(cls, dumps):
    err = EXAMPLES[cls]()
    back = pickle.loads(dumps(err))
    assert type(back) is cls and str(back) == str(err) and back.args == err.args
    assert vars(back) == vars(err)


def test_a_changed_message_survives_too():
    err = errors.MissingWeightsError("/w/arcface.pt", "model.identity_encoder.weights")
    err.args = (f"{err.args[0]} Expected: ArcFace R100.",)  # as dva.models.reference.resolve_weights does
    back = pickle.loads(pickle.dumps(err))
    assert str(back).endswith("Expected: ArcFace R100.") and back.config_key == "model.identity_encoder.weights"
