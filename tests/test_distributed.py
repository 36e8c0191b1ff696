"""Training in several processes started by torchrun (gloo on the CPU): two ranks train as one
process with all the lanes (or texts), exactly resumable, and only rank 0 writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import SHAKESPEARE, charlm_cmd, child_env, read_metrics

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(),
                                 reason="torch.distributed is not in this build")]

LM = ["--preset", "tiny", "--cell", "lstm", "--layers", "1", "--hidden", "32", "--embed", "16",
      "--batch-size", "4", "--bptt", "32", "--device", "cpu", "--precision", "fp32"]


def torchrun(nproc: int, *args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(nproc), "-m", "charlm", *[str(a) for a in args]]


def env(tmp_path: Path) -> dict:
    return {**child_env(tmp_path), "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], tmp_path: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env(tmp_path), cwd=cwd or tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:30000], encoding="utf-8")
    return path


def losses(run_dir: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run_dir) if "loss" in m]


def tensors(run_dir: Path, prefix: str = "") -> dict:
    return {k: v for k, v in load_file(str(run_dir / "last.safetensors")).items()
            if k.startswith(prefix)}


def test_two_ranks_with_half_the_lanes_each_train_as_one_process_with_all(tmp_path, corpus):
    # A constant rate and no warmup: a run of 8 steps taken on to 16 is a run of 16 steps, so
    # the two-process run can be taken on by one process and compared all along.
    args = ["train", corpus, *LM, "--dropout", "0", "--schedule", "constant", "--warmup", "0",
            "--eval-every", "4"]
    run(charlm_cmd(*args, "--max-steps", 16, "--out", tmp_path / "one"), tmp_path)
    # No --out: only rank 0 chooses and writes the run directory.
    r = run(torchrun(2, *args, "--max-steps", 8), tmp_path)
    assert os.listdir(tmp_path / "checkpoints") == ["small"]
    two = tmp_path / "checkpoints" / "small"
    assert "2 processes" in r.stderr and r.stderr.count("done:") == 1
    saved = tensors(two)  # every rank's random state, rank 0's where one process keeps it
    assert torch.equal(saved["trainer/rng_ranks/0"], saved["trainer/rng"])
    assert "trainer/rng_ranks/1" in saved
    # Taken on in one process: every lane's carried state goes back to its lane.
    run(charlm_cmd("train", "--resume", two, "--max-steps", 16), tmp_path)
    assert losses(two) == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    val = [[m["val_loss"] for m in read_metrics(d) if "val_loss" in m]
           for d in (tmp_path / "one", two)]
    assert len(val[0]) == 4 and val[1] == pytest.approx(val[0], rel=1e-6)
    # the weights, the optimizer's moments and every lane's carried state
    a, b = tensors(tmp_path / "one"), tensors(two)
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=1e-5), k


def _interrupt(cmd: list[str], run_dir: Path, tmp_path: Path, after_steps: int) -> int:
    """Start ``cmd`` in its own session, send Ctrl-C to all its processes once the run has
    logged ``after_steps`` steps; its exit status."""
    p = subprocess.Popen(cmd, env=env(tmp_path), cwd=tmp_path, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(read_metrics(run_dir)) < after_steps and p.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGINT)
    return p.wait(timeout=120)


def test_an_interrupted_two_rank_run_resumes_bit_for_bit_and_in_one_process(tmp_path, corpus):
    args = ["train", corpus, *LM, "--dropout", "0.2", "--max-steps", "200",
            "--eval-every", "50", "--save-every", "1000"]
    run(torchrun(2, *args, "--out", tmp_path / "whole"), tmp_path)
    part = tmp_path / "part"
    _interrupt(torchrun(2, *args, "--out", part), part, tmp_path, after_steps=30)
    stopped = read_metrics(part)[-1]["step"]
    assert 30 <= stopped < 200
    again = tmp_path / "again"  # the same checkpoint, resumed by one process
    again.mkdir()
    for f in part.iterdir():
        (again / f.name).write_bytes(f.read_bytes())
    r = run(charlm_cmd("train", "--resume", part, "--nproc", 2), tmp_path)  # torchrun for you
    assert r.stderr.count("done:") == 1
    whole, resumed = tensors(tmp_path / "whole", "model/"), tensors(part, "model/")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)  # dropout's streams too
    # Another number of processes: the lanes are shared anew; it trains on to the end.
    r = run(charlm_cmd("train", "--resume", again), tmp_path)
    assert "done: 200 steps" in r.stderr
    assert read_metrics(again)[-1]["step"] == 200


def _worker_pids(agent: int) -> dict[int, int]:
    """rank -> pid of the charlm processes the torchrun process ``agent`` started."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != agent:  # the parent's pid
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        values = dict(e.split(b"=", 1) for e in environ if b"=" in e)
        if b"TORCHELASTIC_RUN_ID" in values and b"charlm" in cmdline and b"RANK" in values:
            found[int(values[b"RANK"])] = int(pid)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks through /proc")
def test_kill_9_of_one_rank_leaves_the_last_checkpoint_loadable_and_the_run_resumable(
        tmp_path, corpus):
    out = tmp_path / "run"
    cmd = torchrun(2, "train", corpus, *LM, "--max-steps", "100000", "--save-every", "20",
                   "--eval-every", "1000", "--out", out)
    p = subprocess.Popen(cmd, env=env(tmp_path), cwd=tmp_path, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "last.safetensors").exists():
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    ranks = _worker_pids(p.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    assert p.wait(timeout=120) != 0
    saved = read_metrics(out)[-1]["step"]
    from charlm.checkpoint import load_checkpoint
    ckpt = load_checkpoint(out / "last.safetensors", with_trainer=True)
    at = ckpt.trainer_state["loop"]["step"]
    assert at % 20 == 0 and at <= saved
    r = run(charlm_cmd("train", "--resume", out, "--max-steps", at + 10), tmp_path)
    assert f"done: {at + 10:,} steps" in r.stderr


def test_a_classifier_trains_on_two_ranks_as_in_one_process(tmp_path):
    # 41 texts in batches of 5: the last batch holds one text, so rank 1 reads none of it.
    data = tmp_path / "data.txt"
    data.write_text("".join(f"{i % 2} {'good fine' if i % 2 else 'bad poor'} film {i}\n"
                            for i in range(46)))
    args = ["classify", "train", data, "--preset", "tiny", "--hidden", "16", "--embed", "8",
            "--batch-size", "5", "--val-fraction", "0.1", "--dropout", "0",
            "--head-dropout", "0", "--device", "cpu", "--precision", "fp32", "--epochs", "3",
            "--gradual-unfreeze", "--layer-lr-factor", "2"]
    run(charlm_cmd(*args, "--out", tmp_path / "one"), tmp_path)
    run(torchrun(2, *args, "--out", tmp_path / "two"), tmp_path)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [m["step"] for m in one] == [m["step"] for m in two]
    trained = [[m["loss"] for m in run if "loss" in m] for run in (one, two)]
    assert len(trained[0]) == 27 and trained[1] == pytest.approx(trained[0], rel=1e-5)
    scored = [[m["val_accuracy"] for m in run if "val_accuracy" in m] for run in (one, two)]
    assert scored[0] and scored[1] == scored[0]
    a, b = tensors(tmp_path / "one", "model/"), tensors(tmp_path / "two", "model/")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_nproc_is_taken_out_of_the_command_the_processes_run():
    from charlm.training.launch import without_option

    assert without_option(["train", "a.txt", "--nproc", "2", "--hidden", "8"], "--nproc") == \
        ["train", "a.txt", "--hidden", "8"]
    assert without_option(["train", "--nproc=4", "--nprocs-x", "1"], "--nproc") == \
        ["train", "--nprocs-x", "1"]
