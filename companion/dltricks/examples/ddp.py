"""Data-parallel training with :func:`dltricks.train.fit` under ``torchrun``; the same script in one process.

On one machine with N processes (``gloo`` on CPUs, ``NCCL`` with one GPU per process)::

    torchrun --standalone --nproc-per-node=2 -m dltricks.examples.ddp --out runs/ddp
    python -m dltricks.examples.ddp --out runs/one          # one process, the same run

On several machines, the same command on each with ``--nnodes=M --node-rank=i --rdzv-endpoint=HOST:PORT``
in place of ``--standalone`` (``torchrun --help``); the output directory must then be on a file system every
machine sees, since every rank resumes from rank 0's checkpoint.

``fit`` reads the rank and the number of ranks from the process group, trains through
``DistributedDataParallel``, gives each rank its share of every global batch of ``--batch-size`` examples
(so N processes take the steps one process takes), logs the same all-reduced numbers on every rank, and
lets rank 0 alone write the checkpoints, the history and the weights. Run the same command again after a
crash or a kill and every rank resumes from the newest checkpoint; ``torchrun --max-restarts=K`` does that
by itself.

Data: scikit-learn's bundled digits (1,797 images of 8x8 pixels: nothing to download) or a synthetic
problem. Prints one JSON line per epoch, on rank 0 (``--log-ranks all``: on every rank, to compare them).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dltricks.batches import TensorBatches
from dltricks.callbacks import Callback, TrainState
from dltricks.checkpoint import Checkpoint
from dltricks.distributed.ranks import init_from_env, is_main
from dltricks.models import mlp
from dltricks.repro import seed_everything
from dltricks.threads import limit_threads
from dltricks.train import fit

VAL = 297  # digits: the last 297 images validate, the first 1,500 train


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dltricks.examples.ddp", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="directory for checkpoints, history, weights")
    ap.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100, help="the global batch (divided over the ranks)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--checkpoint-every-steps", type=int, default=None, help="also save mid-epoch")
    ap.add_argument("--batch-norm", action="store_true", help="batch norm after the hidden layer")
    ap.add_argument("--sync-batch-norm", action="store_true", help="SyncBatchNorm (needs CUDA)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (each process its LOCAL_RANK GPU)")
    ap.add_argument("--log-ranks", choices=("0", "all"), default="0")
    return ap


def load(data: str, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``x_train, y_train, x_val, y_val``: the same tensors on every rank."""
    if data == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = torch.tensor(d.data / 16.0, dtype=dtype), torch.tensor(d.target)
    else:  # ten Gaussian classes in 64 dimensions
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 10, (1797,), generator=g)
        x = (torch.randn(10, 64, generator=g)[y] + torch.randn(1797, 64, generator=g)).to(dtype)
    return x[:-VAL], y[:-VAL], x[-VAL:], y[-VAL:]


class LogEpochs(Callback):
    """Print each epoch's record as one JSON line, tagged with the rank (stateless)."""

    def __init__(self, rank: int, every_rank: bool) -> None:
        self.rank, self.show = rank, every_rank or rank == 0

    def on_epoch_end(self, state: TrainState) -> None:
        if self.show:
            print(json.dumps({"rank": self.rank, **state.history.epochs[-1]}), flush=True)


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train as the command line says; return ``{"rank", "world_size", "history"}``.

    ``callbacks`` run before the checkpoint (tests use one to stop a rank mid-epoch).
    """
    args = parser().parse_args(argv)
    rank, world = init_from_env("gloo" if args.device == "cpu" else None)  # NCCL when there are GPUs
    limit_threads()  # $DLTRICKS_THREADS (default 1) per process
    seed_everything(args.seed)  # every rank alike: DDP's replicas start equal anyway (rank 0's broadcast)
    dtype = getattr(torch, args.dtype)
    x, y, xv, yv = load(args.data, args.seed, dtype)
    model = mlp(64, (args.hidden,), 10).to(dtype)
    if args.batch_norm or args.sync_batch_norm:
        model.insert(2, nn.BatchNorm1d(args.hidden, dtype=dtype))  # after the hidden Linear
    if args.sync_batch_norm:  # global-batch statistics; CUDA only (CPU ranks use their local batch's)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    # drop_last: every global batch is full, so N processes replay one process's steps exactly.
    train = TensorBatches(x, y, args.batch_size, seed=args.seed, drop_last=True)
    val = TensorBatches(xv, yv, 256, shuffle=False)
    ckpt_dir = args.out / "checkpoints"
    ckpt = Checkpoint(ckpt_dir, every_steps=args.checkpoint_every_steps, keep=2)
    history = fit(
        model, train, opt, epochs=args.epochs, val=val, device=args.device, resume_from=ckpt_dir,
        callbacks=[LogEpochs(rank, args.log_ranks == "all"), *callbacks, ckpt],
    )  # fmt: skip
    if is_main():  # one set of files: rank 0's (the others hold the same weights)
        _write(args.out / "model.pt", lambda p: torch.save(model.state_dict(), p))
        record = {
            "world_size": world,
            "args": {k: str(v) for k, v in vars(args).items()},
            "history": history.epochs,
        }
        _write(args.out / "history.json", lambda p: p.write_text(json.dumps(record, indent=1)))
    if dist.is_initialized():
        dist.destroy_process_group()
    return {"rank": rank, "world_size": world, "history": history.epochs}


def _write(path: Path, write: Any) -> None:
    """Write through a temporary file and rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
