"""Checkpointing inside ``fit``: what a checkpoint captures, how runs resume, the ``Checkpoint`` callback.

The file format (header, checksum, atomic writes, safe loading) lives in :mod:`dltricks.checkpoint_file`;
its public functions are re-exported here, so ``from dltricks.checkpoint import load_checkpoint`` works.

A checkpoint captures everything needed to continue a run *exactly*: model, optimizer (and optional
scheduler and gradient scaler) state, the epoch and step counters, the history so far, the loader's
position in its epoch, every stateful callback, and the Python, NumPy and torch random generators; and,
to resume only the same run, the optimizer's class, the name of each of its parameters and the
hyperparameters the first run was started with (:mod:`dltricks.optimizer_state`). A run
killed at any step and resumed with ``fit(..., resume_from=directory)`` ends with the same weights, bit for
bit on the CPU, as a run that was never interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dltricks import optimizer_state
from dltricks._checks import check_int, check_type, fail
from dltricks.callbacks import Callback, TrainState
from dltricks.checkpoint_file import (
    PATHLIKE,
    PAYLOAD_KEYS,
    CheckpointError,
    _check_storable,
    _newest_good,
    _step,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from dltricks.checkpoint_lock import DirectoryLock, process_alive
from dltricks.distributed.ranks import is_main
from dltricks.repro import rng_state, set_rng_state

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "capture",
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore",
    "resume",
    "save_checkpoint",
]


def resume(state: TrainState, source: str | os.PathLike[str]) -> Path | None:
    """Restore a run into ``state`` from a checkpoint; what ``fit(resume_from=...)`` calls.

    ``source`` is a checkpoint file, or a directory whose newest good checkpoint is used. Newer files that
    fail to verify are renamed to ``<name>.corrupt`` (and warned about) so that the resumed run, which
    writes over their steps again, never falls back to them. An empty or missing directory leaves
    ``state`` untouched and returns ``None``: the run starts afresh. A directory that holds checkpoints of
    which none can be loaded is refused: the request to resume cannot be honored, and starting from step
    0 in its place would silently discard the run.

    Returns:
        The checkpoint resumed from, or ``None``.

    Raises:
        CheckpointError: for a bad or missing file given directly (a ``.pt`` path); for a directory whose
            every checkpoint is bad (each file is named with its fault, and none is renamed); for a
            checkpoint that does not fit ``state`` (another model, optimizer, loader, or other stateful
            callbacks).
    """
    source = Path(check_type("source", source, PATHLIKE, "a checkpoint directory or file"))
    if source.suffix == ".pt" and not source.exists():  # a file was asked for: starting afresh ignores it
        raise CheckpointError(
            f"cannot resume from {source}: no such checkpoint file. Name an existing file, or a directory "
            "(an empty or missing one starts afresh)"
        )
    if source.is_file():
        found: tuple[Path, dict[str, Any]] | None = (source, load_checkpoint(source))
    else:
        found = _newest_good(source, quarantine=True, refuse=True)
    if found is None:
        return None
    path, payload = found
    restore(state, payload, path)
    return path


def capture(state: TrainState, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to resume ``state`` exactly, as a payload for :func:`save_checkpoint`."""
    loader = state.train if _stateful(state.train) else None
    return {
        "format": "dltricks.fit/1",
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "optimizer_identity": optimizer_state.describe(state.model, state.optimizer),
        "hyperparameters": state.hyperparameters,  # the first run's, carried over every resume
        "counters": state.state_dict(),
        "history": [dict(record) for record in state.history.epochs],
        "loader": None if loader is None else loader.state_dict(),  # type: ignore[attr-defined]
        "callbacks": {key: cb.state_dict() for key, cb in _keyed(state.callbacks).items()},
        "rng": rng_state(),
        "metadata": dict(metadata or {}),
    }


def restore(
    state: TrainState, payload: Mapping[str, Any], path: str | os.PathLike[str] = "checkpoint"
) -> None:
    """Put a :func:`capture` payload back: model, optimizer, counters, history, loader, callbacks, RNGs.

    The optimizer state is matched to the parameters by name (:mod:`dltricks.optimizer_state`), so a model
    that declares its layers in another order resumes correctly. Its hyperparameters (``lr``,
    ``weight_decay``, ...) are the checkpoint's, PyTorch's convention for ``load_state_dict``: a resumed
    run continues the run it resumes. A ``UserWarning`` names every value the caller set differently.

    Raises:
        CheckpointError: naming ``path``, when the payload was not written by :class:`Checkpoint` or does not
            fit the model, optimizer (class, parameter groups, parameter names), loader or callbacks of
            ``state``.
    """
    missing = [key for key in PAYLOAD_KEYS if key not in payload]
    if payload.get("format") != "dltricks.fit/1" or missing:
        raise CheckpointError(f"{path} was not written by dltricks.checkpoint.Checkpoint (missing {missing})")
    saved, current = payload["callbacks"], _keyed(state.callbacks)
    # A stateful callback on one side only would silently start afresh or be dropped: refuse both.
    one_sided = set(saved) ^ set(current)
    differ = sorted(k for k in one_sided if saved.get(k) or (k in current and current[k].state_dict()))
    if differ:
        raise CheckpointError(f"{path} does not fit this run: the stateful callbacks differ in {differ}")
    loader = state.train if _stateful(state.train) else None
    if (payload["loader"] is None) != (loader is None):
        raise CheckpointError(f"{path} does not fit this run: only one of it and `train` has a data position")
    try:
        state.model.load_state_dict(payload["model"])
        opt_state = optimizer_state.match(
            payload["optimizer"], payload.get("optimizer_identity"), state.model, state.optimizer, str(path)
        )
        state.optimizer.load_state_dict(opt_state)
        state.load_state_dict(payload["counters"])
        if loader is not None:
            loader.load_state_dict(payload["loader"])  # type: ignore[attr-defined]
        for key, cb in current.items():
            cb.load_state_dict(saved.get(key, {}))
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} does not fit this run: {err}") from err
    state.history.epochs = [dict(record) for record in payload["history"]]
    optimizer_state.warn_hyperparameters(payload.get("hyperparameters"), state.hyperparameters, str(path))
    if payload.get("hyperparameters") is not None:
        state.hyperparameters = payload["hyperparameters"]
    set_rng_state(payload["rng"])  # last: nothing after it may draw a random number before training goes on


class Checkpoint(Callback):
    """Save the whole training state every ``every_steps`` steps and ``every_epochs`` epochs; keep ``keep``.

    Together with ``fit(resume_from=directory)`` a run killed at any moment, even in the middle of an
    epoch or of a write, resumes from its newest good checkpoint and ends bitwise equal to an uninterrupted
    run on the CPU (on a GPU, with ``seed_everything(seed, deterministic=True)``): same weights, same
    history except the wall-clock ``seconds``. Older files are deleted only once the new one is in place.
    List it after every other callback, so that it saves what they did at the step or epoch;
    ``every_steps`` needs a loader whose position can be saved (``TensorBatches``). The same lines start
    a run and restart it::

        seed_everything(0)
        model, opt = build()  # its weights are replaced from the checkpoint when there is one
        ckpt = Checkpoint("runs/a", every_steps=500)
        fit(model, TensorBatches(x, y, 128), opt, epochs=30, callbacks=[EarlyStopping(), ckpt],
            resume_from="runs/a")

    Args:
        directory: where the checkpoints go (created if missing). One run per directory: the callback
            locks it from ``on_train_begin`` until ``fit`` returns or raises
            (:mod:`dltricks.checkpoint_lock`).
        every_steps: save after every this many training steps (mid-epoch), or ``None``.
        every_epochs: save after every this many epochs (default 1), or ``None``.
        keep: how many of the newest checkpoints to keep (>= 1).
        scheduler: an LR scheduler (or anything with ``state_dict``/``load_state_dict``) to save along.
        scaler: a ``torch.amp.GradScaler`` to save along.
        metadata: free user data (JSON-like primitives and tensors), stored under ``"metadata"``.

    Raises:
        ValueError: for a bad count, both schedules ``None``, or (when training begins) a callback listed
            after this one or ``every_steps`` with a loader that has no ``state_dict``.
        CheckpointError: when training begins, if another run holds ``directory`` (its process is named) or
            a torch LR scheduler steps the optimizer but was not given as ``scheduler``; when saving into a
            directory that holds checkpoints of a later step (another run).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every_steps: int | None = None,
        every_epochs: int | None = 1,
        keep: int = 3,
        scheduler: Any = None,
        scaler: Any = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = Path(check_type("directory", directory, PATHLIKE, "a directory path"))
        self.every_steps = None if every_steps is None else check_int("every_steps", every_steps, minimum=1)
        self.every_epochs = (
            None if every_epochs is None else check_int("every_epochs", every_epochs, minimum=1)
        )
        if self.every_steps is None and self.every_epochs is None:
            fail("every_epochs", "an integer >= 1 when every_steps is None", every_epochs)
        self.keep = check_int("keep", keep, minimum=1)
        for name, obj in (("scheduler", scheduler), ("scaler", scaler)):
            if obj is not None and not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                fail(name, "None or an object with state_dict() and load_state_dict()", obj, TypeError)
        self.scheduler, self.scaler = scheduler, scaler
        check_type("metadata", metadata, (Mapping, type(None)), "a dict or None")
        _check_storable(metadata or {}, "metadata")
        self.metadata = dict(metadata or {})
        self.last_saved: Path | None = None
        self._lock = DirectoryLock(self.directory)

    def on_train_begin(self, state: TrainState) -> None:
        if self in state.callbacks:
            after = state.callbacks[state.callbacks.index(self) + 1 :]
            if any(not isinstance(cb, Checkpoint) for cb in after):  # their changes would be missing from it
                names = [type(cb).__name__ for cb in state.callbacks]
                fail("callbacks", "a list with Checkpoint after every other callback", names)
        if self.every_steps is not None and state.train is not None and not _stateful(state.train):
            fail("every_steps", "None for a loader without state_dict() (e.g. a list)", self.every_steps)
        if self.scheduler is None and hasattr(state.optimizer.step, "_wrapped_by_lr_sched"):
            # torch's LRScheduler marks the optimizer's step when it attaches; unsaved, it would restart.
            raise CheckpointError(
                f"a torch LR scheduler steps this {type(state.optimizer).__name__}, but "
                "Checkpoint(scheduler=None) would not save it and a resumed run would restart its "
                "schedule: pass Checkpoint(..., scheduler=that_scheduler)"
            )
        if not is_main():  # under torchrun only rank 0 writes (dltricks.distributed.fitting)
            return
        self._lock.acquire()  # one writer per directory, until fit returns or raises (on_train_exit)
        for tmp in self.directory.glob(".ckpt-*.tmp"):  # torn writes of a killed run
            if not process_alive(_tmp_pid(tmp)):  # never one a live process is still writing
                tmp.unlink(missing_ok=True)

    def on_train_exit(self, state: TrainState) -> None:
        self._lock.release()  # a no-op on ranks that never took it

    def on_step_end(self, state: TrainState) -> None:
        if self.every_steps is not None and state.step % self.every_steps == 0:
            self.save(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.every_epochs is not None and state.epoch % self.every_epochs == 0:
            self.save(state)

    def save(self, state: TrainState) -> Path:
        """Write a checkpoint of ``state`` now, then delete all but the newest ``keep``.

        Raises:
            CheckpointError: when ``directory`` holds checkpoints of a later step (another run's).
        """
        if not is_main():  # another rank: rank 0 writes the same state (its counters are all-reduced)
            return self.directory / checkpoint_name(state.step)
        later = [p.name for p in list_checkpoints(self.directory) if _step(p) > state.step]
        if later:
            raise CheckpointError(
                f"{self.directory} holds checkpoints after step {state.step} ({later[-1]}): another run's? "
                "Resume with fit(resume_from=...) or use an empty directory"
            )
        path = save_checkpoint(self.directory / checkpoint_name(state.step), capture(state, self.metadata))
        for old in list_checkpoints(self.directory)[: -self.keep]:
            old.unlink(missing_ok=True)
        self.last_saved = path
        return path

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's and scaler's states (when given)."""
        parts = {"scheduler": self.scheduler, "scaler": self.scaler}
        return {name: obj.state_dict() for name, obj in parts.items() if obj is not None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the scheduler and scaler; a part on one side only is an error, not a silent reset.

        Raises:
            ValueError: for a ``state`` out of its allowed range.
        """
        parts = {"scheduler": self.scheduler, "scaler": self.scaler}
        for name, obj in parts.items():
            if (obj is None) != (name not in state):
                fail(
                    "state", f"a mapping with a {name} state just when this Checkpoint has one", sorted(state)
                )
            if obj is not None:
                obj.load_state_dict(state[name])


def _keyed(callbacks: list[Callback]) -> dict[str, Callback]:
    """Callbacks keyed by class name (``EarlyStopping``, ``EarlyStopping#2``): stable as others change."""
    keyed: dict[str, Callback] = {}
    counts: dict[str, int] = {}
    for cb in callbacks:
        name = type(cb).__name__
        counts[name] = counts.get(name, 0) + 1
        keyed[name if counts[name] == 1 else f"{name}#{counts[name]}"] = cb
    return keyed


def _stateful(loader: Any) -> bool:
    return all(callable(getattr(loader, method, None)) for method in ("state_dict", "load_state_dict"))


def _tmp_pid(tmp: Path) -> int:
    """The writer's process id in a temporary name ``.ckpt-000000003.pt.<pid>.tmp`` (-1 if there is none)."""
    pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 2 else ""
    return int(pid) if pid.isdigit() else -1
