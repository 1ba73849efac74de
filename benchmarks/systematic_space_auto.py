"""``space=auto`` (the default of berrut, spline and letcc) against ``space=linear``.

    .venv/bin/python benchmarks/systematic_space_auto.py     # about 1 min on 2 cores

K=8 on n=24 workers with S=4 random stragglers (30 batches x 4 patterns), for the zoo
models on digits with their softmax (auto decodes in log space: the same values as
``space=log``) and the toy tanh network's raw outputs (auto decodes linearly: the same as
before). Prints MSE(auto) / MSE(linear) and RelAcc-style top-1 agreement of each, and
which space auto used.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from codedfarm.codecs import make_codec
from codedfarm.evaluation.compare import toy_model

K, N, S, BATCHES, PATTERNS = 8, 24, 4, 30, 4


def zoo(name: str):
    import torch

    from codedfarm.models.datasets import load_dataset
    from codedfarm.models.registry import get_model_spec
    from codedfarm.models.training import is_trained, trained_model

    cache = Path.home() / ".cache" / "codedfarm"
    if not is_trained(name, cache):
        return None
    module = trained_model(name, cache)
    images = load_dataset("digits", get_model_spec(name).input_shape, cache).test_x  # type: ignore[arg-type]

    def run(x):
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return out.float().softmax(-1).double().numpy()

    return run, lambda rng: images[rng.choice(len(images), K, replace=False)]


def main() -> None:
    toy = toy_model("tanh", in_dim=32, out_dim=10)
    models = {"toy_tanh": (toy, lambda rng: rng.standard_normal((K, 32)))}
    for name in ("lenet5", "repvgg", "vit_small"):
        loaded = zoo(name)
        if loaded is None:
            print(f"[{name}] not trained: left out")
        else:
            models[name] = loaded
    print("| model | codec | space auto used | MSE auto / linear | agreement auto | linear |")
    print("|---|---|---|---|---|---|")
    for (name, (f, draw)), codec_name in itertools.product(models.items(), APPROX):
        s_param = {"s": S} if codec_name == "letcc" else {}
        auto = make_codec(codec_name, K, N, **s_param)
        linear = make_codec(codec_name, K, N, space="linear", **s_param)
        rng = np.random.default_rng(0)
        err = {"auto": [], "linear": []}
        agree = {"auto": [], "linear": []}
        used = set()
        for _ in range(BATCHES):
            x = draw(rng)
            truth = f(x)
            y = f(auto.encode(x.astype(np.float64)).astype(x.dtype))
            for _ in range(PATTERNS):
                got = sorted(rng.choice(N, N - S, replace=False).tolist())
                report = auto.decode_report(y[got], got)
                used.add(report.space_used)
                for key, values in (
                    ("auto", report.values),
                    ("linear", linear.decode(y[got], got)),
                ):
                    err[key].append(np.mean(np.sum((values - truth) ** 2, -1)))
                    agree[key].append(np.mean(values.argmax(-1) == truth.argmax(-1)))
        ratio = np.mean(err["auto"]) / np.mean(err["linear"])
        print(
            f"| {name} | {codec_name} | {','.join(sorted(used))} | {ratio:.2f} | "
            f"{np.mean(agree['auto']):.3f} | {np.mean(agree['linear']):.3f} |",
            flush=True,
        )


APPROX = ("berrut", "spline", "letcc")

if __name__ == "__main__":
    main()
