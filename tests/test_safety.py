"""Crashes, interruptions, locks, full disks, numerical faults and hostile or damaged files."""

import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save
from typer.testing import CliRunner

import charlm
import charlm.checkpoint as checkpoint_module
import charlm.files as files_module
from charlm.api import build_trainer
from charlm.checkpoint import _digest, _meta_digest, load_checkpoint
from charlm.cli import app
from charlm.errors import CharLMError
from charlm.training.run_dir import stale_temp_files
from charlm.training.runlock import RunLock
from tests.helpers import charlm_cmd, child_env as env, read_metrics as metrics, same_weights


# A run for the command-line tests: small, but slow enough per step (~5-20 ms) that a signal
# sent while it trains lands in the middle of the run.
CLI_RUN = ["--preset", "tiny", "--layers", "2", "--hidden", "96", "--embed", "16",
           "--batch-size", "8", "--bptt", "48", "--dropout", "0.1", "--eval-every", "25",
           "--save-every", "7", "--device", "cpu", "--seed", "5"]


def logged(run: Path) -> list:
    """What a run logged, without the clock: the losses, gradient norms and evaluations."""
    keep = ("step", "loss", "grad_norm", "lr", "val_loss")
    return [{k: m[k] for k in keep if k in m} for m in metrics(run)]


def weights(path: Path) -> dict:
    return load_checkpoint(path).model.state_dict()


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    raise AssertionError("timed out")


@pytest.fixture
def reference(tmp_path, small_corpus):
    """An uninterrupted command-line run of CLI_RUN for 120 steps."""
    run = tmp_path / "reference"
    r = subprocess.run(charlm_cmd("train", small_corpus, "--out", run, *CLI_RUN,
                                  "--max-steps", "120"),
                       capture_output=True, text=True, env=env(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return run


# ----- 1. exact resume after SIGTERM and kill -9 --------------------------------------------

@pytest.mark.slow
def test_sigterm_saves_at_a_step_boundary_and_the_resumed_run_is_exact(tmp_path, small_corpus,
                                                                       reference):
    run = tmp_path / "run"
    proc = subprocess.Popen(charlm_cmd("train", small_corpus, "--out", run, *CLI_RUN,
                                       "--max-steps", "120"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(tmp_path), cwd=tmp_path)
    wait_for(lambda: len(metrics(run)) >= 30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and f"--resume {run}" in stderr
    stopped = load_checkpoint(run / "last.safetensors").info["step"]
    assert stopped == max(m["step"] for m in metrics(run)) < 120  # saved where it stopped

    r = subprocess.run(charlm_cmd("train", "--resume", run), capture_output=True, text=True,
                       env=env(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert same_weights(weights(run / "last.safetensors"),
                        weights(reference / "last.safetensors"))
    assert logged(run) == logged(reference)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_ends_like_an_uninterrupted_run(
        tmp_path, small_corpus, reference):
    run, rng = tmp_path / "run", random.Random(11)
    args = charlm_cmd("train", small_corpus, "--out", run, *CLI_RUN, "--max-steps", "120")
    left_behind: list[Path] = []
    for kill in range(3):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env(tmp_path), cwd=tmp_path)
        start = 0 if kill == 0 else load_checkpoint(run / "last.safetensors").info["step"]
        # Let it take a few steps (and at least one save), then kill it without warning.
        target = start + rng.randint(8, 20)
        wait_for(lambda: max([m["step"] for m in metrics(run)], default=0) >= target
                 or proc.poll() is not None)
        time.sleep(rng.random() * 0.05)
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        assert not [p for p in left_behind if p.exists()]  # the start before cleaned up
        left_behind = stale_temp_files(run)
        # Whatever the moment, the directory holds a checkpoint that loads and evaluates.
        lm = charlm.load(run, which="last")
        assert lm.evaluate("ROMEO: what light through yonder window")["chars"] > 0
        args = charlm_cmd("train", "--resume", run)
    r = subprocess.run(args, capture_output=True, text=True, env=env(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not stale_temp_files(run)
    assert same_weights(weights(run / "last.safetensors"),
                        weights(reference / "last.safetensors"))
    assert logged(run) == logged(reference)


def test_resume_tolerates_a_metrics_line_cut_short(tmp_path, small_corpus, tiny_options):
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(max_steps=10))
    trainer.run()
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "loss": 2.3')  # killed in the middle of a write
    resumed = build_trainer(resume=tmp_path / "run", max_steps=14)
    resumed.run()
    steps = [m["step"] for m in metrics(tmp_path / "run") if "loss" in m]
    assert steps == list(range(1, 15))


# ----- 2. locks, leftovers, failing disks ---------------------------------------------------

def test_a_run_in_use_is_refused_until_its_holder_stops(tmp_path, small_corpus, tiny_options):
    run = tmp_path / "run"
    build_trainer(small_corpus, out=run, **tiny_options(max_steps=10)).run()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    holder = RunLock(run)
    holder.acquire()
    with pytest.raises(CharLMError, match=f"in use by another charlm train \\(process "
                                          f"{os.getpid()}\\)"):
        build_trainer(resume=run, max_steps=20)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before
    holder.release()
    assert build_trainer(resume=run, max_steps=20).run()["step"] == 20


@pytest.mark.slow
def test_a_crashed_holder_leaves_no_lock_behind(tmp_path):
    run = tmp_path / "run"
    code = ("import os, signal, sys; from charlm.training.runlock import RunLock; "
            "lock = RunLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL and r.stdout == "locked\n"
    assert (run / ".lock").exists()
    lock = RunLock(run)
    lock.acquire()  # no error: the kernel dropped the dead process's lock
    lock.release()


@pytest.mark.slow
def test_the_cli_refuses_a_second_writer(tmp_path, small_corpus, tiny_options):
    run = tmp_path / "run"
    build_trainer(small_corpus, out=run, **tiny_options(max_steps=10)).run()
    code = ("import sys, time; from charlm.training.runlock import RunLock; "
            "lock = RunLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); "
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        r = subprocess.run(charlm_cmd("train", "--resume", run, "--max-steps", "20"),
                           capture_output=True, text=True, env=env(tmp_path), cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {run} is in use by another charlm train (process {holder.pid}); wait for it "
        f"to finish or stop it first"]


def test_next_start_removes_temp_files_a_crash_left(tmp_path, small_corpus, tiny_options):
    run = tmp_path / "run"
    build_trainer(small_corpus, out=run, **tiny_options(max_steps=10)).run()
    leftover = run / ".last.safetensors.k2j4x9_q.tmp"  # as mkstemp names them
    leftover.write_bytes(b"half a checkpoint")
    notes = run / ".notes.tmp"  # not charlm's: left alone
    notes.write_text("mine")
    build_trainer(resume=run, max_steps=12).run()
    assert not leftover.exists() and not stale_temp_files(run)
    assert notes.read_text() == "mine"


def test_a_new_run_never_replaces_files_charlm_did_not_write(tmp_path, small_corpus, tiny_options):
    d = tmp_path / "project"
    d.mkdir()
    (d / "config.json").write_text('{"my": "settings"}')
    (d / "metrics.jsonl").write_text("mine\n")
    with pytest.raises(CharLMError, match="holds files charlm did not write \\(config.json\\)"):
        build_trainer(small_corpus, out=d, **tiny_options())
    assert (d / "config.json").read_text() == '{"my": "settings"}'
    assert (d / "metrics.jsonl").read_text() == "mine\n"
    # A run killed before its first checkpoint left only charlm's files: a new run may start.
    killed = tmp_path / "killed"
    build_trainer(small_corpus, out=killed, **tiny_options(max_steps=3)).write_run_files()
    (killed / "metrics.jsonl").write_text('{"step": 1, "loss": 4.0}\n')
    assert build_trainer(small_corpus, out=killed, **tiny_options(max_steps=3)).run()["step"] == 3
    assert [m["step"] for m in metrics(killed) if "loss" in m] == [1, 2, 3]


def test_a_run_never_has_a_best_checkpoint_without_a_last_one(tmp_path, small_corpus, tiny_options):
    """Validation (every 5 steps) comes before the first periodic save (every 1000): a crash
    after the first evaluation must still leave something to resume."""
    options = tiny_options(max_steps=12, eval_every=5, save_every=1000)
    full = build_trainer(small_corpus, out=tmp_path / "full", **options)
    full.run()
    run = tmp_path / "run"
    trainer = build_trainer(small_corpus, out=run, **options)
    seen = []

    def crash_at_7(event, data):
        if event == "save" and data["which"] == "best.safetensors":
            seen.append((run / "last.safetensors").exists())
        if event == "step" and data["step"] == 7:
            raise SystemExit("killed")  # dies here: no save on the way out
    trainer.report = crash_at_7
    with pytest.raises(SystemExit):
        trainer.run()
    assert seen == [True]
    assert (run / "best.safetensors").exists()
    resumed = build_trainer(resume=run)
    assert resumed.pos.step == 5
    resumed.run()
    assert same_weights(resumed.model.state_dict(), full.model.state_dict())
    assert logged(run) == logged(tmp_path / "full")


def test_a_filesystem_without_locks_still_trains(tmp_path, small_corpus, monkeypatch,
                                                 tiny_options):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(max_steps=5))
    assert trainer.run()["step"] == 5


@pytest.mark.parametrize("failure", ["ENOSPC", "EACCES"])
def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, small_corpus, monkeypatch,
                                                     failure, tiny_options):
    run = tmp_path / "run"
    trainer = build_trainer(small_corpus, out=run, **tiny_options(max_steps=30, save_every=10,
                                                                  eval_every=1000))
    saved = {}

    def report(event, data):
        if event == "save" and data["step"] == 10:
            saved["bytes"] = (run / "last.safetensors").read_bytes()
            if failure == "ENOSPC":  # the disk fills up while the next checkpoint is written
                def full(fd):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                monkeypatch.setattr(files_module.os, "fsync", full)
            else:  # the directory stops being writable
                def denied(*args, **kwargs):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(run))
                monkeypatch.setattr(files_module.tempfile, "mkstemp", denied)
    trainer.report = report
    with pytest.raises(CharLMError) as info:
        trainer.run()
    message = str(info.value)
    assert message.startswith(f"could not save {run / 'last.safetensors'} at step 20 (")
    assert os.strerror(getattr(errno, failure)) in message
    assert message.endswith("the previous one is kept")
    monkeypatch.undo()
    assert (run / "last.safetensors").read_bytes() == saved["bytes"]
    assert not stale_temp_files(run)
    assert load_checkpoint(run / "last.safetensors").info["step"] == 10
    lock = RunLock(run)
    lock.acquire()  # the failed run released its lock
    lock.release()


def test_a_failed_log_write_names_the_file_and_the_kept_checkpoint(tmp_path, small_corpus,
                                                                   monkeypatch, tiny_options):
    run = tmp_path / "run"
    trainer = build_trainer(small_corpus, out=run, **tiny_options(max_steps=30, save_every=10))
    original = trainer.log

    def log(record):
        if record.get("step") == 14:
            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr("builtins.open", full)
        original(record)
    trainer.log = log
    with pytest.raises(CharLMError) as info:
        trainer.run()
    monkeypatch.undo()
    assert str(info.value) == (f"could not write {run / 'metrics.jsonl'} at step 14 "
                               f"({os.strerror(errno.ENOSPC)}); the last checkpoint "
                               f"({run / 'last.safetensors'}, step 10) is kept")


# ----- 3. numerical faults ------------------------------------------------------------------

def poison(trainer, bad_steps):
    original = trainer.model.forward

    def forward(*args, **kwargs):
        logits, state = original(*args, **kwargs)
        if trainer.pos.step in bad_steps:
            logits = logits * float("nan")
        return logits, state
    trainer.model.forward = forward


def snapshot_training(trainer) -> dict:
    state = {f"w/{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    for i, moments in enumerate(trainer.optimizer.state.values()):
        state.update({f"opt/{i}/{k}": v.clone() for k, v in moments.items()})
    return state


@pytest.mark.parametrize("fault", ["nan loss", "inf gradient, clipped by value"])
def test_a_non_finite_step_is_skipped_counted_and_training_goes_on(tmp_path, small_corpus,
                                                                   fault, tiny_options):
    options = tiny_options(max_steps=20, clip_value=0.5 if "value" in fault else 0.0)
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **options)
    bad = {4, 5}  # pos.step during the faulty steps: they are logged as steps 5 and 6
    if fault == "nan loss":
        poison(trainer, bad)
    else:  # the loss stays finite; one gradient element overflows
        weight = trainer.model.head.weight
        weight.register_hook(lambda g: g.index_fill(0, torch.tensor([3], device=g.device),
                                                    float("inf"))
                             if trainer.pos.step in bad else g)
    snaps = {}

    def report(event, data):
        if event == "step" and data["step"] in (4, 6):
            snaps[data["step"]] = snapshot_training(trainer)
    trainer.report = report
    summary = trainer.run()
    assert summary["status"] == "done" and summary["step"] == 20
    records = [m for m in metrics(tmp_path / "run") if "loss" in m]
    assert [m["step"] for m in records if m.get("skipped")] == [5, 6]
    assert trainer.pos.skipped == 2 and trainer.pos.bad_steps == 0
    # The skipped steps changed no weight and no optimizer moment.
    assert snaps[4].keys() == snaps[6].keys()
    assert all(torch.equal(snaps[4][k], snaps[6][k]) for k in snaps[4])
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not all(torch.equal(snaps[6]["w/" + k], after[k]) for k in after)  # it trained on


def test_max_bad_steps_stops_with_the_last_good_checkpoint(tmp_path, small_corpus, tiny_options):
    trainer = build_trainer(small_corpus, out=tmp_path / "run",
                            **tiny_options(max_steps=40, max_bad_steps=2))
    poison(trainer, set(range(13, 40)))
    with pytest.raises(CharLMError, match=r"2 non-finite steps in a row at step 15 .*; the "
                                          r"last checkpoint \(.*, step 10\) is kept; start a "
                                          r"new run with a lower --lr"):
        trainer.run()
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ckpt.info["step"] == 10
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())


# ----- 4. hostile and damaged files ---------------------------------------------------------

class Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def run_dir(tmp_path, small_corpus, tiny_options):
    run = tmp_path / "run"
    build_trainer(small_corpus, out=run, **tiny_options(max_steps=10)).run()
    return run


def cli(*args) -> subprocess.CompletedProcess:
    """The command run in this process (as in test_cli), its outcome in subprocess's terms."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def assert_refused(result, pattern):
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and pattern in lines[0], lines[0]


def test_a_pickle_in_place_of_a_checkpoint_is_refused_without_running_it(tmp_path, run_dir):
    marker, control = tmp_path / "pwned", tmp_path / "control"
    # The payload is live: unpickling a copy of it does create its file.
    pickle.loads(pickle.dumps(Payload(control)))
    assert control.exists()
    for name in ("best.safetensors", "last.safetensors"):
        torch.save({"weights": Payload(marker)}, run_dir / name)
    (tmp_path / "model.pt").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CharLMError, match="not a valid charlm checkpoint"):
        charlm.load(run_dir)
    for args in (["sample", "--checkpoint", run_dir, "--length", "5"],
                 ["eval", "--checkpoint", run_dir],
                 ["eval", "--checkpoint", tmp_path / "model.pt"],
                 ["train", "--resume", run_dir, "--max-steps", "20"]):
        assert_refused(cli(*args), "not a valid charlm checkpoint")
    assert not marker.exists()


def rewrite(path: Path, out: Path, tensors=None, digests=True, **meta_changes):
    """Write a copy of checkpoint ``path`` with changed metadata (and tensors); with
    ``digests`` the checksums are made consistent again, as a deliberate forgery would."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        data = {k: f.get_tensor(k) for k in f.keys()}
    if tensors is not None:
        data = tensors(data)
    meta.update(meta_changes)
    if digests:
        meta["sha256"] = _digest(data)
        meta["meta_sha256"] = _meta_digest(meta)
    out.write_bytes(save(data, metadata=meta))
    return out


def test_truncated_and_bit_flipped_checkpoints_are_refused(tmp_path, run_dir):
    good = (run_dir / "best.safetensors").read_bytes()
    cases = {"truncated": good[: len(good) // 2],
             "tensor bit": bytearray(good), "metadata bit": bytearray(good)}
    cases["tensor bit"][-100] ^= 0x10
    header = int.from_bytes(good[:8], "little")
    digit = good.index(b'hidden_dim\\": ') + len(b'hidden_dim\\": ')  # in the JSON header
    assert digit < 8 + header and chr(good[digit]).isdigit()
    cases["metadata bit"][digit] ^= 0x01  # "32" becomes "33": still valid JSON
    expected = {"truncated": "not a valid charlm checkpoint",
                "tensor bit": "damaged (tensor checksum mismatch)",
                "metadata bit": "damaged (metadata checksum mismatch)"}
    for name, data in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.safetensors"
        path.write_bytes(bytes(data))
        with pytest.raises(CharLMError, match=expected[name].replace("(", r"\(")
                           .replace(")", r"\)")):
            load_checkpoint(path)
        assert_refused(cli("sample", "--checkpoint", path), expected[name])
        assert path.read_bytes() == bytes(data)  # nothing "repaired" in place


def test_absurd_sizes_are_refused_before_anything_is_allocated(tmp_path, run_dir, monkeypatch):
    src = run_dir / "best.safetensors"
    config = load_checkpoint(src).model.config.to_dict()
    built = []
    original = charlm.models.RecurrentLM.__init__

    def only_on_meta(self, cfg):  # a model may be built for its shapes only, never for real
        built.append(torch.empty(0).device.type)
        assert built[-1] == "meta", "a model was allocated for a forged config"
        original(self, cfg)
    monkeypatch.setattr(charlm.models.RecurrentLM, "__init__", only_on_meta)
    for field, value in (("hidden_dim", 10**6), ("embed_dim", 10**9), ("num_layers", 10**5)):
        forged = rewrite(src, tmp_path / f"{field}.safetensors",
                         model_config=json.dumps({**config, field: value}))
        with pytest.raises(CharLMError, match="weights do not match the model config \\(the "
                                              "file holds"):
            load_checkpoint(forged)
    # The same number of parameters in other shapes is caught by the shapes.
    name = "model/backbone.rnn.weight_ih_l0"
    forged = rewrite(src, tmp_path / "shapes.safetensors",
                     tensors=lambda d: {**d, name: d[name].t().contiguous()})
    with pytest.raises(CharLMError, match=r"rnn.weight_ih_l0 is \[16, 128\], the config needs "
                                          r"\[128, 16\]"):
        load_checkpoint(forged)
    assert built and set(built) == {"meta"}


@pytest.mark.parametrize("damage", ["trainer not an object", "trainer tensor missing",
                                    "run config a list", "never_predict a float",
                                    "deeply nested"])
def test_forged_metadata_is_refused_in_one_line(tmp_path, run_dir, damage):
    last = run_dir / "last.safetensors"
    with safe_open(str(last), framework="pt") as f:
        meta = f.metadata()
    model_config = json.loads(meta["model_config"])
    changes = {
        "trainer not an object": {"trainer": json.dumps({"__dict__": 5})},
        "trainer tensor missing": {"trainer": json.dumps(
            {"__dict__": [["step", {"__tensor__": "trainer/nothing"}]]})},
        "run config a list": {"run_config": "[1, 2]"},
        "never_predict a float": {"model_config": json.dumps(
            {**model_config, "never_predict": [0.5]})},
        "deeply nested": {"info": "[" * 100000 + "]" * 100000},
    }[damage]
    rewrite(last, last, **changes)
    before = snapshot_files(run_dir)
    commands = [["train", "--resume", run_dir, "--max-steps", "20"]]
    if not damage.startswith("trainer"):  # sampling never reads the trainer state
        commands.append(["sample", "--checkpoint", last, "--length", "5"])
    for args in commands:
        r = cli(*args)
        assert_refused(r, f"{last}: ")
        assert "damaged" in r.stderr, r.stderr
    assert snapshot_files(run_dir) == before


def snapshot_files(d: Path) -> dict:
    """Every file's bytes and modification time (the lock file aside: taking the lock
    rewrites the holder's process id)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.rglob("*")
            if p.is_file() and p.name != ".lock"}


def test_a_vocab_that_does_not_match_the_weights_is_refused(tmp_path, run_dir):
    ckpt = load_checkpoint(run_dir / "best.safetensors")
    chars = json.loads(ckpt.vocab.to_json())
    smaller = {**chars, "chars": chars["chars"][:-3]}
    forged = rewrite(run_dir / "best.safetensors", tmp_path / "vocab.safetensors",
                     vocab=json.dumps(smaller))
    with pytest.raises(CharLMError, match=f"vocab has {ckpt.vocab.size - 3} symbols but the "
                                          f"model expects {ckpt.vocab.size}"):
        load_checkpoint(forged)


def test_an_older_format_version_is_refused_by_name(tmp_path, run_dir):
    old = rewrite(run_dir / "best.safetensors", tmp_path / "old.safetensors", version="0")
    assert_refused(cli("eval", "--checkpoint", old),
                   "checkpoint format version 0 is not supported (this charlm reads versions 1 "
                   "to 2)")


def test_a_checkpoint_from_a_gpu_run_loads_and_resumes_on_a_cpu(tmp_path, run_dir):
    """A run trained with --device cuda: its config names cuda and its trainer state holds the
    CUDA generator's state. Tensors are always written from CPU copies."""
    last = run_dir / "last.safetensors"
    with safe_open(str(last), framework="pt") as f:
        meta = f.metadata()
    run_config = json.loads(meta["run_config"])
    run_config["train"]["device"] = "cuda"
    trainer = json.loads(meta["trainer"])
    trainer["__dict__"].append(["cuda_rng", {"__tensor__": "trainer/cuda_rng"}])

    def add_cuda_rng(data):
        return {**data, "trainer/cuda_rng": torch.zeros(16, dtype=torch.uint8)}
    rewrite(last, last, tensors=add_cuda_rng, run_config=json.dumps(run_config),
            trainer=json.dumps(trainer))
    for path in (run_dir / "best.safetensors", last):
        assert all(t.device.type == "cpu" for t in load_checkpoint(path).model.parameters())
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: resuming there would simply use it")
    assert_refused(cli("train", "--resume", run_dir, "--max-steps", "12"),
                   "give --device cpu or auto to continue it here")
    r = cli("train", "--resume", run_dir, "--max-steps", "12", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(last).info["step"] == 12
