"""Published figures to read ``codedfarm eval --decoded-rows`` against: accuracy of
reconstructed (decoded) predictions in ApproxIFER and ParM, at their redundancy settings.

These are *their* numbers, on *their* data sets and models (ResNet-18 on MNIST,
Fashion-MNIST and CIFAR-10), not measurements of this package: the farm's table is on
digits with LeNet5/RepVGG/ViT. Each entry carries its source. A figure that could not be
found is kept as ``value=None`` with a note saying so, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PUBLISHED", "PublishedFigure", "published_table"]

APPROXIFER = (
    "Soleymani, Ali, Mahdavifar, Avestimehr, 'ApproxIFER: A Model-Agnostic Approach to "
    "Resilient and Robust Prediction Serving Systems', AAAI 2022 "
    "(doi:10.1609/aaai.v36i8.20809), bar chart against ParM with S=1 straggler; values "
    "from the authors' plotting script for the paper, github.com/Mahdi-Soleymani/Approxifer "
    "Bar_plots.py (parM_comparison), N=K+1 and S=1 from its WorkStation-MNIST.py and "
    "WorkStation-CIFAR.py (Plot_K)"
)
PARM = (
    "Kosaian, Rashmi, Venkataraman, 'Parity Models: Erasure-Coded Resilience for Prediction "
    "Serving Systems', SOSP 2019 (doi:10.1145/3341301.3359654)"
)


@dataclass(frozen=True)
class PublishedFigure:
    """One published accuracy of reconstructed predictions.

    ``k`` queries coded together on ``n`` workers (``n / k`` the redundancy), ``s`` of them
    lost. ``value``: top-1 accuracy against the labels of the predictions the scheme
    reconstructed; ``base``: the base model's own accuracy in the same figure.
    """

    work: str
    dataset: str
    model: str
    k: int | None
    n: int | None
    s: int | None
    value: float | None
    base: float | None
    citation: str
    note: str = ""

    @property
    def redundancy(self) -> float | None:
        return self.n / self.k if self.n is not None and self.k else None


_RESNET = "ResNet-18 (ParM's trained base models)"
_DATASETS = ("MNIST", "Fashion-MNIST", "CIFAR-10")
_BASE = (0.99, 0.97, 0.94)  # the figure's "Base model (best case)" bars
# K -> (MNIST, Fashion-MNIST, CIFAR-10), Bar_plots.py parM_comparison()
_APPROXIFER = {8: (0.872, 0.74, 0.776), 10: (0.872, 0.73, 0.774), 12: (0.868, 0.72, 0.774)}
_PARM_BY_APPROXIFER = {
    8: (0.6833, 0.6711, 0.2539),
    10: (0.592, 0.59, 0.2043),
    12: (0.5031, 0.5518, 0.1921),
}
_APPROXIFER_NOTE = (
    "Berrut code, not systematic: all K predictions decoded (from the logits, linearly) "
    "from the N-1 results of a random straggler; the abstract's 'up to 58% over ParM' is "
    "CIFAR-10 at K=12 (0.774 vs 0.192)"
)
_PARM_NOTE = (
    "ParM as run by ApproxIFER's authors for their comparison (one parity model per K "
    "queries, r=1): accuracy of the reconstructed prediction"
)

PUBLISHED: tuple[PublishedFigure, ...] = (
    *(
        PublishedFigure(
            "ApproxIFER", dataset, _RESNET, k, k + 1, 1, value, base, APPROXIFER, _APPROXIFER_NOTE
        )
        for k, values in _APPROXIFER.items()
        for dataset, value, base in zip(_DATASETS, values, _BASE, strict=True)
    ),
    *(
        PublishedFigure(
            "ParM (run by ApproxIFER's authors)",
            dataset,
            _RESNET,
            k,
            k + 1,
            1,
            value,
            base,
            APPROXIFER,
            _PARM_NOTE,
        )
        for k, values in _PARM_BY_APPROXIFER.items()
        for dataset, value, base in zip(_DATASETS, values, _BASE, strict=True)
    ),
    PublishedFigure(
        work="ParM (its own paper)",
        dataset="MNIST, Fashion-MNIST, CIFAR-10, Cat v. Dog, Speech Commands",
        model="MLP, ResNet-18, VGG-11",
        k=None,
        n=None,
        s=1,
        value=None,
        base=None,
        citation=PARM,
        note="not found: the paper's own degraded-mode accuracies were not in the offline corpora "
        "searched; its repository (Thesys-lab/parity-models) has the training code and "
        "configurations (k = 2, 3, 4 queries, one parity; the data sets and models named "
        "here), no result tables. A third-party summary of the paper says "
        "degraded-mode accuracy is 'no more than 6.5% lower' than with every prediction "
        "available; its setting is not stated there, so it is not tabulated",
    ),
)


def _cell(value: float | None) -> str:
    return "not found" if value is None else f"{value:.3f}"


def published_table(figures: tuple[PublishedFigure, ...] = PUBLISHED) -> str:
    """The figures as markdown, labelled as theirs, with notes and sources underneath."""
    notes = list(dict.fromkeys(f.note for f in figures if f.note))
    sources = list(dict.fromkeys(f.citation for f in figures))
    lines = [
        "Published figures (theirs, not this package's: other data sets and models)",
        "",
        "| work | data set | model | K | n | R = n/K | lost | reconstructed accuracy | "
        "base accuracy | note | source |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        r = f.redundancy
        note = f"[{notes.index(f.note) + 1}]" if f.note else ""
        lines.append(
            f"| {f.work} | {f.dataset} | {f.model} | {f.k or '-'} | {f.n or '-'} | "
            f"{'-' if r is None else f'{r:.3f}'} | {f.s if f.s is not None else '-'} | "
            f"{_cell(f.value)} | {'-' if f.base is None else f'{f.base:.2f}'} | {note} | "
            f"({sources.index(f.citation) + 1}) |"
        )
    lines += ["", *(f"[{i}] {n}" for i, n in enumerate(notes, 1)), ""]
    lines += [f"({i}) {c}" for i, c in enumerate(sources, 1)]
    return "\n".join(lines) + "\n"
