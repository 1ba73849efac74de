"""A repository model's ``config.json``: what the farm needs to serve it, validated.

::

    {
      "input_shape": [1, 32, 32],          # one input, without the batch dimension
      "input_dtype": "float32",            # optional; the farm serves float32 models
      "output_shape": [10],                # one output, without the batch dimension
      "description": "my classifier",      # optional
      "serving": {"codec": "spline", "n": 24, "s": 4, "deadline": 5.0},   # optional;
                                           # or "redundancy": 1.5 instead of n and s
      "factory": "my_models.mlp:build",    # optional: the model is Python code (see below)
      "polynomial_degree": 1               # optional: f is linear/affine (1) or a polynomial
    }                                      # of this degree, so exact codes (mds, lagrange) apply

Without ``factory`` every version folder holds ``model.pt`` (TorchScript, ``torch.jit.save``)
or ``model.pt2`` (``torch.export.save``). With it, the worker imports ``package.module`` (from
``sys.path`` or the model's folder) and calls ``function()`` for a ``torch.nn.Module``;
a version folder may hold ``weights.pt``, a state dict loaded with ``weights_only=True``.
Unknown fields are errors, so a misspelt field never passes silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedfarm.errors import ModelConfigError

__all__ = ["CONFIG_FILE", "ModelConfig", "ServingDefaults", "read_model_config"]

CONFIG_FILE = "config.json"
DTYPES = ("float32",)
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_FIELDS = {
    "input_shape", "input_dtype", "output_shape", "description", "serving", "factory",
    "polynomial_degree",
}  # fmt: skip
_SERVING = {"codec", "n", "s", "deadline", "redundancy"}


@dataclass(frozen=True)
class ServingDefaults:
    """What a batch for this model uses when the request does not say (None: the farm's)."""

    codec: str | None = None
    n: int | None = None
    s: int | None = None
    deadline: float | None = None  # seconds
    redundancy: float | None = None  # tasks per row, >= 1 (n and s, when set, win over it)


@dataclass(frozen=True)
class ModelConfig:
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_dtype: str = "float32"
    description: str = ""
    serving: ServingDefaults = field(default_factory=ServingDefaults)
    factory: str | None = None  # "package.module:function"
    polynomial_degree: int | None = None  # declared: exact codes are exact up to this degree

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype,
            "output_shape": list(self.output_shape),
        }
        if self.description:
            data["description"] = self.description
        serving = {k: v for k, v in self.serving.__dict__.items() if v is not None}
        if serving:
            data["serving"] = serving
        if self.factory:
            data["factory"] = self.factory
        if self.polynomial_degree is not None:
            data["polynomial_degree"] = self.polynomial_degree
        return json.dumps(data, indent=2) + "\n"


def _shape(path: Path, name: str, value: object) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ModelConfigError(
            f"{path}: field {name!r} must be a non-empty list of positive integers "
            f"(the shape without the batch dimension), got {value!r}"
        )
    return tuple(value)


def _serving(path: Path, value: object) -> ServingDefaults:
    if not isinstance(value, dict):
        raise ModelConfigError(f"{path}: field 'serving' must be an object, got {value!r}")
    unknown = sorted(set(value) - _SERVING)
    if unknown:
        raise ModelConfigError(
            f"{path}: unknown field(s) serving.{', serving.'.join(unknown)}; "
            f"allowed: {', '.join(sorted(_SERVING))}"
        )
    codec = value.get("codec")
    if codec is not None and (not isinstance(codec, str) or not codec):
        raise ModelConfigError(f"{path}: field 'serving.codec' must be a codec spec string")
    ints: dict[str, int | None] = {}
    for key, minimum in (("n", 1), ("s", 0)):
        raw = value.get(key)
        if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool) or raw < minimum):
            raise ModelConfigError(
                f"{path}: field 'serving.{key}' must be an integer >= {minimum}, got {raw!r}"
            )
        ints[key] = raw
    deadline = value.get("deadline")
    if deadline is not None and (
        not isinstance(deadline, (int, float)) or isinstance(deadline, bool)
        or not math.isfinite(deadline) or deadline <= 0
    ):  # fmt: skip
        raise ModelConfigError(
            f"{path}: field 'serving.deadline' must be a number of seconds > 0, got {deadline!r}"
        )
    redundancy = value.get("redundancy")
    if redundancy is not None and (
        not isinstance(redundancy, (int, float)) or isinstance(redundancy, bool)
        or not math.isfinite(redundancy) or redundancy < 1
    ):  # fmt: skip
        raise ModelConfigError(
            f"{path}: field 'serving.redundancy' must be a number >= 1, got {redundancy!r}"
        )
    return ServingDefaults(
        codec, ints["n"], ints["s"], None if deadline is None else float(deadline),
        None if redundancy is None else float(redundancy),
    )  # fmt: skip


def parse_model_config(path: Path, data: object) -> ModelConfig:
    """Validate the parsed contents of ``path``; raises :class:`ModelConfigError`."""
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ModelConfigError(
            f"{path}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}"
        )
    for required in ("input_shape", "output_shape"):
        if required not in data:
            raise ModelConfigError(f"{path}: missing field {required!r}")
    dtype = data.get("input_dtype", "float32")
    if dtype not in DTYPES:
        raise ModelConfigError(
            f"{path}: field 'input_dtype' must be one of {', '.join(DTYPES)}, got {dtype!r}"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ModelConfigError(f"{path}: field 'description' must be a string")
    factory = data.get("factory")
    if factory is not None and (not isinstance(factory, str) or not _FACTORY.match(factory)):
        raise ModelConfigError(
            f"{path}: field 'factory' must be 'package.module:function', got {factory!r}"
        )
    degree = data.get("polynomial_degree")
    if degree is not None and (not isinstance(degree, int) or isinstance(degree, bool)
                               or degree < 1):  # fmt: skip
        raise ModelConfigError(
            f"{path}: field 'polynomial_degree' must be an integer >= 1, got {degree!r}"
        )
    return ModelConfig(
        polynomial_degree=degree,
        input_shape=_shape(path, "input_shape", data["input_shape"]),
        output_shape=_shape(path, "output_shape", data["output_shape"]),
        input_dtype=dtype,
        description=description,
        serving=_serving(path, data.get("serving", {})),
        factory=factory,
    )


def read_model_config(path: Path) -> ModelConfig:
    """Read and validate a ``config.json``; raises :class:`ModelConfigError`."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ModelConfigError(f"{path}: missing (every repository model needs one)") from exc
    except OSError as exc:
        raise ModelConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelConfigError(f"{path}: not valid JSON: {exc}") from exc
    return parse_model_config(path, data)
