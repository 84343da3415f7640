"""Run outputs: saving (netCDF only, atomic, group-readable, stale temporaries cleaned),
figures written atomically, and the provenance every dataset carries."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sgdsde as s
from sgdsde.analysis.plots import plot_runs, save_figure
from sgdsde.data import RegressionData
from sgdsde.random import as_seed_sequence, seed_attrs
from sgdsde.run.dataset import load_dataset, save_dataset
from sgdsde.run.outputs import (
    STALE_AFTER_S,
    clean_stale_temporaries,
    host_tag,
    new_temporary,
    write_atomically,
)
from sgdsde.run.provenance import (
    SOURCE_ROOT,
    data_config,
    data_fingerprint,
    dependency_version,
    environment_attrs,
    git_commit,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run():
    model = s.make_model("diagonal_linear", d=5)
    data = s.sparse_regression(n=8, d=5, k=2, n_test=4)
    return s.simulate_sgd(model, data, [0.1, 0.05], n_steps=20, run_names=["a", "b"])


# ------------------------------------------------------------------ save_dataset


def test_save_dataset_requires_a_netcdf_suffix(run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for target in (notes, tmp_path / "run", tmp_path / "run.h5"):
        with pytest.raises(ValueError, match=r"ending in \.nc"):
            save_dataset(run, target)
    assert notes.read_text() == "my notes"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_save_dataset_replaces_only_netcdf_files(run, tmp_path):
    notes = tmp_path / "notes.nc"
    notes.write_text("not a dataset")
    with pytest.raises(ValueError, match="is not a netCDF file: refusing to replace it"):
        save_dataset(run, notes)
    assert notes.read_text() == "not a dataset"
    (tmp_path / "dir.nc").mkdir()
    with pytest.raises(ValueError, match="is not a file"):
        save_dataset(run, tmp_path / "dir.nc")
    target = save_dataset(run, tmp_path / "run.nc")
    save_dataset(run.isel(step=[0, -1]), target)  # our own netCDF: replaced
    assert load_dataset(target).sizes["step"] == 2


def test_saved_files_are_group_readable(run, tmp_path):
    old = os.umask(0o022)
    try:
        path = save_dataset(run, tmp_path / "r.nc")
        png = save_figure(plot_runs(run), tmp_path / "r.png")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert png.stat().st_mode & 0o777 == 0o644
    old = os.umask(0o077)  # a user who asks for private files gets them
    try:
        assert save_dataset(run, tmp_path / "p.nc").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_load_dataset_indexes_runs(run, tmp_path):
    loaded = load_dataset(save_dataset(run, tmp_path / "r.nc"))
    np.testing.assert_array_equal(loaded.sel(run="b").train_loss, run.train_loss[1])
    np.testing.assert_array_equal(run.sel(run="a").train_loss, run.train_loss[0])


# ------------------------------------------------------------------ temporaries


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temporary_name(target: str, host: str, pid: int) -> str:
    return f".{target}.sgdsde-{host}-{pid}-0123abcd.tmp"


def test_stale_temporaries_of_our_naming_are_cleaned_on_the_next_write(run, tmp_path):
    here = host_tag()
    dead = tmp_path / temporary_name("x.nc", here, dead_pid())
    alive = tmp_path / temporary_name("x.nc", here, os.getpid())
    other_host_recent = tmp_path / temporary_name("x.nc", "elsewhere", 1)
    other_host_old = tmp_path / temporary_name("y.png", "elsewhere", 1)
    not_ours = [tmp_path / ".x.nc.abc123.tmp", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in [dead, alive, other_host_recent, other_host_old, *not_ours]:
        path.write_bytes(b"partial")
    day_ago = time.time() - STALE_AFTER_S - 60
    os.utime(other_host_old, (day_ago, day_ago))
    save_dataset(run, tmp_path / "r.nc")
    left = set(os.listdir(tmp_path))
    assert dead.name not in left and other_host_old.name not in left
    assert {alive.name, other_host_recent.name, *(p.name for p in not_ours)} <= left
    assert clean_stale_temporaries(tmp_path) == []


def test_a_killed_writer_leaves_only_a_temporary_which_the_next_write_removes(run, tmp_path):
    """SIGKILL during a save: the final name never appears half-written; the temporary
    is ours by name and goes at the next write into that folder."""
    code = (
        "import sys, time; from sgdsde.run.outputs import write_atomically\n"
        "def slow(tmp):\n"
        "    tmp.write_bytes(b'half')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        "write_atomically(sys.argv[1], slow)\n"
    )
    target = tmp_path / "killed.nc"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (left,) = os.listdir(tmp_path)
    assert left.startswith(".killed.nc.sgdsde-") and left.endswith(".tmp")
    assert not target.exists()
    save_dataset(run, tmp_path / "next.nc")
    assert os.listdir(tmp_path) == ["next.nc"]


def test_a_failed_write_leaves_nothing(tmp_path):
    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "f.nc", fail)
    assert os.listdir(tmp_path) == []


def test_figures_are_written_atomically(run, tmp_path, monkeypatch):
    import sgdsde.analysis.plots as plots

    path = tmp_path / "fig.png"
    save_figure(plot_runs(run), path)
    before = path.read_bytes()

    def half(fig, file, fmt="png"):
        Path(file).write_bytes(before[:100])
        raise KeyboardInterrupt  # interrupted while rendering

    monkeypatch.setattr(plots, "write_figure", half)
    with pytest.raises(KeyboardInterrupt):
        plot_runs(run, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["fig.png"]


def test_new_temporaries_are_hidden_and_exclusive(tmp_path):
    a, b = new_temporary(tmp_path / "r.nc"), new_temporary(tmp_path / "r.nc")
    assert a != b and a.name.startswith(".r.nc.sgdsde-") and a.stat().st_size == 0
    assert f"-{os.getpid()}-" in a.name


# ------------------------------------------------------------------ provenance


def test_every_run_records_its_environment(run):
    attrs = run.attrs
    created = datetime.datetime.fromisoformat(attrs["created"])
    assert created.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(0) <= now - created < datetime.timedelta(minutes=10)
    assert attrs["host"] == socket.gethostname()
    assert attrs["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert attrs["numpy_version"] == np.__version__
    assert attrs["torch_version"].split("+")[0] == importlib.metadata.version("torch").split("+")[0]
    assert attrs["command_line"] == shlex.join(sys.argv)
    assert attrs["sgdsde_version"] == s.__version__


def test_provenance_survives_a_save(run, tmp_path):
    loaded = load_dataset(save_dataset(run, tmp_path / "r.nc"))
    for key in ("created", "host", "numpy_version", "torch_version", "command_line"):
        assert loaded.attrs[key] == run.attrs[key]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_is_the_checkouts_head():
    if not (SOURCE_ROOT / ".git").exists():
        pytest.skip("not running from a git checkout")
    head = subprocess.run(
        ["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert git_commit(SOURCE_ROOT) == head == environment_attrs()["git_commit"]


def make_repo(root: Path, head: str, refs: dict[str, str], packed: str = "") -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head)
    for ref, commit in refs.items():
        (git / ref).write_text(commit + "\n")
    if packed:
        (git / "packed-refs").write_text(packed)
    return git


def test_git_commit_reads_refs_packed_refs_detached_heads_and_worktrees(tmp_path):
    c1, c2, c3 = "1" * 40, "2" * 40, "3" * 40
    repo = tmp_path / "repo"
    git = make_repo(
        repo,
        "ref: refs/heads/main\n",
        {"refs/heads/main": c1},
        packed=f"# pack-refs with: peeled\n{c2} refs/heads/old\n",
    )
    assert git_commit(repo) == c1
    (git / "HEAD").write_text("ref: refs/heads/old\n")
    assert git_commit(repo) == c2
    (git / "HEAD").write_text(c3 + "\n")
    assert git_commit(repo) == c3
    # a worktree: .git is a file pointing to gitdir, whose commondir holds the refs
    wt_git = git / "worktrees" / "wt"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/main\n")
    (wt_git / "commondir").write_text("../..\n")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {wt_git}\n")
    assert git_commit(worktree) == c1


def test_git_commit_never_fails(tmp_path):
    assert git_commit(tmp_path) is None  # no checkout
    (tmp_path / ".git").write_text("garbage")
    assert git_commit(tmp_path) is None
    repo = tmp_path / "r"
    make_repo(repo, "ref: refs/heads/missing\n", {})
    assert git_commit(repo) is None
    (repo / ".git" / "HEAD").write_bytes(b"\xff\xfe")
    assert git_commit(repo) is None


def test_dependency_versions_do_not_import_torch():
    code = (
        "import sys; import sgdsde.run.provenance as p; loaded = 'torch' in sys.modules; "
        "v = p.dependency_version('torch', 'torch'); "
        "assert ('torch' in sys.modules) == loaded, 'torch imported'; print(v)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == importlib.metadata.version("torch")
    assert dependency_version("no_such_module", "no-such-dist") == "not installed"


def hand_made_data(scale: float = 1.0) -> RegressionData:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    return RegressionData(X, X @ [1.0, 0.0, scale], X[:2], X[:2] @ [1.0, 0.0, scale])


def test_hand_made_data_is_recorded_by_shapes_and_content_hash():
    data = hand_made_data()
    cfg = data_config(data)
    assert cfg["generator"] == "user"
    assert cfg["shapes"] == {"X": [6, 3], "y": [6], "X_test": [2, 3], "y_test": [2]}
    digest = hashlib.sha256()
    for name in ("X", "y", "X_test", "y_test"):
        arr = getattr(data, name)
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    assert cfg["sha256"] == digest.hexdigest() == data_fingerprint(data)
    assert data_fingerprint(hand_made_data()) == cfg["sha256"]  # content, not identity
    assert data_fingerprint(hand_made_data(scale=1.0 + 1e-15)) != cfg["sha256"]
    generated = s.sparse_regression(n=8, d=5, k=2)
    assert data_config(generated) == generated.config


# ------------------------------------------------------------------ seeds as JSON


@pytest.mark.parametrize(
    "seed",
    [
        3,
        np.random.SeedSequence(7).spawn(3)[2],
        np.random.SeedSequence([1, 2, 3]),
        None,
        [1, 1, np.random.SeedSequence(5).spawn(2)[1]],
    ],
    ids=["int", "child", "entropy-list", "fresh", "per-trajectory"],
)
def test_seed_attrs_are_json_that_rebuilds_the_seed(seed):
    attrs = seed_attrs(seed)
    entropy = json.loads(attrs["seed_entropy"])
    spawn_key = json.loads(attrs["seed_spawn_key"])
    seeds = seed if isinstance(seed, list) else [seed]
    entropies = entropy if isinstance(seed, list) else [entropy]
    keys = spawn_key if isinstance(seed, list) else [spawn_key]
    for original, e, k in zip(seeds, entropies, keys, strict=True):
        rebuilt = np.random.SeedSequence(e, spawn_key=k)
        if original is None:
            continue  # fresh OS entropy: nothing to compare with but its own record
        original = as_seed_sequence(original)
        np.testing.assert_array_equal(rebuilt.generate_state(4), original.generate_state(4))
    assert seed_attrs(3)["seed_entropy"] == "3"  # unchanged for an int seed


def test_l0_threshold_error_names_the_argument_and_the_value():
    model = s.make_model("diagonal_linear", d=5)
    data = s.sparse_regression(n=8, d=5, k=2)
    with pytest.raises(ValueError, match=r"l0_threshold must be >= 0 \(got -1\.0\)"):
        s.simulate_sgd(model, data, 0.1, n_steps=10, l0_threshold=-1.0)
    with pytest.raises(ValueError, match=r"max_loss must be > 0 \(got 0\)"):
        s.simulate_sgd(model, data, 0.1, n_steps=10, max_loss=0)
