"""An edit direction Δz_id in one file, applied as z_edit = l2norm(z̄ + scale·Δ) (SPEC §3.6).

CLIP optimisation writes these (`dva.editing.clip_direction`); any other source of a direction can too. The file
holds Δ, the z_id it started from, the loss curve of whatever made it, and metadata: the identity encoder, the
prompts and settings. Edit specs name such a file as `direction:URI:scale`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dva.editing.artifact import check_dim, check_encoder, l2norm, read_artifact, write_artifact

FORMAT = "dva-edit-direction-v1"


@dataclass
class EditDirection:
    delta: torch.Tensor  # [d]
    encoder_id: str
    z_start: torch.Tensor | None = None  # [d], what the optimisation started from
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [iterations]
    metadata: dict[str, str] = field(default_factory=dict)

    def save(self, uri: str) -> str:
        tensors = {"delta": self.delta}
        if self.z_start is not None:
            tensors["z_start"] = self.z_start
        tensors.update({f"loss.{k}": v for k, v in self.losses.items()})
        return write_artifact(uri, tensors, {**self.metadata, "format": FORMAT, "encoder_id": self.encoder_id})

    @classmethod
    def load(cls, uri: str) -> "EditDirection":
        tensors, meta = read_artifact(uri, FORMAT, "edit direction file")
        meta = dict(meta)
        encoder_id = meta.pop("encoder_id")
        meta.pop("format")
        return cls(
            delta=tensors["delta"], encoder_id=encoder_id, z_start=tensors.get("z_start"),
            losses={k.removeprefix("loss."): v for k, v in tensors.items() if k.startswith("loss.")},
            metadata={**meta, "uri": str(uri)},
        )


def apply_direction(z_mean: torch.Tensor, direction: EditDirection, scale: float, *, encoder_id: str
                    ) -> torch.Tensor:
    """z_edit = l2norm(z̄ + scale·Δ) for z̄ of shape [d] or [B, d]; `encoder_id` is the model's."""
    what = f"edit direction {direction.metadata.get('uri', '')}".rstrip()
    check_encoder(direction.encoder_id, encoder_id, what)
    check_dim(z_mean, direction.delta.shape[-1], what)
    return l2norm(z_mean.float() + float(scale) * direction.delta.to(z_mean.device, torch.float32))
