import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm.cli import app

runner = CliRunner()
TINY = ["--preset", "tiny", "--layers", "1", "--hidden", "32", "--embed", "16", "--batch-size",
        "4", "--bptt", "32", "--max-steps", "12", "--eval-every", "6", "--device", "cpu",
        "--no-plot"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict:
    """Every file's bytes and modification time (the corpus cache and the run's lock file
    aside: taking the lock rewrites the holder's process id)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and "cache" not in p.parts and p.name != ".lock"}


def assert_clean_error(result, pattern, code=1):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    if code == 1:
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert err.startswith("error: ") and pattern.lower() in err.lower(), err


@pytest.fixture
def run_dir(tmp_path, small_corpus):
    result = run("train", small_corpus, "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 0, result.stderr
    return tmp_path / "run"


def test_end_to_end_prepare_train_eval_sample(tmp_path, small_corpus):
    r = run("prepare", small_corpus, "--out", tmp_path / "prep")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "prep" / "meta.json").exists()
    # Train on the prepared directory; the run lands in ./checkpoints/<name>.
    r = run("train", tmp_path / "prep", *TINY)
    assert r.exit_code == 0, r.stderr
    assert "val" in r.stderr and "done:" in r.stderr
    runs = list((tmp_path / "checkpoints").iterdir())
    assert len(runs) == 1 and (runs[0] / "best.safetensors").exists()
    held_out = tmp_path / "held.txt"
    held_out.write_text("ROMEO: But soft, what light through yonder window breaks?\n")
    r = run("eval", held_out, "--json")  # default checkpoint: the newest run
    assert r.exit_code == 0, r.stderr
    figures = json.loads(r.stdout)
    for key in ("loss_nats", "perplexity", "bpc", "chars", "symbols", "unknown"):
        assert key in figures
    assert figures["chars"] == len(held_out.read_text())
    assert figures["bpc"] > 0
    r = run("eval")  # the run's validation split, as a table
    assert r.exit_code == 0 and "bits per character" in r.stdout
    r = run("sample", "--temp", "0.8", "--length", "50", "--seed", "1", "--prime", "KING:")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("KING:") and len(r.stdout) == len("KING:") + 50 + 1
    again = run("sample", "--temp", "0.8", "--length", "50", "--seed", "1", "--prime", "KING:")
    assert again.stdout == r.stdout


def test_train_twice_makes_a_new_run(tmp_path, small_corpus):
    for _ in range(2):
        assert run("train", small_corpus, *TINY).exit_code == 0
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["small", "small-2"]


def test_help_documents_every_option():
    for command in ("prepare", "train", "eval", "sample"):
        r = run(command, "--help")
        assert r.exit_code == 0
        assert "--help" in r.stdout
    r = run("train", "--help")
    for option in ("--cell", "--layers", "--hidden", "--embed", "--dropout", "--tie-weights",
                   "--max-steps", "--epochs", "--max-time", "--resume", "--preset", "--device",
                   "--clip-norm", "--clip-value", "--optimizer", "--seed", "--momentum",
                   "--weight-drop", "--weight-decay", "--learn-init-state", "--layer-norm",
                   "--recurrent-dropout", "--leak", "--learn-leak", "--max-bad-steps",
                   "--precision"):
        assert option in r.stdout
    for cell in ("lstm", "gru", "rnn", "irnn", "leaky", "jordan"):
        assert cell in r.stdout
    r = run("sample", "--help")
    assert all(o in r.stdout for o in ("--top-p", "--stop", "--prime-file", "--top-k"))
    r = run("plot", "--help")
    assert r.exit_code == 0 and "--out" in r.stdout and "--x" in r.stdout
    r = run("inspect", "--help")
    assert r.exit_code == 0 and all(o in r.stdout for o in ("--length", "--unit", "--gates",
                                                           "--out", "--checkpoint"))
    r = run("diagnose", "gradients", "--help")
    assert r.exit_code == 0 and "--max-k" in r.stdout and "--plot" in r.stdout
    assert run("--version").stdout.startswith("charlm ")


BAD_INPUTS = {
    "missing file": (["train", "nope.txt"], "no such file"),
    "empty file": (["train", "{empty}"], "empty"),
    "whitespace file": (["train", "{blank}"], "empty"),
    "invalid utf-8": (["train", "{badutf}"], "badutf.txt: not UTF-8 (invalid byte at offset 6); "
                                             "if it is in another encoding, give it with "
                                             "--encoding"),
    "binary file": (["train", "{binary}"], "blob.bin: not UTF-8 (invalid byte at offset 0)"),
    "absurd hidden size": (["train", "{small}", "--hidden", "1000000000", "--device", "cpu"],
                           "GiB to train (weights, gradients, optimizer state) but the cpu has"),
    "absurd layer count": (["train", "{small}", "--layers", "100000", "--device", "cpu"],
                           "use a smaller --hidden, --layers or --embed"),
    "dir without text": (["train", "{bindir}"], "no text files"),
    "shorter than a chunk": (["train", "{short}", "--val-fraction", "0"], "shorter than one chunk"),
    "zero layers": (["train", "{small}", "--layers", "0"], "--layers must be"),
    "negative lr": (["train", "{small}", "--lr", "-1"], "--lr"),
    "bad cell": (["train", "{small}", "--cell", "tcn"], "--cell"),
    "bad precision": (["train", "{small}", "--precision", "fp16"], "--precision must be one of"),
    "weight drop of one": (["train", "{small}", "--weight-drop", "1"], "--weight-drop must be in [0, 1)"),
    "tie without equal sizes": (["train", "{small}", "--tie-weights"], "--tie-weights"),
    "bpe vocab too small": (["prepare", "{small}", "--out", "p", "--vocab", "bpe",
                             "--vocab-size", "100"], "too small"),
    "prepare into non-empty dir": (["prepare", "{small}", "--out", "{bindir}"], "not empty"),
    "resume a non-run": (["train", "--resume", "{bindir}"], "not a charlm run"),
    "negative temperature": (["sample", "--checkpoint", "{run}", "--temp", "-1"], "--temp"),
    "negative length": (["sample", "--checkpoint", "{run}", "--length", "-3"], "--length"),
    "negative top-k": (["sample", "--checkpoint", "{run}", "--top-k", "-3"], "--top-k"),
    "prime of unseen chars": (["sample", "--checkpoint", "{run}", "--prime", "🙂🙂"],
                              "only characters"),
    "missing checkpoint": (["sample", "--checkpoint", "nowhere"], "not found"),
    "corrupt checkpoint": (["eval", "--checkpoint", "{corrupt}"], "not a valid charlm checkpoint"),
    "eval missing text": (["eval", "gone.txt", "--checkpoint", "{run}"], "no such file"),
    "eval bad precision": (["eval", "--checkpoint", "{run}", "--precision", "fp16"], "--precision must be one of fp32, bf16"),
    "eval unseen only": (["eval", "{emoji}", "--checkpoint", "{run}"], "every character"),
    "eval invalid utf-8": (["eval", "{badutf}", "--checkpoint", "{run}"],
                           "not UTF-8 (invalid byte at offset 6)"),
    "resume with other size": (["train", "--resume", "{run}", "--hidden", "64"],
                               "--hidden "),
    "out holds a run": (["train", "{small}", "--out", "{run}"], "already holds a run"),
    "nan learning rate": (["train", "{small}", "--lr", "nan"], "--lr must be a finite"),
    "infinite epochs": (["train", "{small}", "--epochs", "inf"], "--epochs must be a finite"),
    "huge seed": (["train", "{small}", "--seed", "99999999999999999999"], "--seed must be"),
    "infinite temperature": (["sample", "--checkpoint", "{run}", "--temp", "inf"], "--temp"),
    "huge sample seed": (["sample", "--checkpoint", "{run}", "--seed", "99999999999999999999"],
                         "--seed must be"),
    "unknown device": (["eval", "--checkpoint", "{run}", "--device", "foo"], "--device"),
    "huge bpe vocab": (["prepare", "{small}", "--out", "p", "--vocab", "bpe", "--vocab-size",
                        "99999999999"], "too large"),
    "vocab size with char": (["prepare", "{small}", "--out", "p", "--vocab-size", "5"],
                             "only to --vocab bpe"),
    "resume with preset": (["train", "--resume", "{run}", "--preset", "large"],
                           "do not apply to --resume"),
    "resume past its end": (["train", "--resume", "{run}", "--max-steps", "5"], "nothing to do"),
    "bad separator escape": (["train", "{small}", "--doc-separator", "\\x"], "bad backslash"),
    "absurd epochs": (["train", "{small}", "--epochs", "1e308"], "--epochs must be"),
    "markup in a path": (["train", "missing[/bold].txt"], "missing[/bold].txt: no such file"),
    "out holds other files": (["train", "{small}", "--out", "{bindir}"],
                              "holds files charlm did not write (blob)"),
    "zero bad steps allowed": (["train", "{small}", "--max-bad-steps", "0"],
                               "--max-bad-steps must be"),
    "zero eval lanes": (["eval", "--checkpoint", "{run}", "--lanes", "0"], "--lanes must be"),
    "top-p zero": (["sample", "--checkpoint", "{run}", "--top-p", "0"], "--top-p must be in"),
    "top-p above one": (["sample", "--checkpoint", "{run}", "--top-p", "1.5"],
                        "--top-p must be in (0, 1]"),
    "empty stop": (["sample", "--checkpoint", "{run}", "--stop", "a", "--stop", ""],
                   "--stop must not be empty"),
    "prime twice": (["sample", "--checkpoint", "{run}", "--prime", "a", "--prime-file",
                     "{short}"], "not both"),
    "empty prime file": (["sample", "--checkpoint", "{run}", "--prime-file", "{empty}"],
                         "holds no text"),
    "missing prime file": (["sample", "--checkpoint", "{run}", "--prime-file", "gone.txt"],
                           "gone.txt: no such file"),
    "zero samples": (["sample", "--checkpoint", "{run}", "--num-samples", "0"],
                     "--num-samples must be"),
    "sample from a text file": (["sample", "--checkpoint", "{small}"],
                                "not a valid charlm checkpoint"),
    "eval a directory": (["eval", "{bindir}", "--checkpoint", "{run}"],
                         "is a directory, expected a text file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gives_one_clean_line(case, tmp_path, small_corpus, run_dir):
    args, pattern = BAD_INPUTS[case]
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n \n")
    (tmp_path / "badutf.txt").write_bytes(b"hello \xc3\x28 world")
    (tmp_path / "short.txt").write_text("tiny")
    (tmp_path / "emoji.txt").write_text("🙂🙂🙂")
    (tmp_path / "bindir").mkdir()
    (tmp_path / "bindir" / "blob").write_bytes(b"\0\1\2")
    (tmp_path / "blob.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x80\x04not a checkpoint at all")
    names = {"empty": tmp_path / "empty.txt", "blank": tmp_path / "blank.txt",
             "badutf": tmp_path / "badutf.txt", "short": tmp_path / "short.txt",
             "emoji": tmp_path / "emoji.txt", "bindir": tmp_path / "bindir",
             "small": small_corpus, "run": run_dir, "corrupt": corrupt,
             "binary": tmp_path / "blob.bin"}
    args = [a.format(**names) for a in args]
    before = snapshot(tmp_path)
    result = run(*args)
    assert_clean_error(result, pattern)
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten


def test_usage_errors_exit_2():
    assert_clean_error(run("train", "--no-such-option"), "", code=2)
    assert_clean_error(run("sample", "--temp", "warm"), "", code=2)


@pytest.mark.slow
def test_console_script_and_module_entry_points(tmp_path, small_corpus):
    env = {**os.environ, "CHARLM_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "charlm"]
    r = subprocess.run(cmd + ["train", str(small_corpus), *TINY], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cmd + ["sample", "--length", "30", "--seed", "2"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) == 31, r.stderr
    r = subprocess.run(cmd + ["eval", "missing.txt"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: missing.txt: no such file or directory"]


@pytest.mark.slow
def test_ctrl_c_saves_then_exits_130(tmp_path, small_corpus):
    import signal
    import time

    env = {**os.environ, "CHARLM_CACHE_DIR": str(tmp_path / "cache")}
    args = [a if a != "12" else "100000" for a in TINY]
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", str(small_corpus),
                             "--out", "run", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 2000):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    from charlm.checkpoint import load_checkpoint
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ckpt.info["step"] == max(steps)  # saved at the step it stopped on


def test_options_for_raw_text_refused_on_a_prepared_corpus(tmp_path, small_corpus):
    assert run("prepare", small_corpus, "--out", tmp_path / "prep").exit_code == 0
    assert_clean_error(run("train", tmp_path / "prep", "--vocab", "bpe", *TINY),
                       "is a prepared corpus")


def test_directory_skips_prepared_corpus_and_binary_files(tmp_path, small_text):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text(small_text[:10000])
    (d / "b.txt").write_text(small_text[10000:])
    (d / "img.bin").write_bytes(bytes(range(256)) * 40)
    assert run("prepare", d, "--out", d / "prepared").exit_code == 0
    r = run("train", d, "--out", tmp_path / "run", *TINY)
    assert r.exit_code == 0, r.stderr
    assert "skipping" in r.stderr and "img.bin" in r.stderr and "prepared" in r.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(config["corpus"]["sources"]) == 2  # a.txt and b.txt only


@pytest.mark.slow
def test_sample_into_a_closed_pipe_exits_quietly(tmp_path, run_dir):
    env = {**os.environ, "CHARLM_CACHE_DIR": str(tmp_path / "cache")}
    cmd = (f"{sys.executable} -m charlm sample --checkpoint {run_dir} --length 200000 "
           f"--seed 1 | head -c 100")
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 100 and r.stderr.strip() == ""


def test_several_samples_are_separated_on_stdout(run_dir):
    r = run("sample", "--checkpoint", run_dir, "--num-samples", "3", "--length", "20",
            "--seed", "5")
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("=== sample")] == [
        f"=== sample {i} of 3 (seed {4 + i}) ===" for i in (1, 2, 3)]
    single = run("sample", "--checkpoint", run_dir, "--length", "20", "--seed", "5")
    first = r.stdout.split("===\n")[1].split("\n\n=== sample")[0]
    assert single.stdout == first + ("" if first.endswith("\n") else "\n")


def test_prime_file_stop_and_top_p_from_the_command_line(tmp_path, run_dir):
    prime = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 3
    (tmp_path / "prime.txt").write_bytes(prime.encode("cp1252"))
    given = ["sample", "--checkpoint", run_dir, "--length", "200", "--seed", "3", "--temp", "1"]
    inline = run(*given, "--prime", prime)
    from_file = run(*given, "--prime-file", tmp_path / "prime.txt", "--encoding", "cp1252")
    assert inline.exit_code == from_file.exit_code == 0, from_file.stderr
    assert from_file.stdout == inline.stdout and from_file.stdout.startswith(prime)
    # --stop, given twice: the text ends before the first place either appears.
    free = inline.stdout[len(prime):-1]
    cut = min(i for i in (free.find("e"), free.find("a"), len(free)) if i >= 0)
    assert 0 < cut < len(free)  # the test needs a text that has one of them
    stopped = run(*given, "--prime", prime, "--stop", "e", "--stop", "a")
    assert stopped.exit_code == 0 and stopped.stdout == prime + free[:cut] + "\n"
    assert run(*given, "--prime", prime, "--top-p", "1").stdout == inline.stdout
    assert run(*given, "--prime", prime, "--top-p", "0.5").stdout != inline.stdout


def test_encoding_for_train_prepare_and_eval(tmp_path):
    text = "Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve \u201cquotes\u201d. " * 300
    latin = tmp_path / "latin.txt"
    latin.write_bytes(text.encode("cp1252"))
    assert_clean_error(run("train", latin, "--out", tmp_path / "a", *TINY),
                       "latin.txt: not UTF-8 (invalid byte at offset 3); if it is in another "
                       "encoding, give it with --encoding")
    r = run("train", latin, "--encoding", "cp1252", "--out", tmp_path / "b", *TINY)
    assert r.exit_code == 0, r.stderr
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["corpus"]["encoding"] == "cp1252"
    r = run("prepare", latin, "--encoding", "cp1252", "--out", tmp_path / "prep")
    assert r.exit_code == 0, r.stderr
    vocab = json.loads((tmp_path / "prep" / "vocab.json").read_text())
    assert "\u201c" in json.dumps(vocab, ensure_ascii=False)  # cp1252's 0x93, decoded
    utf8 = tmp_path / "utf8.txt"
    utf8.write_text(text, encoding="utf-8")
    figures = []
    for path, extra in ((latin, ["--encoding", "cp1252"]), (utf8, [])):
        r = run("eval", path, "--checkpoint", tmp_path / "b", "--json", *extra)
        assert r.exit_code == 0, r.stderr
        figures.append(json.loads(r.stdout))
    assert figures[0]["loss_nats"] == figures[1]["loss_nats"] and figures[0]["unknown"] == 0
    # In a directory the file is taken (not skipped as binary) when the encoding is given.
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "latin.txt").write_bytes(latin.read_bytes())
    r = run("train", tmp_path / "dir", "--encoding", "cp1252", "--out", tmp_path / "c", *TINY)
    assert r.exit_code == 0, r.stderr
    assert_clean_error(run("train", latin, "--encoding", "klingon", *TINY), "--encoding")
