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
      "polynomial_degree": 1,              # optional: f is linear/affine (1) or a polynomial
                                           # of this degree, so exact codes (mds, lagrange) apply
      "parity_models": ["m.parity-k2"],    # optional: its parity models (models/parity.py)
      "parity": {"base": "m", "k": 2, ...} # optional: this model IS a parity model (ParityInfo)
    }

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

__all__ = [
    "CONFIG_FILE",
    "PARITY_COMBINES",
    "PARITY_INITS",
    "PARITY_TARGETS",
    "ModelConfig",
    "ParityInfo",
    "ServingDefaults",
    "read_model_config",
]

CONFIG_FILE = "config.json"
DTYPES = ("float32",)
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_FIELDS = {
    "input_shape", "input_dtype", "output_shape", "description", "serving", "factory",
    "polynomial_degree", "parity_models", "parity",
}  # fmt: skip
_SERVING = {"codec", "n", "s", "deadline", "redundancy"}
PARITY_TARGETS = ("logits", "probs")
PARITY_COMBINES = ("sum", "mean")
PARITY_INITS = ("base", "scratch")
_PARITY_REQUIRED = ("base", "k", "target")


@dataclass(frozen=True)
class ServingDefaults:
    """What a batch for this model uses when the request does not say (None: the farm's)."""

    codec: str | None = None
    n: int | None = None
    s: int | None = None
    deadline: float | None = None  # seconds
    redundancy: float | None = None  # tasks per row, >= 1 (n and s, when set, win over it)


@dataclass(frozen=True)
class ParityInfo:
    """A parity model's ``parity`` block (ParM): it is trained so that ``F_P(x_1 + … + x_k)
    ≈ Σ T(F(x_i))`` for the base model ``F``; a missing prediction is ``F_P(P) − Σ_{j≠i}
    T(F(x_j))``. ``target`` is the space ``T`` of that sum: ``logits``, the base model's
    outputs as served, or ``probs``, their softmax (then the others' outputs are softmaxed
    before they are subtracted, and the reconstruction is a probability vector). The rest
    records the training that made the current version."""

    base: str  # the base model's name (zoo or repository)
    k: int  # queries per parity query, >= 2
    target: str = "logits"  # "logits" or "probs"
    base_version: int | None = None  # the repository base's version it was trained for
    data: str = ""  # "digits" or "<file>.npz sha256:<digest>"
    epochs: int | None = None
    seed: int | None = None
    init: str | None = None  # "base": from the base model's weights; "scratch"
    heldout_mse: float | None = None  # F_P(P) against Σ T(F(x_i)), per entry, target units²
    heldout_agreement: float | None = None  # reconstructed top-1 == the base's, a fraction
    combine: str = "sum"  # "sum": F_P(P) ≈ Σ T(F(x_i)); "mean": ≈ their mean (a model that
    # ends in a softmax: its parity model can only output probability vectors)

    def to_dict(self) -> dict[str, Any]:
        """The JSON block: unset fields left out, but ``base_version`` always (null: a zoo
        base)."""
        return {k: v for k, v in self.__dict__.items()
                if k == "base_version" or (v is not None and v != "")}  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_dtype: str = "float32"
    description: str = ""
    serving: ServingDefaults = field(default_factory=ServingDefaults)
    factory: str | None = None  # "package.module:function"
    polynomial_degree: int | None = None  # declared: exact codes are exact up to this degree
    parity_models: tuple[str, ...] = ()  # names of this model's parity models
    parity: ParityInfo | None = None  # set when this model is a parity model

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
        if self.parity_models:
            data["parity_models"] = list(self.parity_models)
        if self.parity is not None:
            data["parity"] = self.parity.to_dict()
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


def _int(path: Path, name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ModelConfigError(
            f"{path}: field {name!r} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _fraction(path: Path, name: str, value: object, maximum: float | None) -> float:
    if (
        not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
        or value < 0 or (maximum is not None and value > maximum)
    ):  # fmt: skip
        bound = f"in [0, {maximum:g}]" if maximum is not None else ">= 0"
        raise ModelConfigError(f"{path}: field {name!r} must be a number {bound}, got {value!r}")
    return float(value)


def _choice(path: Path, name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ModelConfigError(
            f"{path}: field {name!r} must be one of {', '.join(choices)}, got {value!r}"
        )
    return str(value)


def _parity(path: Path, value: object) -> ParityInfo:
    if not isinstance(value, dict):
        raise ModelConfigError(f"{path}: field 'parity' must be an object, got {value!r}")
    allowed = set(ParityInfo.__dataclass_fields__)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ModelConfigError(
            f"{path}: unknown field(s) parity.{', parity.'.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    for required in _PARITY_REQUIRED:
        if required not in value:
            raise ModelConfigError(f"{path}: missing field 'parity.{required}'")
    base, data = value["base"], value.get("data", "")
    if not isinstance(base, str) or not base or "@" in base or "/" in base:
        raise ModelConfigError(f"{path}: field 'parity.base' must be a model name, got {base!r}")
    if not isinstance(data, str):
        raise ModelConfigError(f"{path}: field 'parity.data' must be a string, got {data!r}")
    optional: dict[str, Any] = {}
    for name, minimum in (("base_version", 1), ("epochs", 1), ("seed", 0)):
        if value.get(name) is not None:
            optional[name] = _int(path, f"parity.{name}", value[name], minimum)
    for name, maximum in (("heldout_mse", None), ("heldout_agreement", 1.0)):
        if value.get(name) is not None:
            optional[name] = _fraction(path, f"parity.{name}", value[name], maximum)
    if value.get("init") is not None:
        optional["init"] = _choice(path, "parity.init", value["init"], PARITY_INITS)
    if value.get("combine") is not None:
        optional["combine"] = _choice(path, "parity.combine", value["combine"], PARITY_COMBINES)
    return ParityInfo(
        base=base, k=_int(path, "parity.k", value["k"], 2), data=data,
        target=_choice(path, "parity.target", value["target"], PARITY_TARGETS), **optional,
    )  # fmt: skip


def _parity_models(path: Path, value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not all(isinstance(v, str) and v and "@" not in v and "/" not in v for v in value)
        or len(set(value)) != len(value)
    ):
        raise ModelConfigError(
            f"{path}: field 'parity_models' must be a list of distinct model names, got {value!r}"
        )
    return tuple(value)


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
        parity_models=_parity_models(path, data.get("parity_models", [])),
        parity=_parity(path, data["parity"]) if data.get("parity") is not None else None,
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
