"""Loading a repository model with torch: TorchScript and torch.export archives, or a
factory's module with ``weights_only`` weights. Nothing arbitrary is ever unpickled."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from codedfarm.errors import ModelUnavailableError
from codedfarm.models.repository import RepositoryModel

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import nn

__all__ = ["load_repository_model", "short_reason"]


def short_reason(exc: BaseException) -> str:
    """One line for an error from torch: TorchScript's carry the interpreter's traceback,
    whose last line is the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if any("Traceback" in line for line in lines):
        lines = lines[-1:]
    return " ".join(" ".join(lines).split())[:300] or type(exc).__name__


def _unavailable(model: RepositoryModel, what: str, exc: BaseException) -> ModelUnavailableError:
    return ModelUnavailableError(f"model {model.ref}: {what}: {short_reason(exc)}")


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


class _FixedBatch:
    """Runs a program exported for one batch size ``size``: inputs go in chunks of that
    size, the last one padded with zeros (rows are independent in eval mode)."""

    def __init__(self, module: Any, size: int) -> None:
        self.module = module
        self.size = size

    def __call__(self, x: Any) -> Any:
        import torch

        outputs = []
        for start in range(0, len(x), self.size):
            chunk = x[start : start + self.size]
            pad = self.size - len(chunk)
            if pad:
                chunk = torch.cat([chunk, chunk.new_zeros((pad, *chunk.shape[1:]))])
            outputs.append(self.module(chunk)[: self.size - pad])
        return torch.cat(outputs)


def load_repository_model(model: RepositoryModel, device: str = "cpu") -> nn.Module:
    """Version ``model`` on ``device``, ready for inference. Raises
    :class:`ModelUnavailableError` naming the model and the file on any failure."""
    import torch

    kind = model.format
    file = model.file
    try:
        if kind == "torchscript":
            assert file is not None
            with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; users chose it
                warnings.simplefilter("ignore", FutureWarning)
                module: Any = torch.jit.load(str(file), map_location=device).eval()  # type: ignore[no-untyped-call]
        elif kind == "export":
            assert file is not None
            with _quiet_torch_export():
                program = torch.export.load(str(file))
            module = program.module().to(device)  # exported in eval mode; .eval() is refused
            module = _batched(module, _example_batch(program), model, device)
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
        error = _unavailable(model, f"cannot load {file or model.directory}", exc)
        raise ModelUnavailableError(
            f"{error}; replace it (`codedfarm models add {model.name} FILE ...` checks a file "
            "and writes a new version)"
        ) from exc
    return module  # type: ignore[no-any-return]


def _example_batch(program: Any) -> int:
    """The batch size the program was exported with (1 if it cannot tell)."""
    try:
        args, _ = program.example_inputs
        return int(args[0].shape[0])
    except Exception:
        return 1


def _batched(module: Any, exported: int, model: RepositoryModel, device: str) -> Any:
    """A program may have been exported for one batch size: probe with another size and, if
    that fails, run in chunks of the exported size (correct, slower; export with a dynamic
    batch dimension, ``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``, to batch)."""
    import torch

    probe = torch.zeros((exported + 1, *model.config.input_shape), device=device)
    try:
        with torch.inference_mode():
            module(probe)
        return module
    except Exception:
        return _FixedBatch(module, exported)
