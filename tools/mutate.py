"""Mutation testing of the core modules with mutmut: do their own unit tests catch small planted bugs?

    python tools/mutate.py [MODULE ...] [--survivors] [--recheck] [--build-dir _build/mutate]

For each core module (all of them without arguments), mutmut plants one small bug at a time (a ``<`` for a
``<=``, a ``1`` for a ``2``, a dropped argument, ...) and runs that module's own unit tests against it; a
mutant no test notices "survived". Each module runs in a work dir of its own under ``--build-dir``: a copy
of the package (as ``src/dltricks``, where mutmut puts it first on ``sys.path``) and of ``tests/``, with the
mutmut configuration written into that copy's ``pyproject.toml``, so nothing lands in the repository. Tests
marked ``book`` or ``keras`` never run here, and one process runs at a time (``--max-children 1``).

Mutants that cannot change behavior (equivalent mutants) are listed in :data:`EQUIVALENT` with the reason,
and left out of the score: score = killed / (mutants - equivalent). Timeouts count as killed. The table at
the end gives each module's score; ``--survivors`` also prints the diff of every surviving mutant, and
``--recheck`` reruns only the previous run's survivors against the current tests (after adding tests).
Not run in CI: ``make mutate`` takes a few minutes per module.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "companion" / "dltricks"

# module -> (files of the package to mutate, the unit tests that are that module's own)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "clip": (["clip.py"], ["tests/test_clip.py"]),
    "adam": (["optim/adam.py"], ["tests/test_optim.py"]),
    "sgd": (["optim/sgd.py"], ["tests/test_optim.py"]),
    "early_stopping": (["early_stopping.py"], ["tests/test_early_stopping.py"]),
    "schedules": (
        ["schedules/functions.py", "schedules/plateau.py", "schedules/callbacks.py"],
        ["tests/test_schedules.py"],
    ),
    "splits": (["splits.py"], ["tests/test_splits.py"]),
    "checkpoint_file": (["checkpoint_file.py"], ["tests/test_checkpoint_file.py", "tests/test_faults.py"]),
    "padding": (["perf/padding.py"], ["tests/test_perf.py"]),
    "sharding": (["distributed/sharding.py"], ["tests/test_distributed.py"]),
    "amp": (["perf/amp.py"], ["tests/test_perf.py"]),
    "nonfinite": (["nonfinite.py"], ["tests/test_nonfinite.py", "tests/test_sync_every.py"]),
    "distill": (["distill.py"], ["tests/test_distill.py"]),
    "rates": (["transfer/rates.py"], ["tests/test_transfer.py"]),
    "cut": (["transfer/cut.py"], ["tests/test_transfer.py", "tests/test_transfer_modes.py"]),
    "freeze": (["transfer/freeze.py"], ["tests/test_transfer.py", "tests/test_transfer_modes.py"]),
    "autoencoder": (["transfer/autoencoder.py"], ["tests/test_transfer.py"]),
    "compare": (["compare.py"], ["tests/test_compare.py"]),
    "agreement": (["agreement.py"], ["tests/test_agreement.py"]),
    "tuning": (["tuning.py"], ["tests/test_tuning.py"]),
    "cost": (
        ["distributed/cost.py"],
        [
            "tests/test_distributed.py::test_the_ring_all_reduce_cost_model",
            "tests/test_distributed.py::test_bad_inputs_are_rejected_naming_the_argument",
            "tests/test_distributed.py::test_the_cost_model_defaults_bounds_and_frozen_parameters",
            "tests/test_distributed.py::test_the_cost_model_refusals_word_for_word",
        ],
    ),
}

# Equivalent mutants: mutant name -> why no test can tell it from the original. A name that no longer
# exists, or that a test kills, is reported, so the list cannot go stale silently. "One device" marks a
# mutant that only a run with tensors on two devices (CPU and GPU) could tell apart; the tests here run on
# one device, so it is left out of the score too, and listed so that a GPU run can take it up.
_NONE_IS_FALSE = "min_inclusive=None: check_float only tests its truth value, and None is false like False"
_FALLBACK = "hasattr(torch, ...) made false: the fallback loop for old torch gives the same numbers"
_UNREACHABLE = "inside the fallback for torch without _foreach_* (never taken: torch>=2.2 has them)"
_ONE_DEVICE = "one device: .to(device) / .to('cpu') is a no-op when every tensor is already on the CPU"
_SORT_KIND = "numpy reads a sort kind by its first letter, case-insensitively: 'STABLE' is 'stable'"
_TRUNCATE = "x / k stored into an int64 array truncates, the same as x // k for counts >= 0 below 2**53"
_TRAMPOLINE = (
    "not equivalent, untestable here: mutmut's trampolines add stack frames, so a warning's stacklevel is"
    " checked only outside mutmut (test_latest_warns_at_the_callers_line_and_skips_to_a_good_file)"
)
_PRESERVE = "zeros_like's memory_format defaults to torch.preserve_format (also when passed None)"
_MAX_NONE = _NONE_IS_FALSE.replace("min_", "max_")
_LAST_PHASE = "the last phase ends at total_steps - 1 and t < total_steps here, so t <= end_step holds anyway"
_NOT_REACHED = "the message of the AssertionError after the loop, which the last phase always returns from"
_COS_END = "t > n for t >= n: at t == n the cosine gives min_lr exactly (math.cos(math.pi) == -1.0)"
_RESET_FIRST = "_recorded starts as '' instead of None: on_train_begin resets it before any use"
_DEAD_STEP = "_step is only given names that list_checkpoints matched: its no-match branch is dead code"
_ZERO_WEIGHT = "a term of weight 0 (alpha 0 or 1) is multiplied by 0: 0 * 1.0 == 0 * 0.0 (no tensor computed)"
_NEVER_EMPTY = (
    "the `else 0` for empty labels is dead: labels must have teacher_logits' length, and that is >= 1"
)
_INT_COUNTS = "counts as an int array instead of float: d is float, so every product and sum is float anyway"
_DOTTED_HEAD = (
    "`dot or head in children` for `dot and ...`: a dotted name's head is always a child (named_parameters'"
    " prefixes), and a root parameter cannot share a child's name (register_parameter refuses it)"
)
_CAT_PROMOTES = (
    "one side's .to(dtype) dropped: torch.cat promotes to the wider dtype, and `dtype` is at least as wide"
    " as both the labels' (integers up to 2**24, else float64) and the logits' (promote_types) dtypes"
)
_WHERE_PROMOTES = (
    "DeviceSums.first made in the default float32: torch.where(is_first, <float64 index and loss>, first)"
    " promotes to float64, so the first bad loss is stored in float64 anyway, and only NaN (exact in both) is"
    " ever held in float32; read() concatenates with the float64 sums"
)
_GETATTR_NONE = "getattr(..., None) for getattr(..., False) under bool(): None is false like False"
_ROOT_SUBMODULE = "get_submodule('') returns the module itself, so `if parent_name or True` gives `new` too"
_TRACED_NONE = "_traced starts as None instead of False: it is only read as `not self._traced`"
_RECURSE_NONE = (
    "parameters(recurse=None) or buffers(recurse=None): torch reads `recurse` only for its truth value, and"
    " None is false"
)
_FILLED = (
    "tune's score arrays are created with another fill (None): every cell is written by train's output"
    " before it is read, and from_scores converts both to float (np.full_like(float array, None) is NaN)"
)
_ASSERT_FOR_MYPY = (
    "`assert t is not None or b is not None` for `and`: reached only when both are not None (fail raised"
    " otherwise); the assert is there for the type checker"
)
_DEFAULT_CATEGORY = "warnings.warn's category given as None or left out: both mean UserWarning"
_HANDLE_SET = "handle starts as '' instead of None: it is the hook's handle before any optimizer can step"
_FIT_METRICS = "fit's metrics ({} or None, the default) are only computed for val or eval_train: neither here"
_BATCHES_CHECK = "batch_size's minimum dropped: TensorBatches refuses the same value with the same message"
EQUIVALENT: dict[str, str] = {
    **{
        f"dltricks.distributed.cost.x_{fn}__mutmut_{n}": _NONE_IS_FALSE
        for fn, n in (
            ("predicted_step_seconds", 7),
            ("predicted_step_seconds", 30),
            ("scaling_efficiency", 5),
            ("scaling_efficiency", 18),
        )
    },
    **{
        f"dltricks.distributed.cost.x_predicted_step_seconds__mutmut_{n}": "world_size's minimum dropped:"
        " ring_allreduce_bytes, called next with the same world_size, refuses 0 with the same message"
        for n in (19, 22)
    },
    "dltricks.distributed.sharding.x_shard_indices__mutmut_108": "`total >= n` for `total > n`: at total == n"
    " the padding concatenates one copy of the order and keeps its first n, the same indices",
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_33": _NONE_IS_FALSE,
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_45": _BATCHES_CHECK,
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_48": _BATCHES_CHECK,
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_53": _ONE_DEVICE,
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_59": _ONE_DEVICE,
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_105": _ONE_DEVICE + " (device dropped)",
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_97": _FIT_METRICS,
    "dltricks.transfer.autoencoder.x_pretrain_autoencoder__mutmut_104": _FIT_METRICS,
    "dltricks.transfer.freeze.x__watch_optimizers__mutmut_22": _DEFAULT_CATEGORY,
    "dltricks.transfer.freeze.x__watch_optimizers__mutmut_25": _DEFAULT_CATEGORY,
    "dltricks.transfer.freeze.x__watch_optimizers__mutmut_26": _TRAMPOLINE,
    "dltricks.transfer.freeze.x__watch_optimizers__mutmut_33": _TRAMPOLINE,
    "dltricks.transfer.freeze.x__watch_optimizers__mutmut_7": _HANDLE_SET,
    "dltricks.transfer.freeze.x_unfreeze__mutmut_33": _NONE_IS_FALSE,
    "dltricks.compare.xǁPairedComparisonǁdescribe__mutmut_9": "lstrip('XX+XX') strips the characters X and +:"
    " a formatted number never starts with X, so it strips the same '+' as lstrip('+')",
    "dltricks.tuning.x_paired_outcomes__mutmut_53": _ASSERT_FOR_MYPY,
    "dltricks.tuning.x_tune__mutmut_24": _FILLED,
    "dltricks.tuning.x_tune__mutmut_29": _FILLED,
    "dltricks.transfer.cut.x_replace_head__mutmut_63": _ROOT_SUBMODULE,
    "dltricks.transfer.cut.xǁFeatureExtractorǁ__init____mutmut_87": _TRACED_NONE,
    "dltricks.transfer.cut.xǁFeatureExtractorǁ_adopt__mutmut_16": _RECURSE_NONE,
    "dltricks.transfer.cut.xǁFeatureExtractorǁ_adopt__mutmut_18": _RECURSE_NONE,
    "dltricks.nonfinite.x_skips_on_device__mutmut_4": _GETATTR_NONE,
    "dltricks.nonfinite.xǁDeviceSumsǁ_reset__mutmut_13": _WHERE_PROMOTES + " (dtype=None)",
    "dltricks.nonfinite.xǁDeviceSumsǁ_reset__mutmut_17": _WHERE_PROMOTES + " (dtype dropped)",
    "dltricks.distill.xǁDistillationLossǁ__call____mutmut_22": _ZERO_WEIGHT,
    "dltricks.distill.xǁDistillationLossǁ__call____mutmut_32": _ZERO_WEIGHT,
    "dltricks.distill.x__check_temperature__mutmut_4": _NONE_IS_FALSE,
    "dltricks.distill.x_pack_targets__mutmut_39": _NEVER_EMPTY,
    "dltricks.distill.x_pack_targets__mutmut_41": _NEVER_EMPTY,
    "dltricks.distill.x_pack_targets__mutmut_70": _CAT_PROMOTES,
    "dltricks.distill.x_pack_targets__mutmut_71": _CAT_PROMOTES,
    "dltricks.compare.x_compare_paired__mutmut_55": _NONE_IS_FALSE,
    "dltricks.compare.x_compare_paired__mutmut_56": _MAX_NONE,
    "dltricks.compare.xǁPairedOutcomesǁ_values__mutmut_10": _INT_COUNTS,
    "dltricks.compare.xǁPairedOutcomesǁ_values__mutmut_12": _INT_COUNTS,
    "dltricks.compare.xǁPairedOutcomesǁfrom_correct__mutmut_66": "arrays[0] and arrays[1] have one shape here"
    " (checked just above), so either gives n_seeds",
    "dltricks.agreement.x_agreement__mutmut_65": _ONE_DEVICE + " (the device given as None)",
    "dltricks.agreement.x_agreement__mutmut_67": _ONE_DEVICE,
    "dltricks.agreement.x_agreement__mutmut_72": _ONE_DEVICE + " (the device given as None)",
    "dltricks.agreement.x_agreement__mutmut_74": _ONE_DEVICE,
    "dltricks.transfer.rates.x_discriminative_rates__mutmut_5": _NONE_IS_FALSE,
    "dltricks.transfer.rates.x_discriminative_rates__mutmut_19": _NONE_IS_FALSE,
    "dltricks.transfer.rates.x_param_groups__mutmut_31": _NONE_IS_FALSE,
    "dltricks.transfer.rates.x_param_groups__mutmut_58": _NONE_IS_FALSE,
    "dltricks.transfer.rates.x_param_groups__mutmut_76": _DOTTED_HEAD,
    "dltricks.clip.x__max_norm__mutmut_8": _NONE_IS_FALSE,
    "dltricks.clip.x_clip_vector_by_norm__mutmut_18": _NONE_IS_FALSE,
    "dltricks.clip.x_clip_vector_by_value__mutmut_18": _NONE_IS_FALSE,
    "dltricks.clip.xǁGradientClippingǁ__init____mutmut_18": _NONE_IS_FALSE,
    "dltricks.clip.x__norms__mutmut_1": _FALLBACK,
    "dltricks.clip.x__norms__mutmut_5": _FALLBACK,
    "dltricks.clip.x__norms__mutmut_6": _FALLBACK,
    "dltricks.clip.x__scale___mutmut_9": _FALLBACK,
    "dltricks.clip.x__scale___mutmut_13": _FALLBACK,
    "dltricks.clip.x__scale___mutmut_14": _FALLBACK,
    "dltricks.clip.x__norms__mutmut_9": _UNREACHABLE,
    "dltricks.clip.x__scale___mutmut_19": _UNREACHABLE,
    "dltricks.clip.x__scale___mutmut_8": _ONE_DEVICE,
    "dltricks.clip.x__total_norm__mutmut_1": _ONE_DEVICE,
    "dltricks.clip.x__total_norm__mutmut_5": _ONE_DEVICE,
    "dltricks.early_stopping.xǁEarlyStoppingǁload_state_dict__mutmut_21": _ONE_DEVICE,
    "dltricks.early_stopping.xǁEarlyStoppingǁload_state_dict__mutmut_23": _ONE_DEVICE + " (copy=True kept)",
    "dltricks.early_stopping.xǁEarlyStoppingǁon_epoch_end__mutmut_15": _ONE_DEVICE,
    "dltricks.early_stopping.xǁEarlyStoppingǁon_epoch_end__mutmut_17": _ONE_DEVICE + " (copy=True kept)",
    "dltricks.splits.x_train_val_split__mutmut_12": _NONE_IS_FALSE,
    "dltricks.splits.x_train_val_split__mutmut_13": _MAX_NONE,
    "dltricks.splits.x__largest_remainder__mutmut_12": _SORT_KIND,
    "dltricks.splits.x_subsample__mutmut_72": _SORT_KIND,
    "dltricks.splits.x_subsample__mutmut_85": _TRUNCATE,
    "dltricks.splits.x__take__mutmut_1": _ONE_DEVICE,
    "dltricks.checkpoint_file.x__newest_good__mutmut_39": _TRAMPOLINE,
    "dltricks.checkpoint_file.x__newest_good__mutmut_40": _TRAMPOLINE,
    "dltricks.checkpoint_file.x__step__mutmut_3": _DEAD_STEP,
    "dltricks.checkpoint_file.x__step__mutmut_5": _DEAD_STEP,
    "dltricks.checkpoint_file.x__step__mutmut_6": _DEAD_STEP,
    "dltricks.checkpoint_file.x_load_checkpoint__mutmut_39": "< and <= agree inside `if len(body) != size`",
    "dltricks.checkpoint_file.x_load_checkpoint__mutmut_50": _ONE_DEVICE + " (map_location='cpu' dropped)",
    "dltricks.checkpoint_file.x_load_checkpoint__mutmut_53": _ONE_DEVICE + " (map_location='cpu' dropped)",
    "dltricks.optim.adam.xǁAdamǁ_init_state__mutmut_8": _PRESERVE,
    "dltricks.optim.adam.xǁAdamǁ_init_state__mutmut_10": _PRESERVE,
    "dltricks.optim.adam.xǁAdamǁ_init_state__mutmut_15": _PRESERVE,
    "dltricks.optim.adam.xǁAdamǁ_init_state__mutmut_17": _PRESERVE,
    "dltricks.optim.adam.xǁAdamǁ_init_state__mutmut_24": _PRESERVE,
    "dltricks.optim.adam.xǁAdamǁ_init_state__mutmut_26": _PRESERVE,
    "dltricks.schedules.functions.x_power_decay__mutmut_17": _NONE_IS_FALSE,
    "dltricks.schedules.functions.x_exponential_decay__mutmut_15": _NONE_IS_FALSE,
    "dltricks.schedules.functions.x_exponential_decay__mutmut_28": _NONE_IS_FALSE,
    "dltricks.schedules.functions.x_one_cycle_momentum__mutmut_23": _MAX_NONE,
    "dltricks.schedules.functions.x_one_cycle_momentum__mutmut_39": _MAX_NONE,
    "dltricks.schedules.plateau.xǁReduceOnPlateauǁ__init____mutmut_23": _NONE_IS_FALSE,
    "dltricks.schedules.plateau.xǁReduceOnPlateauǁ__init____mutmut_24": _MAX_NONE,
    "dltricks.schedules.functions.x__one_cycle_interp__mutmut_11": _LAST_PHASE,
    "dltricks.schedules.functions.x__one_cycle_interp__mutmut_35": _NOT_REACHED,
    "dltricks.schedules.functions.x__one_cycle_interp__mutmut_36": _NOT_REACHED,
    "dltricks.schedules.functions.x__one_cycle_interp__mutmut_37": _NOT_REACHED,
    "dltricks.schedules.functions.x_cosine_with_warmup__mutmut_67": _COS_END,
    "dltricks.schedules.callbacks.xǁScheduleǁ__init____mutmut_66": _RESET_FIRST,
}

KILLED = {1, 3, 24, -24, 36, 152, 255, -9, -11}  # mutmut's exit codes for killed, timeout and crash


def _prepare(name: str, work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, work / "src" / "dltricks", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    _write_config(name, work)


def _write_config(name: str, work: Path) -> None:
    files, tests = MODULES[name]
    config = {
        "source_paths": ["src/dltricks"],
        "only_mutate": [f"src/dltricks/{f}" for f in files],
        "pytest_add_cli_args": ["-p", "no:xdist", "-p", "no:cacheprovider", "-m", "not book and not keras"],
        "pytest_add_cli_args_test_selection": tests,
        "use_git_change_detection": False,
        # Workers fork from a server that only collected the tests: forked from the process that ran them,
        # they would inherit its caches (functools.cache'd trajectories), computed with the original code.
        "process_isolation": "forkserver",
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (work / "pyproject.toml").write_text(text + "\n".join(lines) + "\n", encoding="utf-8")


def _mutmut(work: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("DLTRICKS_THREADS", "1")
    return subprocess.run([str(exe), *args], cwd=work, env=env, text=True, capture_output=capture)


def _exit_codes(name: str, work: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for f in MODULES[name][0]:
        meta = work / "mutants" / "src" / "dltricks" / f"{f}.meta"
        codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return codes


def _refresh_tests(name: str, work: Path) -> None:
    """Put the repository's current tests into an existing work dir and drop mutmut's test-coverage cache,
    so that new tests are mapped to the functions they call."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tests in (work / "tests", work / "mutants" / "tests"):
        shutil.rmtree(tests, ignore_errors=True)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    _write_config(name, work)


def run_module(name: str, build_dir: Path, survivors: bool, recheck: bool = False) -> dict:
    work = build_dir / name
    if recheck and (work / "mutants").is_dir():
        # Only the mutants that survived the last run, against the current tests (much faster than all).
        alive = [m for m, c in _exit_codes(name, work).items() if c not in KILLED and m not in EQUIVALENT]
        _refresh_tests(name, work)
        proc = _mutmut(work, "run", "--max-children", "1", *alive) if alive else None
    else:
        _prepare(name, work)
        proc = _mutmut(work, "run", "--max-children", "1")
    if proc is not None and proc.returncode != 0:
        raise SystemExit(f"mutmut failed for {name} (exit {proc.returncode}); see {work}")
    codes = _exit_codes(name, work)
    equivalent = [m for m in codes if m in EQUIVALENT]
    stale = [m for m in EQUIVALENT if m.startswith(_prefixes(name)) and m not in codes]
    killed_equivalent = [m for m in equivalent if codes[m] in KILLED]
    counted = {m: c for m, c in codes.items() if m not in EQUIVALENT}
    killed = sum(c in KILLED for c in counted.values())
    alive = sorted(m for m, c in counted.items() if c not in KILLED)
    if survivors:
        for m in alive:
            print(_mutmut(work, "show", m, capture=True).stdout)
    return {
        "module": name,
        "mutants": len(codes),
        "equivalent": len(equivalent),
        "killed": killed,
        "counted": len(counted),
        "survived": alive,
        "stale_equivalent": stale + killed_equivalent,
    }


def _prefixes(name: str) -> tuple[str, ...]:
    return tuple("dltricks." + f.removesuffix(".py").replace("/", ".") + "." for f in MODULES[name][0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)} (default: all)"
    )
    parser.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "_build" / "mutate")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="rerun only the previous run's survivors (in --build-dir) against the current tests",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    build_dir = args.build_dir.resolve()
    rows = [run_module(m, build_dir, args.survivors, args.recheck) for m in args.modules or MODULES]
    print(f"\n{'module':<16} {'killed':>7} {'counted':>8} {'equiv.':>7} {'score':>7}")
    for r in rows:
        score = r["killed"] / r["counted"] if r["counted"] else 1.0
        print(f"{r['module']:<16} {r['killed']:>7} {r['counted']:>8} {r['equivalent']:>7} {score:>7.1%}")
    for r in rows:
        if r["survived"]:
            print(f"{r['module']}: survived: {' '.join(r['survived'])}")
        if r["stale_equivalent"]:
            stale = " ".join(r["stale_equivalent"])
            print(f"{r['module']}: listed as equivalent but missing or killed: {stale}")
    low = [r["module"] for r in rows if r["counted"] and r["killed"] / r["counted"] < 0.95]
    if low:
        print(f"below 95% of the non-equivalent mutants caught: {', '.join(low)}")
    return 1 if low else 0


if __name__ == "__main__":
    raise SystemExit(main())
