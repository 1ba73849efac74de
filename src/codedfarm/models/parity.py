"""Parity models (ParM: Kosaian, Rashmi, Venkataraman, "Parity Models: Erasure-Coded
Resilience for Prediction Serving Systems", SOSP'19; code: Thesys-lab/parity-models):
training one for a zoo or repository model, storing it in the model repository, finding it.

``k`` queries ``x_1 … x_k`` (each ``(*input_shape)``) are summed into one parity query
``P = x_1 + … + x_k``; the parity model ``F_P`` runs on it, and a missing prediction is
``F_P(P) − Σ_{j≠i} T(F(x_j))`` (``T``: the ``target`` of its :class:`ParityInfo`).

The parity model of ``base`` for ``k`` is the repository model ``<base>.parity-k<k>``
(``lenet5.parity-k2``), exported (torch.export ``model.pt2``, or TorchScript ``model.pt``
for a TorchScript base) with the base model's input and output shapes; its config.json has
a ``parity`` block (:class:`ParityInfo`: base, its version, k, target, the data, held-out
numbers); a repository base's config.json lists it under ``parity_models``. A zoo base has
no config.json: its parity models are found by the name.

Defaults, measured on lenet5 at k=2 on digits (359 held-out images, 718 reconstructed rows;
2 CPU cores, one torch thread; the whole table in docs/cli.md, ``parity``): the target is
the base model's outputs as served (``logits``) and the parity model starts from the base
model's weights (``init=base``). Held-out top-1 agreement of the reconstructed rows with
the base model, by target and init, at 10/30/60 epochs: logits+base 0.954/0.957/0.961,
logits+scratch 0.358/0.889/0.940, probs+base 0.641/0.787/–, probs+scratch 0.767/0.880/0.903.
At k=4, logits+base: 0.913 (30 epochs), 0.917 (60). repvgg, logits+base: 0.933 at k=2 (8
epochs; probs+base 0.891), 0.797 at k=4 (16 epochs).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codedfarm.errors import ConfigError, ModelConfigError, UnknownModelError
from codedfarm.models.config import (
    PARITY_COMBINES,
    PARITY_INITS,
    PARITY_TARGETS,
    ModelConfig,
    ParityInfo,
)
from codedfarm.models.parity_fit import FitSettings, HeldoutReport, ParityProgress
from codedfarm.models.repository import ModelRepository, RepositoryModel
from codedfarm.models.resolve import ResolvedModel, resolve_model

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_INIT",
    "DEFAULT_TARGET",
    "ParityProgress",
    "ParityTraining",
    "TrainedParity",
    "default_epochs",
    "parity_agreements_of",
    "parity_model_for",
    "parity_models_of",
    "parity_name",
    "train_parity",
]

DEFAULT_TARGET = "logits"  # measured above: logits+base beats every other pair at k=2 and 4
DEFAULT_INIT = "base"
DEFAULT_EPOCHS = {"lenet5": 30, "repvgg": 8, "vit_small": 15}
"""Epochs at k=2 by base model (others: 20), times k/2 for larger k (repvgg at k=4 reached
0.749 in 8 epochs, 0.779 in 15)."""
_OTHER_EPOCHS = 20


def parity_name(base: str, k: int) -> str:
    """The repository name of ``base``'s parity model for ``k``: ``lenet5.parity-k2``."""
    return f"{base}.parity-k{k}"


def default_epochs(base: str, k: int = 2) -> int:
    """Epochs ``parity train`` runs for ``base`` and ``k`` without ``--epochs``: the
    model's k=2 count times k/2 (rounded up)."""
    return -(-DEFAULT_EPOCHS.get(base, _OTHER_EPOCHS) * k // 2)


@dataclass(frozen=True)
class ParityTraining:
    """A request to train ``base_ref``'s parity model for ``k`` queries on ``data``
    (``digits`` or a ``.npz`` with ``x`` of shape ``(N, *input_shape)``). ``epochs`` None:
    :func:`default_epochs`. ``resume``: continue from the checkpoint of an interrupted run
    with the same base (and version), k, data, seed and settings, if there is one."""

    base_ref: str
    k: int
    data: str = "digits"
    epochs: int | None = None
    seed: int = 0
    target: str = DEFAULT_TARGET
    init: str = DEFAULT_INIT
    combine: str = "auto"  # "sum", "mean", or "auto": mean when the base outputs probabilities
    batch_size: int = 64
    lr: float | None = None  # Adam's, cosine-annealed to 0; None: probed (parity_fit.probe_lr)
    threads: int = 1  # torch threads (a fixed count keeps runs bit-for-bit equal)
    resume: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ConfigError(f"k must be an integer >= 2 (queries per parity query), got {self.k}")
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size),
                            ("threads", self.threads)):  # fmt: skip
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.seed < 0 or not (self.lr is None or self.lr > 0):
            raise ConfigError(f"seed must be >= 0 and lr > 0, got {self.seed} and {self.lr}")
        if self.combine not in ("auto", *PARITY_COMBINES):
            raise ConfigError(f"combine must be one of auto, {', '.join(PARITY_COMBINES)}, "
                              f"got {self.combine!r}")  # fmt: skip
        if self.target not in PARITY_TARGETS or self.init not in PARITY_INITS:
            raise ConfigError(
                f"target must be one of {', '.join(PARITY_TARGETS)} and init one of "
                f"{', '.join(PARITY_INITS)}, got {self.target!r} and {self.init!r}"
            )


@dataclass(frozen=True)
class TrainedParity:
    """A parity model trained and stored: its new version, its ``parity`` block, the
    epochs a checkpoint had already done (0: none), this run's seconds, held-out numbers."""

    model: RepositoryModel
    info: ParityInfo
    resumed_from: int
    train_seconds: float
    heldout: HeldoutReport


def _fresh(resolved: ResolvedModel, repository: Path) -> Any:
    """The base model's architecture, freshly initialized: a zoo model's training recipe
    or a repository model's factory."""
    from codedfarm.models.loading import _import_factory
    from codedfarm.models.training import TRAINABLE

    if resolved.source == "zoo" and resolved.name in TRAINABLE:
        return TRAINABLE[resolved.name].build()
    if resolved.source == "repository":
        found = ModelRepository(repository).get(resolved.name, resolved.version)
        if found.config.factory:
            return _import_factory(found)()
    raise ModelConfigError(
        f"--init scratch needs the architecture of {resolved.ref} (a trainable zoo model "
        "or a repository model with a factory); use --init base"
    )


def _parity_net(request: ParityTraining, resolved: ResolvedModel, base: Any,
                repository: Path) -> Any:  # fmt: skip
    """The network to train: a copy of the base (``init=base``) or its architecture
    freshly initialized with the seed (``init=scratch``)."""
    import torch

    if not isinstance(base, torch.nn.Module):
        raise ModelConfigError(
            f"model {resolved.ref} was exported for one batch size and cannot be trained: "
            "export it with a dynamic batch dimension"
        )
    torch.manual_seed(request.seed)
    if request.init == "scratch":
        net = _fresh(resolved, repository)
    else:
        with torch.no_grad():  # a TorchScript module's copy would clone with autograd
            net = copy.deepcopy(base)
        for parameter in net.parameters():
            parameter.requires_grad_(True)
    if not any(p.requires_grad for p in net.parameters()):
        raise ModelConfigError(f"model {resolved.ref} has no parameters to train")
    return net


def _base_module(resolved: ResolvedModel, repository: Path, cache_dir: Path,
                 notice: Callable[[str], None]) -> Any:  # fmt: skip
    from codedfarm.models.registry import load_model
    from codedfarm.models.resolve import load_served_model
    from codedfarm.models.training import TRAINABLE, is_trained

    if resolved.source == "zoo":
        if resolved.name in TRAINABLE and not is_trained(resolved.name, cache_dir):
            notice(f"training the base model {resolved.name} first (cached in {cache_dir})")
        return load_model(resolved.name, cache_dir, train=True)
    return load_served_model(resolved.name, resolved.version, repository=repository,
                             cache_dir=cache_dir)  # fmt: skip


def _existing_parity(repo: ModelRepository, name: str, base: str, k: int) -> ModelConfig | None:
    if not repo.has(name):
        return None
    config = repo.config(name)
    if config.parity is None or config.parity.base != base or config.parity.k != k:
        raise ModelConfigError(
            f"model {name} in {repo.root} exists and is not the parity model of {base} for "
            f"k={k}; move it away to train one"
        )
    return config


def _store(repo: ModelRepository, resolved: ResolvedModel, info: ParityInfo, net: Any,
           existing: ModelConfig | None) -> RepositoryModel:  # fmt: skip
    """Export ``net`` as the next version of the parity model, then record ``info`` in its
    config.json and the parity model's name in a repository base's."""
    from codedfarm.models.manage import add_model
    from codedfarm.models.parity_fit import export_parity

    name = parity_name(resolved.name, info.k)
    description = f"ParM parity model of {resolved.name} for k={info.k} ({info.target})"
    config = replace(existing or ModelConfig(resolved.input_shape, resolved.output_shape),
                     description=description, parity=info)  # fmt: skip
    if existing is None:  # config.json first: a version never appears without the block
        repo.write_config(name, config)
    with tempfile.TemporaryDirectory(prefix="codedfarm-parity-") as tmp:
        file = export_parity(net, resolved.input_shape, Path(tmp))
        added = add_model(repo.root, name, file, input_shape=resolved.input_shape,
                          output_shape=resolved.output_shape)  # fmt: skip
    repo.write_config(name, config)
    if resolved.source == "repository":
        base = repo.config(resolved.name)
        if name not in base.parity_models:
            repo.write_config(resolved.name,
                              replace(base, parity_models=(*base.parity_models, name)))  # fmt: skip
    return replace(added, config=config)


def _checkpoint_key(request: ParityTraining, resolved: ResolvedModel, digest: str,
                    epochs: int) -> str:  # fmt: skip
    fields = {"base": resolved.ref, "source": resolved.source, "k": request.k, "data": digest,
              "seed": request.seed, "target": request.target, "init": request.init,
              "combine": request.combine,
              "epochs": epochs, "batch_size": request.batch_size, "lr": request.lr}  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def train_parity(
    request: ParityTraining,
    repository: Path | None,
    cache_dir: Path,
    *,
    progress: Callable[[ParityProgress], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> TrainedParity:
    """Train, evaluate and store the parity model ``request`` asks for (see the module's
    docstring). Checks everything it can before training: the repository, the base model,
    the data's shape. The checkpoint is ``<cache_dir>/parity/<name>-<key>.npz``, written
    after every epoch and removed once the model is stored. ``progress`` is called after
    every minibatch, ``notice`` with a line about what happens (resuming, a base model
    trained first). Raises :class:`~codedfarm.errors.ConfigError` (no repository, a bad
    request, an unknown model), :class:`~codedfarm.errors.InputError` (data of the wrong
    shape) or :class:`~codedfarm.errors.ModelConfigError`."""
    from codedfarm.models.parity_fit import (
        LR_CANDIDATES,
        PROBE_STEPS,
        fit_parity,
        heldout_report,
        load_parity_data,
        outputs_are_probabilities,
        probe_lr,
        seconds_since,
    )

    say = notice or (lambda line: None)
    if repository is None:
        raise ConfigError(
            "parity train stores the parity model in a model repository: set "
            "--model-repository or CODEDFARM_MODEL_REPOSITORY"
        )
    resolved = resolve_model(request.base_ref, repository)
    if resolved.parity is not None:
        raise ConfigError(f"model {resolved.ref} is itself a parity model (of "
                          f"{resolved.parity.base}); train one for its base")  # fmt: skip
    repo = ModelRepository(repository)
    name = parity_name(resolved.name, request.k)
    existing = _existing_parity(repo, name, resolved.name, request.k)
    data = load_parity_data(request.data, resolved.input_shape, request.k)
    epochs = request.epochs or default_epochs(resolved.name, request.k)
    base = _base_module(resolved, repository, cache_dir, say)
    net = _parity_net(request, resolved, base, repository)
    key = _checkpoint_key(request, resolved, data.digest, epochs)
    checkpoint = cache_dir / "parity" / f"{name}-{key[:16]}.npz"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with open(checkpoint.with_suffix(".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigError(f"another `parity train` of {name} with the same settings is "
                              f"running (lock {lock.name})") from exc  # fmt: skip
        if not request.resume:
            checkpoint.unlink(missing_ok=True)
        elif checkpoint.exists():
            say(f"resuming {name} from its checkpoint {checkpoint}")
        combine = request.combine
        if combine == "auto":
            probabilities = outputs_are_probabilities(base, data.train_x)
            combine = "mean" if probabilities else "sum"
        settings = FitSettings(request.k, epochs, request.seed, request.target, combine,
                               request.batch_size, request.lr or 1e-3, request.threads)  # fmt: skip
        if request.lr is None:
            lr = probe_lr(net, base, data, settings)
            settings = replace(settings, lr=lr)
            say(
                f"learning rate {lr:g} (the lowest loss of {', '.join(map(str, LR_CANDIDATES))} "
                f"in {PROBE_STEPS} minibatches)"
            )
        start = time.perf_counter()
        resumed = fit_parity(net, base, data, settings, checkpoint, key, progress=progress)
        seconds = seconds_since(start)
        heldout = heldout_report(net, base, data, request.k, request.target, combine)
        info = ParityInfo(
            base=resolved.name, k=request.k, target=request.target, combine=combine,
            base_version=resolved.version, data=data.label, epochs=epochs, seed=request.seed,
            init=request.init, heldout_mse=round(heldout.mse, 6),
            heldout_agreement=round(heldout.agreement, 4),
        )  # fmt: skip
        stored = _store(repo, resolved, info, net, existing)
        checkpoint.unlink(missing_ok=True)
    return TrainedParity(stored, info, resumed, seconds, heldout)


def _usable(base_ref: str, repository: Path | None) -> dict[int, ResolvedModel]:
    """``k`` -> the resolved parity model, for every parity model of ``base_ref`` that
    has a version and was trained for the base's resolved version."""
    if repository is None:
        return {}
    base = resolve_model(base_ref, repository)
    repo = ModelRepository(repository)
    names: list[str] = []
    if base.source == "repository":
        names.extend(repo.config(base.name).parity_models)
    prefix = f"{base.name}.parity-k"
    names.extend(n for n in repo.names() if n.startswith(prefix))
    found: dict[int, ResolvedModel] = {}
    for name in dict.fromkeys(names):
        try:
            model = resolve_model(name, repository)
        except (UnknownModelError, ModelConfigError):
            continue  # listed but gone, no version yet, or a broken config.json
        info = model.parity
        if (model.source == "repository" and info is not None and info.base == base.name
                and info.base_version == base.version):  # fmt: skip
            found.setdefault(info.k, model)
    return dict(sorted(found.items()))


def parity_models_of(base_ref: str, repository: Path | None) -> dict[int, str]:
    """``k`` -> name of every parity model usable for ``base_ref`` (``NAME[@VERSION]``):
    in the repository, with a version, trained for the base's resolved version (a zoo
    base: version None). Exactly the ``k`` for which :func:`parity_model_for` answers.
    Raises :class:`UnknownModelError` for an unknown base; without a repository: ``{}``."""
    return {k: model.name for k, model in _usable(base_ref, repository).items()}


def parity_agreements_of(base_ref: str, repository: Path | None) -> dict[int, float | None]:
    """``k`` -> the held-out agreement (``parity.heldout_agreement``: a rebuilt row's top-1
    equals the base's) of every usable parity model of ``base_ref``, None where its
    config.json does not say; the same ``k`` as :func:`parity_models_of`."""
    found = _usable(base_ref, repository)
    return {k: (m.parity.heldout_agreement if m.parity else None) for k, m in found.items()}


def parity_model_for(base_ref: str, k: int, repository: Path | None) -> ResolvedModel | None:
    """``base_ref``'s parity model for ``k`` queries, resolved (its highest version; its
    ``parity`` says the ``target``), or None when there is none usable (see
    :func:`parity_models_of`). Raises :class:`UnknownModelError` for an unknown base."""
    return _usable(base_ref, repository).get(k)
