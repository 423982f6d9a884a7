"""``fit`` under ``torchrun`` for real: ``python -m torch.distributed.run --standalone --nproc-per-node=2``,
gloo on this CPU, running ``dltricks.examples.ddp`` (through tests/_torchrun_worker.py, which reports each
rank's file writes and can stop a rank mid-epoch to be killed).

Stated tolerance: in float64, two processes on a global batch of 100 end within 1e-12 of one process on the
same batches, weights and losses (they differ only in the order of the gradient additions: measured 4e-16
after 45 SGD steps with momentum); the accuracy within 1e-6 (``accuracy`` means each batch in float32).
A killed and relaunched run ends bitwise equal to the unkilled two-process run. Four launches of two tiny
processes (digits, a 64-64-10 MLP): about 10 s each on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dltricks.batches import TensorBatches
from dltricks.distributed import ShardedBatches, WorkerError, launch, rank_and_world
from dltricks.distributed.fitting import shard
from dltricks.examples import ddp

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_torchrun_worker.py"
ARGS = ["--dtype", "float64", "--epochs", "3", "--batch-size", "100", "--checkpoint-every-steps", "3"]
STEPS_PER_EPOCH = 1500 // 100  # digits: 1,500 training images, drop_last
TOLERANCE = 1e-12  # float64, one process against two (see the module docstring)


def torchrun(out: Path, logs: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "--monitor-interval=0.2", "--log-dir", str(logs), "--redirects", "3",
           str(WORKER), "--out", str(out), "--log-ranks", "all", *ARGS]  # fmt: skip
    full_env = {**os.environ, "DLTRICKS_PROGRESS": "1", "DLTRICKS_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env={**full_env, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def rank_log(logs: Path, rank: int, stream: str) -> str:
    """What a rank printed (torchrun --redirects writes each rank's streams to files of their own)."""
    return "".join(p.read_text() for p in sorted(logs.glob(f"*/attempt_*/{rank}/{stream}.log")))


def parse(logs: Path) -> tuple[dict[int, list[dict]], dict[int, dict]]:
    """Each rank's epoch records and its report (file writes, examples per epoch), from its JSON lines."""
    epochs: dict[int, list[dict]] = {0: [], 1: []}
    reports: dict[int, dict] = {}
    for rank in (0, 1):
        for line in rank_log(logs, rank, "stdout").splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                if "report" in item:
                    reports[item["report"]] = item
                else:
                    assert item.pop("rank") == rank
                    epochs[rank].append(item)
    return epochs, reports


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def unkilled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unkilled")
    code, stdout = finish(torchrun(tmp / "out", tmp / "logs"))
    assert code == 0, stdout[-4000:]
    epochs, reports = parse(tmp / "logs")
    return {"out": tmp / "out", "logs": tmp / "logs", "epochs": epochs, "reports": reports}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    result = ddp.main(["--out", str(out), *ARGS])  # this process: no process group, world size 1
    assert result["world_size"] == 1
    return {"out": out, "history": result["history"]}


def test_two_processes_equal_one_process_on_the_global_batch(unkilled, one_process):
    two, one = weights(unkilled["out"] / "model.pt"), weights(one_process["out"] / "model.pt")
    assert set(two) == set(one)
    diff = max(float((two[k] - one[k]).abs().max()) for k in one)
    moved = max(float(v.abs().max()) for v in one.values())
    assert diff <= TOLERANCE, diff
    assert moved > 0.1  # the weights did train
    for rank in (0, 1):  # each rank's steps used its half of every global batch
        assert unkilled["reports"][rank]["examples"] == {str(e): STEPS_PER_EPOCH * 50 for e in (1, 2, 3)}
    history = json.loads((unkilled["out"] / "history.json").read_text())
    assert history["world_size"] == 2
    for a, b in zip(history["history"], one_process["history"], strict=True):
        for key in ("loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], abs=TOLERANCE), key
        # accuracy() means each batch in float32, and the two runs cut the validation set differently
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-6)


def test_every_rank_logs_the_same_numbers(unkilled):
    epochs = unkilled["epochs"]
    assert [e["epoch"] for e in epochs[0]] == [1, 2, 3]
    assert epochs[0] == epochs[1]  # exactly: the loss, the validation metrics and the seconds are all-reduced


def test_only_rank_0_writes_files_and_shows_progress(unkilled):
    writes, out = {r: unkilled["reports"][r]["writes"] for r in (0, 1)}, unkilled["out"]
    assert writes[1] == []  # rank 1 opened nothing under --out for writing, created or renamed nothing
    assert {"model.pt", "history.json", f"checkpoints/ckpt-{3 * STEPS_PER_EPOCH:09d}.pt"} <= set(writes[0])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "history.json", "model.pt"]
    saved = sorted(p.name for p in (out / "checkpoints").glob("ckpt-*.pt"))
    assert saved == [f"ckpt-{3 * STEPS_PER_EPOCH - 3:09d}.pt", f"ckpt-{3 * STEPS_PER_EPOCH:09d}.pt"]  # keep=2
    assert "epochs:" in rank_log(unkilled["logs"], 0, "stderr")  # the progress bar
    assert "epochs:" not in rank_log(unkilled["logs"], 1, "stderr")


def test_sigkill_of_one_worker_mid_epoch_then_relaunch_resumes_to_the_same_weights(unkilled, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "paused"
    pause_step = STEPS_PER_EPOCH + 5  # step 20, in the middle of epoch 2; the newest checkpoint is step 18
    proc = torchrun(out, tmp_path / "logs1", {"PAUSE_AT": f"1:{pause_step}", "PAUSE_MARKER": str(marker)})
    deadline = time.monotonic() + 180
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "rank 1 never reached the pause step"
        time.sleep(0.05)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    code, stdout = finish(proc)
    assert code != 0, stdout[-3000:]  # torchrun ended rank 0 as well and failed the job
    epochs, _ = parse(tmp_path / "logs1")
    assert [e["epoch"] for e in epochs[0]] == [1]  # killed in epoch 2
    newest = sorted((out / "checkpoints").glob("ckpt-*.pt"))[-1].name
    assert newest == f"ckpt-{pause_step - 2:09d}.pt"  # mid-epoch: 18 of epochs of 15 steps

    code, stdout = finish(torchrun(out, tmp_path / "logs2"))  # the same command again
    assert code == 0, stdout[-4000:]
    epochs, reports = parse(tmp_path / "logs2")
    assert [e["epoch"] for e in epochs[0]] == [2, 3]  # resumed: epoch 1 was not trained again
    assert epochs[0] == epochs[1] and reports[1]["writes"] == []
    resumed, reference = weights(out / "model.pt"), weights(unkilled["out"] / "model.pt")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)  # bitwise
    mine = json.loads((out / "history.json").read_text())["history"]
    theirs = json.loads((unkilled["out"] / "history.json").read_text())["history"]
    drop = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert drop(mine) == drop(theirs)


# In-process checks of the pieces (no torchrun): the sharding, the refusals, a rank that cannot resume.


@pytest.mark.parametrize("n, batch, world", [(100, 20, 2), (103, 12, 4), (1500, 100, 2)])
def test_sharded_batches_together_are_the_one_process_batches(n, batch, world):
    x, y = torch.arange(n).float()[:, None], torch.arange(n)
    one = TensorBatches(x, y, batch, seed=3, drop_last=True)
    ranks = [
        ShardedBatches(x, y, batch, rank=r, world_size=world, seed=3, drop_last=True) for r in range(world)
    ]
    for _epoch in range(2):
        parts = [list(s) for s in ranks]
        assert all(len(p) == len(one) for p in parts)
        for k, (_xb, yb) in enumerate(one):
            together = torch.cat([parts[r][k][1] for r in range(world)])
            assert sorted(together.tolist()) == sorted(yb.tolist())
            assert all(parts[r][k][1].shape[0] == batch // world for r in range(world))


def test_sharded_batches_resume_mid_epoch_and_keep_the_world_in_their_state():
    x, y = torch.randn(40, 2), torch.arange(40)
    a = ShardedBatches(x, y, 8, rank=1, world_size=2, seed=0)
    it = iter(a)
    next(it), next(it)
    state = a.state_dict()
    assert state["world_size"] == 2 and state["batch"] == 2 and "rank" not in state
    b = ShardedBatches(x, y, 8, rank=1, world_size=2, seed=0)
    b.load_state_dict(state)
    assert [t[1].tolist() for t in b] == [t[1].tolist() for t in it]
    with pytest.raises(ValueError, match="world_size"):
        ShardedBatches(x, y, 8, rank=0, world_size=4, seed=0).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 9, "rank": 0, "world_size": 2}, ValueError, "`batch_size` must be divisible by"),
        ({"batch_size": 8, "rank": 2, "world_size": 2}, ValueError, "`rank` must be an integer"),
        ({"batch_size": 8, "rank": 0, "world_size": 0}, ValueError, "`world_size` must be an integer >= 1"),
        ({"batch_size": 8, "rank": 0, "world_size": 2.0}, TypeError, "`world_size` must be an integer"),
    ],
)
def test_sharded_batches_reject_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ShardedBatches(torch.randn(10, 2), torch.arange(10), **kwargs)


def test_fit_refuses_training_data_that_is_not_sharded_over_the_ranks():
    x, y = torch.randn(10, 2), torch.arange(10)
    with pytest.raises(ValueError, match="`train` must be sharded over the 2 ranks.*Received: train='list'"):
        shard([(x, y)], 0, 2)
    with pytest.raises(ValueError, match="Received: train='DataLoader'"):
        shard(DataLoader(TensorDataset(x, y), batch_size=2), 0, 2)
    with pytest.raises(ValueError, match="a ShardedBatches for rank 1 of 2"):
        shard(ShardedBatches(x, y, 2, rank=0, world_size=2), 1, 2)
    assert isinstance(shard(TensorBatches(x, y, 2), 1, 2), ShardedBatches)


def test_a_torchrun_environment_without_a_process_group_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match="rank 1 of WORLD_SIZE=2.*no process group"):
        rank_and_world()


def test_a_rank_that_cannot_load_the_checkpoint_fails_every_rank(tmp_path):
    from _resume_worker import resume_worker, write_checkpoint

    write_checkpoint(tmp_path)
    expected = r"rank\(s\) \[1\] of 2 could not resume from .*ckpt-.*no such file"
    with pytest.raises(WorkerError, match=expected):
        launch(resume_worker, 2, args=(str(tmp_path),), backend="gloo", timeout=120)


@pytest.mark.book
def test_the_gpu_chapter_ran_torchrun_and_found_one_process_s_weights(results):
    found = results("gpu")["results"]
    assert found["torchrun_max_diff"]["value"] <= TOLERANCE  # a number: the quick and full profiles run it
    assert found["torchrun_same_logs"]["value"] == "identical"
    assert found["torchrun_files"]["value"] == "checkpoints, history.json, model.pt"


def test_batch_norm_in_several_processes_says_which_statistics_it_uses():
    from _resume_worker import batch_norm_worker

    for messages in launch(batch_norm_worker, 2, backend="gloo", timeout=120):
        assert any("each rank normalizes with its own local batch's statistics" in m for m in messages), (
            messages
        )
        assert any("rank 0's running statistics" in m and "SyncBatchNorm" in m for m in messages)
