"""Edit specs: what an edit job does to a video's identity code, as a string (CLI) or a YAML mapping (config).

    classifier:NAME:SCALE[,NAME:SCALE…]     classifier:Smiling:1.5,Young:-1
    direction:URI:SCALE                     direction:s3://bucket/dirs/beard.safetensors:0.5
    clip:"SOURCE":"TARGET":SCALE            clip:"face":"face with beard":0.5
    identity:URI                            identity:/data/reference.jpg
    reconstruct

YAML: {kind: classifier, attributes: {Smiling: 1.5}}, {kind: direction, uri: …, scale: 0.5},
{kind: clip, source: face, target: face with beard, scale: 0.5}, {kind: identity, uri: …}, {kind: reconstruct}.

Which faces an edit changes (dva.editing.faces): every track by default; a suffix `@SELECTOR` on the string form, or
`faces: SELECTOR` in YAML, chooses `all`, `largest`, a track index `N` or `match:URI` (the tracks whose identity
matches a reference image or video): `classifier:Smiling:1.5@largest`, `reconstruct@1`,
`identity:/data/a.jpg@match:s3://b/person.jpg`. The string is split at its last '@' that starts a selector, so URIs
may hold '@' (`direction:s3://b/x@v2.safetensors:0.5` has none).

`EditSpec.edit_id` is a stable, filesystem- and URI-safe name for the outputs of an edit; an edit of every face has
the id it had before faces could be chosen.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping, Optional

import torch

from dva.editing.classifier import AttributeClassifier, apply_classifier_edit
from dva.editing.direction import EditDirection, apply_direction
from dva.editing.faces import VALID_SELECTORS, FaceSelector, parse_faces, split_selector
from dva.errors import ConfigError

KINDS = ("classifier", "direction", "clip", "identity", "reconstruct")
VALID_FORMS = """valid edit forms:
  classifier:NAME:SCALE[,NAME:SCALE...]   e.g. classifier:Smiling:1.5,Young:-1
  direction:URI:SCALE                     e.g. direction:s3://bucket/dirs/beard.safetensors:0.5
  clip:"SOURCE TEXT":"TARGET TEXT":SCALE  e.g. clip:"face":"face with beard":0.5
  identity:URI                            e.g. identity:/data/reference.jpg
  reconstruct
each optionally followed by @FACES, the faces it changes (default all), e.g. classifier:Smiling:1.5@largest:
  @all | @largest | @N (a track index: 0, 1, ...) | @match:URI (tracks matching a reference image or video)
or in YAML: {kind: classifier, attributes: {NAME: SCALE, ...}} | {kind: direction, uri: URI, scale: SCALE} |
  {kind: clip, source: TEXT, target: TEXT, scale: SCALE} | {kind: identity, uri: URI} | {kind: reconstruct},
  each with an optional `faces: all | largest | N | match:URI`"""
_FIELDS = {"classifier": {"attributes"}, "direction": {"uri", "scale"}, "clip": {"source", "target", "scale"},
           "identity": {"uri"}, "reconstruct": set()}


@dataclass(frozen=True)
class EditSpec:
    kind: str
    attributes: tuple[tuple[str, float], ...] = ()  # classifier: (name, scale) in the order given
    uri: Optional[str] = None  # direction file, or identity reference image / video
    scale: Optional[float] = None  # direction, clip
    source: Optional[str] = None  # clip
    target: Optional[str] = None  # clip
    faces: str = "all"  # the tracks it changes: the text of a dva.editing.faces selector, as `str` writes it

    def __post_init__(self):
        if str(parse_faces(self.faces)) != self.faces:
            raise ConfigError(f"EditSpec faces {self.faces!r}: write it as {str(parse_faces(self.faces))!r}")

    @property
    def face_selector(self) -> FaceSelector:
        return parse_faces(self.faces)

    @property
    def scales(self) -> dict[str, float]:
        return dict(self.attributes)

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping form."""
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "classifier":
            d["attributes"] = self.scales
        for name in ("uri", "source", "target", "scale"):
            if name in _FIELDS[self.kind]:
                d[name] = getattr(self, name)
        if self.faces != "all":
            d["faces"] = self.faces
        return d

    def __str__(self) -> str:
        """The string form; `parse_edit(str(spec)) == spec`. Every face (`all`) is written only where the text
        would otherwise end in something that reads as a selector (an identity URI ending in `@1`)."""
        text = self._body()
        if self.faces == "all" and split_selector(text)[1] is None:
            return text
        return f"{text}@{self.faces}"

    def _body(self) -> str:
        if self.kind == "classifier":
            return "classifier:" + ",".join(f"{n}:{_fmt(s)}" for n, s in self.attributes)
        if self.kind == "direction":
            return f"direction:{self.uri}:{_fmt(self.scale)}"
        if self.kind == "clip":
            return f"clip:{_quote(self.source)}:{_quote(self.target)}:{_fmt(self.scale)}"
        if self.kind == "identity":
            return f"identity:{self.uri}"
        return "reconstruct"

    @property
    def edit_id(self) -> str:
        """E.g. `classifier-Smiling_p1.5-Young_m1`, `clip-face-to-face_with_beard_p0.5-1a2b3c4d`, `reconstruct`,
        `reconstruct-faces_largest`, `reconstruct-faces_1`, `reconstruct-faces_match-1a2b3c4d`.

        Letters, digits, `.`, `_` and `-` only, at most 128; the same edit always gives the same id (classifier
        attributes in any order); free text and URIs are shortened and disambiguated by a hash of the whole spec.
        An edit of every face has no faces part: its outputs keep the id they had before faces could be chosen.
        """
        ident = replace(self, faces="all")._id_of_every_face()
        if self.faces == "all":
            return ident
        selector = self.face_selector
        faces = selector.kind
        if selector.kind == "index":
            faces = str(selector.index)
        elif selector.kind == "match":
            faces = f"match-{_digest(selector.uri)}"
        suffix = f"-faces_{faces}"
        if len(ident) + len(suffix) > 128:
            ident = f"{ident[:128 - len(suffix) - 9]}-{self._hash()}"
        return ident + suffix

    def _id_of_every_face(self) -> str:
        if self.kind == "reconstruct":
            return "reconstruct"
        if self.kind == "classifier":
            parts = [f"{_slug(n, 40)}_{_signed(s)}" for n, s in sorted(self.attributes)]
            ident = "classifier-" + "-".join(parts)
            if len(ident) <= 120:
                return ident
            return f"classifier-{'-'.join(parts)[:100]}-{self._hash()}"
        if self.kind == "clip":
            return f"clip-{_slug(self.source, 30)}-to-{_slug(self.target, 40)}_{_signed(self.scale)}-{self._hash()}"
        stem = _slug(PurePosixPath(self.uri.rstrip("/")).stem, 40)
        scale = f"_{_signed(self.scale)}" if self.kind == "direction" else ""
        return f"{self.kind}-{stem}{scale}-{self._hash()}"

    def _hash(self) -> str:
        return _digest(str(replace(self, attributes=tuple(sorted(self.attributes)))))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_.")[:limit] or "x"


def _fmt(value: float) -> str:
    """Shortest text that reads back as the same float: 1.0 → "1", 0.25 → "0.25"."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _signed(value: float) -> str:
    return ("p" if value >= 0 else "m") + _fmt(abs(value))


def _quote(text: str) -> str:
    return f'"{text}"' if '"' not in text else f"'{text}'"


def _bad(item: Any, why: str) -> ConfigError:
    return ConfigError(f"edit {item!r}: {why}\n{VALID_FORMS}")


def _number(item: Any, value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _bad(item, f"{what} {value!r} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise _bad(item, f"{what} {value!r} is not a finite number")
    return x


def _text(item: Any, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(item, f"{what} must be non-empty text")
    return value


def _split_fields(item: str, text: str) -> list[str]:
    """Split on ':' outside single or double quotes; a quoted field is taken without its quotes."""
    fields, cur, quote, quoted = [], [], None, False
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                cur.append(ch)
        elif ch in "\"'" and not cur and not quoted:
            quote, quoted = ch, True
        elif ch == ":":
            fields.append("".join(cur))
            cur, quoted = [], False
        elif quoted:
            raise _bad(item, f"text after a closing quote: {text!r}")
        else:
            cur.append(ch)
    if quote:
        raise _bad(item, "unclosed quote")
    fields.append("".join(cur))
    return fields


def _classifier(item: Any, attributes: Iterable[tuple[Any, Any]]) -> EditSpec:
    pairs = [(_text(item, str(n).strip(), "an attribute name"), _number(item, s, f"scale of {n}"))
             for n, s in attributes]
    if not pairs:
        raise _bad(item, "name at least one attribute")
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise _bad(item, f"attribute named twice: {sorted({n for n in names if names.count(n) > 1})}")
    return EditSpec("classifier", attributes=tuple(pairs))


def _faces(item: Any, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad(item, f"`faces` {value!r} must be text or a track index")
    try:
        return str(parse_faces(str(value)))
    except ConfigError as err:
        raise _bad(item, str(err)) from None


def _from_string(item: str) -> EditSpec:
    text, selector = split_selector(item.strip())
    try:
        spec = _edit_from_string(item, text)
    except ConfigError as err:
        if selector is None and "@" in text:  # perhaps a misspelt selector: say so beside what went wrong
            what = str(err).split("\n", 1)[0]
            tail = text[text.rfind("@"):]
            raise ConfigError(f"{what}; or, if {tail!r} chooses faces, it is none of the selectors {VALID_SELECTORS}"
                              f"\n{VALID_FORMS}") from None
        raise
    return spec if selector is None else replace(spec, faces=str(selector))


def _edit_from_string(item: str, text: str) -> EditSpec:
    kind, sep, rest = text.partition(":")
    if kind not in KINDS:
        raise _bad(item, f"unknown kind {kind!r}")
    if kind == "reconstruct":
        if sep:
            raise _bad(item, "reconstruct takes no arguments")
        return EditSpec("reconstruct")
    if not rest:
        raise _bad(item, f"{kind} needs arguments")
    if kind == "classifier":
        pairs = []
        for part in rest.split(","):
            name, sep, scale = part.rpartition(":")
            if not sep:
                raise _bad(item, f"{part!r} is not NAME:SCALE")
            pairs.append((name, scale))
        return _classifier(item, pairs)
    if kind == "direction":
        uri, sep, scale = rest.rpartition(":")  # URIs hold colons; the scale is after the last one
        if not sep:
            raise _bad(item, "direction needs URI:SCALE")
        return EditSpec("direction", uri=_text(item, uri, "the URI"), scale=_number(item, scale, "the scale"))
    if kind == "clip":
        fields = _split_fields(item, rest)
        if len(fields) != 3:
            raise _bad(item, f"clip needs \"SOURCE\":\"TARGET\":SCALE, got {len(fields)} fields "
                             "(quote texts that hold a colon)")
        return EditSpec("clip", source=_text(item, fields[0], "the source text"),
                        target=_text(item, fields[1], "the target text"), scale=_number(item, fields[2], "the scale"))
    return EditSpec("identity", uri=_text(item, rest, "the URI"))  # kind == "identity"


def _from_mapping(item: Mapping) -> EditSpec:
    d = dict(item)
    kind = d.pop("kind", None)
    faces = d.pop("faces", "all")
    if kind not in KINDS:
        raise _bad(item, f"`kind` must be one of {', '.join(KINDS)}; got {kind!r}")
    extra, missing = set(d) - _FIELDS[kind], _FIELDS[kind] - set(d)
    if extra or missing:
        raise _bad(item, ", ".join(x for x in (f"unknown keys {sorted(extra)}" if extra else "",
                                                f"missing keys {sorted(missing)}" if missing else "") if x))
    faces = _faces(item, faces)
    if kind == "classifier":
        if not isinstance(d["attributes"], Mapping):
            raise _bad(item, "`attributes` must map attribute names to scales")
        return replace(_classifier(item, d["attributes"].items()), faces=faces)
    fields = {k: _number(item, v, "the scale") if k == "scale" else _text(item, v, f"`{k}`") for k, v in d.items()}
    return EditSpec(kind, faces=faces, **fields)


def parse_edit(item: str | Mapping | EditSpec) -> EditSpec:
    """One edit from its string or mapping form; a ConfigError lists the valid forms."""
    if isinstance(item, EditSpec):
        return item
    if isinstance(item, str):
        return _from_string(item)
    if isinstance(item, Mapping) or hasattr(item, "items"):
        return _from_mapping({str(k): v for k, v in item.items()})
    raise _bad(item, f"expected a string or mapping, got {type(item).__name__}")


def parse_edits(items: str | Mapping | Iterable) -> list[EditSpec]:
    """A list of edits (one string or mapping is a list of one); edits with the same `edit_id` are refused."""
    if isinstance(items, (str, Mapping)) or hasattr(items, "items"):
        items = [items]
    specs = [parse_edit(x) for x in items]
    ids = [s.edit_id for s in specs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"the same edit is asked for twice: {dup}")
    return specs


def edited_identity(spec: EditSpec, z_mean: torch.Tensor, *, encoder_id: str,
                    classifier: AttributeClassifier | None = None, direction: EditDirection | None = None,
                    reference_z_id: torch.Tensor | None = None) -> torch.Tensor:
    """The z_id a spec decodes with, from the video's mean z̄_id ([d] or [B, d]).

    reconstruct: z̄ as is (not re-normalised, as the reference reconstructs); classifier: `classifier`'s edit;
    direction and clip: l2norm(z̄ + scale·Δ) with Δ from `direction` (the file the spec names, or the CLIP
    optimisation's result); identity: `reference_z_id`, the mean z_id of the reference image or video.
    `encoder_id` is the model's identity encoder (`dva.editing.identity_encoder_id(model)`).
    """
    needs = {"classifier": classifier, "direction": direction, "clip": direction, "identity": reference_z_id}
    if spec.kind in needs and needs[spec.kind] is None:
        arg = {"classifier": "classifier", "identity": "reference_z_id"}.get(spec.kind, "direction")
        raise ConfigError(f"edit {spec}: pass `{arg}` to apply it")
    if spec.kind == "classifier":
        return apply_classifier_edit(z_mean, classifier, spec.scales, encoder_id=encoder_id)
    if spec.kind in ("direction", "clip"):
        return apply_direction(z_mean, direction, spec.scale, encoder_id=encoder_id)
    if spec.kind == "identity":
        return reference_z_id.float().to(z_mean.device).expand_as(z_mean)
    return z_mean.float()
