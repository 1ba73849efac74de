"""A held-out model for ``codedfarm eval --degraded``: a digits CNN none of the farm's
constants were tuned on, added to a model repository as a factory model.

Run:  .venv/bin/python benchmarks/heldout_cnn.py REPOSITORY [--name digitcnn] [--width 16]
      [--seed 0]

The model: four 3x3 conv layers with random weights (``--seed``; ``--width`` channels, then
2x, 4x, 4x; ReLU, one 2x2 max-pool, a 3x3 adaptive average pool), and a linear head
trained on their features for 300 full-batch Adam steps on sklearn's digits at 1x28x28 (the
train split; a few seconds). It returns logits, like the zoo's models. Written as
``REPOSITORY/NAME/config.json`` (input 1x28x28, output 10, ``factory``), the architecture
in ``REPOSITORY/NAME/NAME_code.py`` (``build()``) and the weights in ``REPOSITORY/NAME/1/
weights.pt``; its parity models can then be trained from the factory (``--init scratch``
too). Prints its test accuracy. Refuses to overwrite an existing model of that name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CODE = '''"""{name}: a digits CNN with random conv features and a trained linear head
(benchmarks/heldout_cnn.py)."""

from torch import nn

WIDTH = {width}


def build() -> nn.Sequential:
    c = WIDTH
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
        nn.Linear(4 * c * 9, 10),
    )
'''
SHAPE = (1, 28, 28)


def add_heldout_cnn(repository: Path, name: str, width: int, seed: int) -> float:
    """Write the model (the module's docstring); returns its test accuracy."""
    import importlib.util

    import torch
    from torch import nn

    from codedfarm.models.digits import load_digits_split

    folder = repository / name
    if folder.exists():
        raise SystemExit(f"{folder} exists: choose another --name or move it away")
    (folder / "1").mkdir(parents=True)
    code = folder / f"{name}_code.py"
    code.write_text(CODE.format(name=name, width=width))
    spec = importlib.util.spec_from_file_location(f"{name}_code", code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    net = module.build().eval()
    features, head = net[:-1], net[-1]
    data = load_digits_split(shape=SHAPE)
    with torch.no_grad():
        feats = features(torch.from_numpy(data.train_x))
        scale = float(feats.std()) or 1.0
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    labels = torch.from_numpy(data.train_y)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(head(feats / scale), labels).backward()
        opt.step()
    with torch.no_grad():
        head.weight /= scale
        accuracy = float((net(torch.from_numpy(data.test_x)).argmax(1).numpy()
                          == data.test_y).mean())  # fmt: skip
    torch.save(net.state_dict(), folder / "1" / "weights.pt")
    config = {
        "input_shape": list(SHAPE), "output_shape": [10], "factory": f"{name}_code:build",
        "description": f"held-out digits CNN (random conv width {width}, seed {seed}, trained "
        f"head; test accuracy {accuracy:.3f})",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--name", default="digitcnn")
    parser.add_argument("--width", type=int, default=16, help="channels of the first conv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    accuracy = add_heldout_cnn(args.repository, args.name, args.width, args.seed)
    print(f"{args.name}@1 in {args.repository}: test accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
