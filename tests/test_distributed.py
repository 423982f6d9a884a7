"""Data parallelism: shards like DistributedSampler, N gloo processes equal one process, failing workers.

Every launch starts fresh interpreters (about 2 to 4 s each on the 2-core CI machine), so the tests launch
as few times as they can: one launch per world size trains both our version and DDP.
"""

from __future__ import annotations

import time

import _dist_workers as workers
import pytest
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from dltricks.distributed import (
    WorkerError,
    average_gradients,
    broadcast_buffers,
    broadcast_parameters,
    data_parallel_step,
    gradient_bytes,
    launch,
    predicted_step_seconds,
    ring_allreduce_bytes,
    scaling_efficiency,
    shard_indices,
    train_data_parallel,
)

N, GLOBAL_BATCH, EPOCHS, LR = 48, 12, 2, 0.5
GPUS = torch.cuda.device_count()


# ---- sharding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [12, 10, 7, 2])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_those_of_distributed_sampler(n, world_size, shuffle, drop_last):
    if drop_last and n < world_size:  # nothing to share: DistributedSampler gives empty shards, we refuse
        with pytest.raises(ValueError, match=rf"`n` must be an integer >= {world_size}. Received: n={n}"):
            shard_indices(n, 0, world_size, drop_last=True)
        return
    data = list(range(n))
    for epoch in (0, 3):
        for rank in range(world_size):
            sampler = DistributedSampler(
                data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=7, drop_last=drop_last
            )
            sampler.set_epoch(epoch)
            ours = shard_indices(
                n, rank, world_size, epoch=epoch, seed=7, shuffle=shuffle, drop_last=drop_last
            )
            assert ours.tolist() == list(sampler)


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_cover_the_data_exactly_once_per_epoch(world_size):
    n = 60
    orders = []
    for epoch in range(3):
        shards = [shard_indices(n, r, world_size, epoch=epoch, seed=1) for r in range(world_size)]
        assert sorted(torch.cat(shards).tolist()) == list(range(n))  # every index once, over the ranks
        again = [shard_indices(n, r, world_size, epoch=epoch, seed=1) for r in range(world_size)]
        assert all(torch.equal(a, b) for a, b in zip(shards, again))  # reproducible, no communication
        orders.append(torch.cat(shards))
    assert not torch.equal(orders[0], orders[1])  # a new order every epoch


def test_uneven_sizes_are_padded_or_dropped():
    padded = torch.cat([shard_indices(10, r, 3) for r in range(3)]).tolist()
    assert len(padded) == 12 and set(padded) == set(range(10))  # two examples served twice
    dropped = torch.cat([shard_indices(10, r, 3, drop_last=True) for r in range(3)]).tolist()
    assert len(dropped) == len(set(dropped)) == 9


# ---- N processes equal one process ---------------------------------------------------------------------


def _problem():
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(N, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=gen)
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    return model, x, y


def _one_process(model, x, y):
    """SGD with the global batch in one process, on the permutation every rank draws (seed + epoch)."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    steps = 0
    for epoch in range(EPOCHS):
        order = shard_indices(N, 0, 1, epoch=epoch, seed=0)
        for k in range(N // GLOBAL_BATCH):
            b = order[k * GLOBAL_BATCH : (k + 1) * GLOBAL_BATCH]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
            steps += 1
    return model.state_dict(), steps


@pytest.mark.parametrize("world_size", [2, 3])
def test_gloo_processes_equal_one_process_for_ours_and_ddp(world_size):
    model, x, y = _problem()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {"batch_size": GLOBAL_BATCH, "epochs": EPOCHS, "lr": LR, "seed": 0}
    results = launch(workers.ours_and_ddp, world_size, (model, x, y, kwargs), backend="gloo", timeout=120)
    expected, steps = _one_process(model, x, y)
    assert results[0]["steps"] == steps == EPOCHS * N // GLOBAL_BATCH
    for rank, res in enumerate(results):
        for name in ("ours", "ddp"):
            for key, value in expected.items():
                # float64; only the order of the additions differs (all-reduce against one batch's sum).
                torch.testing.assert_close(res[name][key], value, rtol=1e-12, atol=1e-13, msg=f"{name} {key}")
            assert any(not torch.equal(res[name][k], initial[k]) for k in initial), (
                f"rank {rank} did not train"
            )


def test_batch_norm_replicas_stay_identical_and_equal_ddp():
    # Before: each rank's running statistics followed its own shards (no buffer broadcast), so the replicas
    # drifted apart although the docstring promised identical replicas. Now rank 0's buffers reach every
    # rank each step, as DDP's broadcast_buffers=True does.
    _, x, y = _problem()
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3)).double()
    kwargs = {"batch_size": GLOBAL_BATCH, "epochs": EPOCHS, "lr": LR, "seed": 0}
    results = launch(workers.ours_and_ddp, 2, (model, x, y, kwargs), backend="gloo", timeout=120)
    ours0, ours1, ddp0 = results[0]["ours"], results[1]["ours"], results[0]["ddp"]
    assert not torch.equal(ours0["1.running_mean"], model.state_dict()["1.running_mean"])  # it moved
    for key, value in ours0.items():
        assert torch.equal(ours1[key], value), key  # the replicas are identical, buffers included
        torch.testing.assert_close(value, ddp0[key], rtol=1e-12, atol=1e-13, msg=key)  # and equal DDP's


def test_a_branch_unused_on_one_rank_is_refused_or_counted_as_zeros_like_ddp():
    # Before: rank 1 had no gradient for b, so the ranks' all-reduces paired different tensors (b with c)
    # and the launch hung. Now the step is refused on every rank, naming b, or with
    # find_unused_parameters=True equals DDP(find_unused_parameters=True).
    refused = launch(workers.unused_branch, 2, (False,), backend="gloo", timeout=60)
    named = "the gradients of b.weight (1 of 2 ranks), b.bias (1 of 2 ranks) exist on some ranks only"
    for res in refused:
        assert named in res["error"]
        assert "frozen" not in res["error"]  # unused on every rank: consistent, not an error
    counted = launch(workers.unused_branch, 2, (True,), backend="gloo", timeout=60)
    for res in counted:
        for key, value in res["ddp"].items():
            torch.testing.assert_close(res["ours"][key], value, rtol=1e-12, atol=1e-13, msg=key)
    assert torch.equal(counted[0]["ours"]["b.weight"], counted[1]["ours"]["b.weight"])


# ---- the cost model ------------------------------------------------------------------------------------


def test_the_ring_all_reduce_cost_model():
    model = nn.Linear(10, 4)  # 44 float32 parameters
    assert gradient_bytes(model) == 44 * 4 and gradient_bytes(model.double()) == 44 * 8
    assert ring_allreduce_bytes(1000, 1) == 0
    assert ring_allreduce_bytes(1000, 2) == 1000  # 2 (W-1)/W G
    assert ring_allreduce_bytes(1000, 4) == 1500 and ring_allreduce_bytes(1000, 1000) < 2000
    # One rank: just the compute. Perfect overlap: compute / W. Otherwise the communication adds up.
    assert predicted_step_seconds(1.0, 10**6, 1, 1e9) == 1.0
    assert predicted_step_seconds(1.0, 10**6, 4, 1e9, overlap=1.0) == 0.25
    t = predicted_step_seconds(1.0, 10**9, 4, 1e9, latency=1e-3)
    assert t == pytest.approx(0.25 + 6e-3 + 1.5)
    assert scaling_efficiency(1.0, t, 4) == pytest.approx(1 / (4 * t))
    assert scaling_efficiency(1.0, 0.25, 4) == 1.0


def test_the_cost_model_defaults_bounds_and_frozen_parameters():
    # Defaults: no latency and no overlap, so the whole ring time adds up.
    assert predicted_step_seconds(1.0, 10**9, 4, 1e9) == pytest.approx(0.25 + 1.5)
    # Bounds are inclusive where the docstring says so: no gradient, a compute time below 1 s, latency and
    # overlap at their ends, one rank.
    assert ring_allreduce_bytes(0, 2) == 0
    assert predicted_step_seconds(0.5, 0, 2, 1e9, latency=0.0, overlap=0.0) == 0.25
    assert predicted_step_seconds(0.5, 0, 2, 0.5, latency=0.5, overlap=0.0) == pytest.approx(0.25 + 1.0)
    assert scaling_efficiency(0.5, 0.5, 1) == 1.0
    # Only trainable parameters send gradients.
    model = nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 2))  # 44 + 10 parameters
    model[0].requires_grad_(False)
    assert gradient_bytes(model) == 10 * 4


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: ring_allreduce_bytes(1.5, 2), TypeError,
         "`grad_bytes` must be an integer >= 0. Received: grad_bytes=1.5"),
        (lambda: ring_allreduce_bytes(1, 0), ValueError,
         "`world_size` must be an integer >= 1. Received: world_size=0"),
        (lambda: predicted_step_seconds(0.0, 1, 2, 1.0), ValueError,
         "`compute_seconds` must be a real number in (0, inf). Received: compute_seconds=0.0"),
        (lambda: predicted_step_seconds(1.0, 1, 0, 1.0), ValueError,
         "`world_size` must be an integer >= 1. Received: world_size=0"),
        (lambda: predicted_step_seconds(1.0, 1, 2, 0.0), ValueError,
         "`bandwidth` must be a real number in (0, inf). Received: bandwidth=0.0"),
        (lambda: predicted_step_seconds(1.0, 1, 2, 1.0, latency=-1.0), ValueError,
         "`latency` must be a real number in [0, inf). Received: latency=-1.0"),
        (lambda: predicted_step_seconds(1.0, 1, 2, 1.0, overlap=-0.5), ValueError,
         "`overlap` must be a real number in [0, 1]. Received: overlap=-0.5"),
        (lambda: predicted_step_seconds(1.0, 1, 2, 1.0, overlap=1.5), ValueError,
         "`overlap` must be a real number in [0, 1]. Received: overlap=1.5"),
        (lambda: scaling_efficiency(0.0, 1.0, 1), ValueError,
         "`seconds_one` must be a real number in (0, inf). Received: seconds_one=0.0"),
        (lambda: scaling_efficiency(1.0, 0.0, 1), ValueError,
         "`seconds_n` must be a real number in (0, inf). Received: seconds_n=0.0"),
        (lambda: scaling_efficiency(1.0, 1.0, 0), ValueError,
         "`world_size` must be an integer >= 1. Received: world_size=0"),
        (lambda: gradient_bytes("net"), TypeError,
         "`model` must be a torch.nn.Module. Received: model='net'"),
    ],
)  # fmt: skip
def test_the_cost_model_refusals_word_for_word(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message


# ---- failures ------------------------------------------------------------------------------------------


def test_a_failing_worker_fails_the_launcher_with_its_rank_and_error_without_hanging():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"rank 1 failed: ValueError: deliberate failure on rank 1") as info:
        launch(workers.fail_on_rank, 3, (1,), timeout=60)
    assert info.value.rank == 1
    assert time.monotonic() - t0 < 45  # the other ranks, blocked in all_reduce, were ended


def test_a_worker_that_dies_silently_is_named_with_its_exit_code():
    with pytest.raises(WorkerError, match=r"rank 0 failed: .*exited with code 3"):
        launch(workers.exit_on_rank, 2, (0,), timeout=60)


def test_a_hanging_run_ends_at_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[0\] did not finish within timeout=4 s"):
        launch(workers.sleep, 1, (60,), timeout=4)
    assert time.monotonic() - t0 < 15


# ---- bad inputs ----------------------------------------------------------------------------------------


LIN, X, Y = nn.Linear(2, 3), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)

# (call, error, pattern): every message names the argument and what it received.
# fmt: off
BAD_INPUTS = [
    (lambda: launch(3, 2), TypeError, r"`fn` must be .* Received: fn=3"),
    (lambda: launch(lambda r, w: r, 2), TypeError, r"`fn` must be a module-level function \(picklable"),
    (lambda: launch(workers.sleep, GPUS + 1, backend="nccl"), ValueError, r"`backend` must be 'gloo' with"),
    (lambda: launch(workers.sleep, 0), ValueError, r"`world_size` must be an integer >= 1.*=0"),
    (lambda: launch(workers.sleep, 2, backend="mpi"), ValueError, r"`backend` must be one of.*='mpi'"),
    (lambda: launch(workers.sleep, 2, timeout=0), ValueError, r"`timeout` must be .* Received: timeout=0"),
    (lambda: launch(workers.sleep, 2, args=5), TypeError, r"`args` must be a tuple .*args=5"),
    (lambda: launch(workers.sleep, 2, threads=0), ValueError, r"`threads` must be an integer >= 1"),
    (lambda: shard_indices(10, 2, 2), ValueError, r"`rank` must be an integer in \[0, 1\]. Received: rank=2"),
    (lambda: shard_indices(0, 0, 1), ValueError, r"`n` must be an integer >= 1. Received: n=0"),
    (lambda: shard_indices(10, 0, 1, epoch=-1), ValueError, r"`epoch` must be .* Received: epoch=-1"),
    (lambda: shard_indices(10, 0, 1.5), TypeError, r"`world_size` must be an integer.*world_size=1.5"),
    (lambda: shard_indices(10, 0, 1, shuffle=1), TypeError, r"`shuffle` must be True or False"),
    (lambda: gradient_bytes([1]), TypeError, r"`model` must be a torch.nn.Module. Received: model=\[1\]"),
    (lambda: ring_allreduce_bytes(-1, 2), ValueError, r"`grad_bytes` must be an integer >= 0.*=-1"),
    (lambda: predicted_step_seconds(1.0, 1, 2, 0.0), ValueError, r"`bandwidth` must be .*bandwidth=0.0"),
    (lambda: predicted_step_seconds(1.0, 1, 2, 1.0, overlap=2), ValueError, r"`overlap` must be .*overlap=2"),
    (lambda: scaling_efficiency(1.0, 0, 2), ValueError, r"`seconds_n` must be .*seconds_n=0"),
    (lambda: data_parallel_step(LIN, torch.optim.SGD(LIN.parameters()), X, Y, broadcast_buffers=1), TypeError,
     r"`broadcast_buffers` must be True or False. Received: broadcast_buffers=1"),
    (lambda: data_parallel_step("net", torch.optim.SGD(LIN.parameters()), X, Y), TypeError,
     r"`model` must be a torch.nn.Module. Received: model='net'"),
    (lambda: average_gradients(LIN, find_unused_parameters=None), TypeError,
     r"`find_unused_parameters` must be True or False. Received: find_unused_parameters=None"),
    (lambda: broadcast_buffers([1]), TypeError, r"`model` must be a torch.nn.Module. Received: model=\[1\]"),
]
# fmt: on


@pytest.mark.parametrize("call, error, pattern", BAD_INPUTS)
def test_bad_inputs_are_rejected_naming_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_collectives_outside_a_process_group_say_how_to_get_one():
    model, x, y = _problem()
    for call in (
        lambda: average_gradients(model),
        lambda: broadcast_parameters(model),
        lambda: broadcast_buffers(model),
        lambda: data_parallel_step(model, torch.optim.SGD(model.parameters()), x, y),
        lambda: train_data_parallel(0, 1, model, x, y),
    ):
        with pytest.raises(RuntimeError, match="no process group: call this inside a worker"):
            call()


def test_nccl_launch_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (NCCL): the CPU tests above cover the same code with gloo")
    model, x, y = _problem()
    res = launch(train_data_parallel, 1, (model.cuda(), x.cuda(), y.cuda()), backend="nccl", timeout=120)
    assert torch.isfinite(res[0]["losses"]).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(world_size=0), ValueError, "`world_size` must be an integer >= 1. Received: world_size=0"),
        (dict(world_size=2, seed="a"), TypeError, "`seed` must be an integer. Received: seed='a'"),
        (
            dict(world_size=2, drop_last=1),
            TypeError,
            "`drop_last` must be True or False. Received: drop_last=1",
        ),
        (dict(world_size=2, shuffle=1), TypeError, "`shuffle` must be True or False. Received: shuffle=1"),
    ],
)
def test_shard_indices_refusals_word_for_word(kwargs, error, message):
    """Mutation survivors of distributed/sharding.py (issue 25)."""
    with pytest.raises(error) as raised:
        shard_indices(10, 0, **kwargs)
    assert str(raised.value) == message


def test_shard_indices_defaults_are_epoch_0_seed_0_shuffled_and_padded():
    default = shard_indices(10, 1, 4)
    assert torch.equal(default, shard_indices(10, 1, 4, epoch=0, seed=0, shuffle=True, drop_last=False))
    assert not torch.equal(default, shard_indices(10, 1, 4, epoch=1))
    assert not torch.equal(default, shard_indices(10, 1, 4, seed=1))
    assert default.numel() == 3  # ceil(10 / 4): padded, not dropped
