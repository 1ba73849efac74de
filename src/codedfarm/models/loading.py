"""Loading a repository model with torch: TorchScript and torch.export archives, or a
factory's module with ``weights_only`` weights. Nothing arbitrary is ever unpickled."""

from __future__ import annotations

import importlib
import logging
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from codedfarm.errors import ModelUnavailableError
from codedfarm.models.repository import RepositoryModel

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import nn

__all__ = ["load_repository_model"]


def _unavailable(model: RepositoryModel, what: str, exc: BaseException) -> ModelUnavailableError:
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return ModelUnavailableError(f"model {model.ref}: {what}: {reason}")


@contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export logs a whole traceback for a file it cannot read; the error says enough."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _import_factory(model: RepositoryModel) -> Any:
    spec = model.config.factory
    assert spec is not None
    module_name, _, function = spec.partition(":")
    folder = str(model.directory.parent)  # the model's folder may hold its code
    sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(folder)
    return getattr(module, function)


class _RowByRow:
    """Runs a program exported for a fixed batch size one input at a time."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, x: Any) -> Any:
        import torch

        return torch.cat([self.module(row[None]) for row in x])


def load_repository_model(model: RepositoryModel, device: str = "cpu") -> nn.Module:
    """Version ``model`` on ``device``, ready for inference. Raises
    :class:`ModelUnavailableError` naming the model and the file on any failure."""
    import torch

    kind = model.format
    file = model.file
    try:
        if kind == "torchscript":
            assert file is not None
            module: Any = torch.jit.load(str(file), map_location=device).eval()  # type: ignore[no-untyped-call]
        elif kind == "export":
            assert file is not None
            with _quiet_torch_export():
                program = torch.export.load(str(file))
            module = program.module().to(device)  # exported in eval mode; .eval() is refused
            module = _batched(module, model, device)
        elif kind == "factory":
            build = _import_factory(model)
            module = build()
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"{model.config.factory} returned {type(module).__name__}, "
                                "not a torch.nn.Module")  # fmt: skip
            if file is not None:
                state = torch.load(str(file), map_location="cpu", weights_only=True)
                module.load_state_dict(state)
            module = module.eval().to(device)
        else:
            raise FileNotFoundError(f"no model.pt or model.pt2 in {model.directory}")
    except ModelUnavailableError:
        raise
    except Exception as exc:
        what = f"cannot load {file or model.directory}"
        raise _unavailable(model, what, exc) from None
    return module  # type: ignore[no-any-return]


def _batched(module: Any, model: RepositoryModel, device: str) -> Any:
    """An exported program may have been exported for one batch size: probe with two inputs
    and fall back to one at a time (correct, slower; export with a dynamic batch dimension,
    ``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``, to batch)."""
    import torch

    probe = torch.zeros((2, *model.config.input_shape), device=device)
    try:
        with torch.inference_mode():
            module(probe)
        return module
    except Exception:
        return _RowByRow(module)
