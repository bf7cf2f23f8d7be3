"""Crash-safe checkpoint writes: a loadable checkpoint exists at every instant of a save, versions
are pruned, temporaries of killed writers are cleaned, plain (pre-versioning) checkpoints migrate."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trainer_factories as tf

from dime_offline.checkpoints import (
    load_checkpoint,
    resolve_checkpoint_dir,
    save_checkpoint,
)
from dime_offline.data.spaces import SpaceSpec
from dime_offline.io import (
    atomic_path,
    atomic_write_text,
    versioned_directory,
    versions,
)
from dime_offline.tracking import CSVSink
from dime_offline.trainers.loop import check_run_dir, start_run_dir

SPACES = SpaceSpec(obs_dim=3, action_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
SYSCALLS = ("rename", "replace", "symlink", "fsync")
"""The filesystem steps of a save; a crash is simulated just before each of them."""


def _save(directory: Path, seed: int) -> None:
    agent = tf.tiny_agent(3, 2, seed=seed)
    save_checkpoint(directory, agent, agent.cfg, None, {"seed": seed}, spaces=SPACES)


def _saved_seed(path: Path) -> int:
    return load_checkpoint(path)[2].extra["seed"]


def _weights(path: Path) -> list[torch.Tensor]:
    return list(load_checkpoint(path)[0].policy.state_dict().values())


def _dead_pid() -> int:
    """The pid of a process that has ended (a writer killed with -9 leaves such a pid in its temporaries)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _crash_during_save(directory: Path, seed: int, at_call: int) -> bool:
    """Save in a forked child that dies (``os._exit``, no clean-up) at its ``at_call``-th filesystem
    step; True when the save got that far (False: it finished first)."""
    pid = os.fork()
    if pid == 0:  # the child: count the steps, die at the chosen one
        calls = 0

        def dying(original):
            def step(*args, **kwargs):
                nonlocal calls
                calls += 1
                if calls == at_call:
                    os._exit(17)
                return original(*args, **kwargs)
            return step

        for name in SYSCALLS:
            setattr(os, name, dying(getattr(os, name)))
        try:
            _save(directory, seed)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 17


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to kill a writer mid-save")
@pytest.mark.parametrize("layout", ["versioned", "plain"])
def test_a_writer_killed_at_any_step_leaves_a_loadable_checkpoint(tmp_path: Path, layout: str) -> None:
    run = tmp_path / "run"
    _save(run / "checkpoint", seed=1)
    if layout == "plain":  # a checkpoint written before versioning: a plain directory
        pinned = resolve_checkpoint_dir(run)
        (run / "checkpoint").unlink()
        shutil.move(pinned, run / "checkpoint")
    old = _weights(run)
    crashes = 0
    for at_call in range(1, 100):
        if not _crash_during_save(run / "checkpoint", seed=2, at_call=at_call):
            break
        crashes += 1
        seed = _saved_seed(run)  # loadable after every crash: the old or the new checkpoint, whole
        assert seed in (1, 2)
        if seed == 1:
            assert all(torch.equal(a, b) for a, b in zip(old, _weights(run), strict=True))
        else:  # the new one is complete; back to the old state for the next crash point
            shutil.rmtree(tmp_path)
            _save(run / "checkpoint", seed=1)
            if layout == "plain":
                pinned = resolve_checkpoint_dir(run)
                (run / "checkpoint").unlink()
                shutil.move(pinned, run / "checkpoint")
    assert crashes >= 5  # every step of the save was hit (files, directories, renames, link)
    _save(run / "checkpoint", seed=3)  # the next save cleans the killed writers' temporaries
    assert _saved_seed(run) == 3
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    assert len(versions(run / "checkpoint")) <= 2


def test_saves_switch_a_link_and_keep_the_two_newest_versions(tmp_path: Path) -> None:
    target = tmp_path / "run" / "checkpoint"
    for seed in range(4):
        _save(target, seed)
    assert target.is_symlink() and os.readlink(target) == "checkpoint.v000004"
    assert [n for n, _ in versions(target)] == [3, 4]
    assert resolve_checkpoint_dir(tmp_path / "run") == tmp_path / "run" / "checkpoint.v000004"
    assert resolve_checkpoint_dir(target) == tmp_path / "run" / "checkpoint.v000004"
    assert _saved_seed(tmp_path / "run") == 3
    # A lost link (a crash while an old plain checkpoint became a version) falls back to the newest version.
    target.unlink()
    assert _saved_seed(tmp_path / "run") == 3 and _saved_seed(target) == 3


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    stale = tmp_path / f".checkpoint.{_dead_pid()}.abc.tmp"
    live = tmp_path / f".checkpoint.{os.getppid()}.def.tmp"  # a running process (this one's parent)
    for path in (stale, live):
        path.mkdir()
        (path / "state.pt").write_bytes(b"half")
    _save(target, seed=0)
    assert not stale.exists() and live.exists()
    stale_file = tmp_path / f".summary.json.{_dead_pid()}.xyz.tmp"
    stale_file.mkdir()
    atomic_write_text(tmp_path / "summary.json", "{}\n")  # plain atomic writes clean theirs too
    assert not stale_file.exists() and (tmp_path / "summary.json").read_text() == "{}\n"


def test_a_new_run_removes_every_version_and_an_old_run_is_recognised_by_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _save(out / "checkpoint", seed=0)
    _save(out / "best", seed=0)
    (out / "checkpoint").unlink()  # even without its link the run directory holds a run
    with pytest.raises(Exception, match="already holds a run"):
        check_run_dir(str(out), overwrite=False)
    (out / "notes.txt").write_text("mine")
    start_run_dir(check_run_dir(str(out), overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"),
     RuntimeError("Can't decrement id ref count (file write failed: ..., errno = 28, error message = 'No space left on device')")],
    ids=["pyarrow-or-buffered-file", "h5py"],
)
def test_a_full_disk_reported_without_a_file_name_names_the_target(tmp_path: Path, failure: Exception) -> None:
    """Libraries report a failed write by its errno only; the error then names the output (the CLI's line)."""
    target = tmp_path / "data.parquet"
    target.write_text("the old file")
    with pytest.raises(OSError) as caught, atomic_path(target) as staging:
        staging.write_text("half")
        raise failure
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    assert target.read_text() == "the old file" and os.listdir(tmp_path) == ["data.parquet"]
    with pytest.raises(OSError) as caught, versioned_directory(tmp_path / "checkpoint"):
        raise failure
    assert caught.value.filename == str(tmp_path / "checkpoint") and os.listdir(tmp_path) == ["data.parquet"]
    with pytest.raises(RuntimeError, match="a bug"), atomic_path(target):
        raise RuntimeError("a bug")  # anything else passes unchanged


def test_metrics_that_do_not_fit_name_the_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = CSVSink(tmp_path / "metrics.csv")

    class FullDisk:
        closed = False

        def writerow(self, row: object) -> None:
            pass

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        close = flush

    sink._file = sink._writer = FullDisk()  # type: ignore[assignment]
    for call in (lambda: sink.write(1, {"train/x": 1.0}), sink.close):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.filename == str(tmp_path / "metrics.csv") and caught.value.errno == errno.ENOSPC
