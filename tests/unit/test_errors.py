"""Project exceptions survive pickling (Ray carries them from actors and tasks to the driver that way)."""

from __future__ import annotations

import ast
import builtins
import pickle
from pathlib import Path

from ray import cloudpickle  # what Ray uses to carry exceptions
import pytest

import dva.errors as errors
from dva.runtime.cli import UsageError
from dva.storage import NotFetched

PACKAGE = Path(errors.__file__).parent

# One constructed example per class; a new exception class anywhere in dva/ without an example fails the coverage
# test below.
EXAMPLES = {
    errors.DvaError: lambda: errors.DvaError("something went wrong"),
    errors.ConfigError: lambda: errors.ConfigError("config key `steps`: too few"),
    errors.MissingWeightsError: lambda: errors.MissingWeightsError("/w/model.safetensors", "model.checkpoint",
                                                                   "is not a readable safetensors file"),
    errors.VideoError: lambda: errors.VideoError("/v/a.mp4: the file is empty (0 bytes)"),
    errors.NoFaceError: lambda: errors.NoFaceError("/v/a.mp4: no face was detected in any of its 5 frames"),
    errors.StorageError: lambda: errors.StorageError("cannot write s3://b/x: access denied"),
    UsageError: lambda: UsageError("unrecognized arguments: --fast (usage: dva edit [-h])"),
    NotFetched: lambda: NotFetched("s3://b/weights/model.safetensors", "model.checkpoint", 1 << 30),
}


def exception_classes() -> set[str]:
    """`module.Class` of every class defined under dva/ that derives, through dva's own classes or directly, from
    a built-in exception (read with `ast`, so a module that is never imported here is covered too)."""
    bases: dict[str, tuple[str, list[str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = (f"{module}.{node.name}", [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases])
    found = {name for name in vars(builtins) if isinstance(getattr(builtins, name), type)
             and issubclass(getattr(builtins, name), BaseException)}
    while grown := {name for name, (_, names) in bases.items() if name not in found and set(names) & found}:
        found |= grown
    return {qualified for name, (qualified, _) in bases.items() if name in found}


def test_every_project_exception_has_an_example():
    assert "dva.storage.NotFetched" in exception_classes()  # the scan finds classes outside dva.errors
    assert exception_classes() == {f"{c.__module__}.{c.__qualname__}" for c in EXAMPLES}


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
