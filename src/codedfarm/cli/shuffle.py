"""``codedfarm shuffle``: coded data shuffling between a master and n worker processes over
Redis, measured against its theory (docs/shuffle.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from codedfarm.cli.options import json_option, settings_from_context
from codedfarm.shuffle.config import SCHEMES, STRUCTURED

if TYPE_CHECKING:
    from codedfarm.shuffle import EpochReport, ShuffleReport

__all__ = ["shuffle"]

COLUMNS = ("epoch", "broadcast B", "unicast B", "payload B", "theory B", "ratio", "expected B",
           "overhead B", "seconds", "verified")  # fmt: skip


@click.command()
@click.option("--workers", type=int, default=4, help="Workers n (>= 2).")
@click.option(
    "--storage", type=float, default=0.5,
    help="Storage fraction s of the data each worker may cache, its own batch included "
    "(1/n <= s <= 1).",
)  # fmt: skip
@click.option("--epochs", type=int, default=2, help="Shuffles (epochs) after the placement.")
@click.option(
    "--scheme", type=click.Choice(SCHEMES), default=STRUCTURED,
    help="uncoded: unicast what each worker lacks; lee: Lee et al.'s coded shuffling (XOR "
    "of rows per holder set); structured: subset placement of chunks with coded multicast "
    "(Attia & Tandon, Elmahdy & Mohajer).",
)  # fmt: skip
@click.option(
    "--data", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="A .npy array whose rows (first axis) are shuffled; the last len mod n rows are "
    "dropped. Default: sklearn's digits (1797 rows of 64 float64).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the placement and the permutations.")  # fmt: skip
@click.option(
    "--train", is_flag=True,
    help="The training use: softmax regression on the digits by local SGD on each worker's "
    "batch, weights averaged every epoch; prints the held-out accuracy.",
)  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0,
              help="Seconds the master waits for every worker to finish an epoch.")  # fmt: skip
@json_option("one document with the run and its epochs")
def shuffle(
    workers: int,
    storage: float,
    epochs: int,
    scheme: str,
    data: Path | None,
    seed: int,
    train: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Shuffle a data set's rows between a master and n worker processes over Redis, every
    epoch a new random batch per worker, and report per epoch the bytes the master sent
    (broadcast, unicast), the scheme's theoretical load beside them, the protocol overhead,
    the time, and whether every worker verifiably holds its new batch (row checksums).

    Starts a private redis-server unless a Redis URL is given (--redis-url or
    CODEDFARM_REDIS_URL). Exits 1 if a worker did not end an epoch with its batch; a worker
    that dies fails the run (exit 3). Ctrl-C stops the workers and the Redis."""
    from codedfarm.local.shuffle import load_rows, prepare_shuffle, shuffle_locally
    from codedfarm.shuffle import ShuffleConfig

    settings = settings_from_context()  # the key prefix and TTL (CODEDFARM_KEY_*)
    config = ShuffleConfig(workers=workers, storage=storage, epochs=epochs, scheme=scheme,
                           seed=seed, epoch_timeout=timeout, key_ttl=settings.key_ttl)  # fmt: skip
    prepared = prepare_shuffle(config, load_rows(data) if data else None, train=train)
    url = (click.get_current_context().find_root().obj or {}).get("redis_url")
    label = f"shuffling ({scheme}, n={workers}, s={storage:g})"
    with click.progressbar(length=epochs, label=label, file=sys.stderr) as bar:
        try:
            report = shuffle_locally(config, prepared, redis_url=url,
                                     key_prefix=settings.key_prefix,
                                     progress=lambda _: bar.update(1))  # fmt: skip
        except KeyboardInterrupt:
            click.echo("\ninterrupted; the workers and the Redis were stopped", err=True)
            sys.exit(130)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _table(report)
    if not report.ok:
        sys.exit(1)


def _row(e: EpochReport) -> list[Any]:
    verified = f"{sum(e.verified)}/{len(e.verified)}" + ("" if e.ok else " NOT OK")
    return [e.epoch, e.broadcast_bytes, e.unicast_bytes, e.payload_bytes, e.theory_bytes,
            f"{e.ratio:.3f}", f"{e.expected_bytes:.0f}", e.overhead_bytes, f"{e.seconds:.3f}",
            verified]  # fmt: skip


def _table(report: ShuffleReport) -> None:
    c = report.config
    click.echo(
        f"{c.scheme}: n={c.workers} s={c.storage:g} (t={c.t}), q={report.q} rows of "
        f"{report.row_bytes} B ({report.dropped_rows} dropped), {report.pieces_per_row} "
        f"piece(s) of {report.piece_bytes} B a row; placement {report.placement_bytes} B"
    )
    rows = [list(COLUMNS)] + [[str(x) for x in _row(e)] for e in report.epochs]
    if any(e.accuracy is not None for e in report.epochs):
        rows[0].append("accuracy")
        for line, e in zip(rows[1:], report.epochs, strict=True):
            line.append(f"{e.accuracy:.4f}" if e.accuracy is not None else "")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for line in rows:
        click.echo("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))
