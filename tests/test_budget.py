"""Settings chosen for a time budget and the text (charlm.budget), --max-time as a bound on the
whole run's wall clock, and validation on a fixed sample of a long split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from charlm import budget
from charlm.api import build_trainer
from charlm.cli.app import app
from charlm.errors import CharLMError
from charlm.evaluate import EvalConfig, evaluate
from charlm.presets import DEFAULT_PRESET, choose_preset
from charlm.text.batching import LaneLayout
from charlm.text.corpus import prepare_cached
from charlm.training.config import DEFAULT_BUDGET

from .helpers import read_metrics

BUDGETS = (10, 30, 90, 240, 600, 1800, 3600, 36000)
CORPORA = (20_000, 100_000, 300_000, 1_000_000, 4_000_000, 12_000_000, 100_000_000)


@pytest.fixture
def quick_measure(monkeypatch):
    monkeypatch.setattr(budget, "MEASURE_SECONDS", 0.0)
    monkeypatch.setattr(budget, "MIN_STEPS", 2)
    monkeypatch.setattr(budget, "WARMUP_STEPS", 1)


# ----- the rule ---------------------------------------------------------------------------------
def speeds(small: float, large: float):
    """A measurement: the small model trains at ``small`` symbols/s, the large at ``large``."""
    def speed(settings: dict) -> float:
        return small if settings["hidden_dim"] == budget.SMALL["hidden_dim"] else large
    return speed


def size(settings: dict) -> int:
    return settings["num_layers"] * settings["hidden_dim"]


def no_more(than: dict, settings: dict, model: bool = True) -> bool:
    """``settings`` has no bigger model (when ``model``) and no more regularisation."""
    return (not model or size(settings) <= size(than)) and all(
        settings[k] <= than[k] for k in ("dropout", "weight_drop"))


SPEEDS = [(40_000, 12_000), (17_000, 9_000), (200_000, 90_000), (3_000, 900)]


def test_regularisation_never_falls_as_passes_grow():
    grid = np.linspace(0, 50, 501)
    dropout = [budget.regularisation(p)["dropout"] for p in grid]
    weight_drop = [budget.regularisation(p)["weight_drop"] for p in grid]
    assert all(a <= b for a, b in zip(dropout, dropout[1:]))
    assert all(a <= b for a, b in zip(weight_drop, weight_drop[1:]))
    # None while the text is read only a few times; the measured 7-pass winner at 7 and beyond.
    first, last = budget.REGULARISATION[0], budget.REGULARISATION[-1]
    assert budget.regularisation(first[0]) == {"dropout": first[1], "weight_drop": first[2]}
    assert budget.regularisation(100.0) == {"dropout": last[1], "weight_drop": last[2]}
    assert budget.regularisation(0.1) == {"dropout": 0.0, "weight_drop": 0.0}


@pytest.mark.parametrize("seconds", BUDGETS)
@pytest.mark.parametrize("small,large", SPEEDS)
def test_a_bigger_corpus_never_gets_a_bigger_model_or_more_regularisation(seconds, small,
                                                                          large):
    chosen = [budget.choose(seconds, n, speeds(small, large))[0] for n in CORPORA]
    for smaller, bigger in zip(chosen, chosen[1:]):
        assert no_more(than=smaller, settings=bigger)


@pytest.mark.parametrize("symbols", CORPORA)
@pytest.mark.parametrize("small,large", SPEEDS)
def test_a_longer_budget_never_gets_a_smaller_model_or_less_regularisation(symbols, small,
                                                                           large):
    chosen = [budget.choose(s, symbols, speeds(small, large))[0] for s in BUDGETS]
    for short, long in zip(chosen, chosen[1:]):
        assert size(long) >= size(short)
        if size(long) == size(short):  # the same model
            assert no_more(than=long, settings=short, model=False)


def test_the_small_model_while_the_text_is_read_a_few_times_else_the_large_regularised():
    # 600 s at 20k symbols/s reads 12M symbols: a 12M-symbol corpus once, a 1M one 12 times.
    chosen, record = budget.choose(600, 12_000_000, speeds(20_000, 10_000))
    assert record["model"] == "small" and record["passes"] == pytest.approx(1.0)
    assert chosen["hidden_dim"] == budget.SMALL["hidden_dim"] and chosen["dropout"] == 0
    assert list(record["symbols_per_s"]) == ["small"]  # the large model is not measured
    chosen, record = budget.choose(600, 1_000_000, speeds(20_000, 10_000))
    assert record["model"] == "large" and record["passes"] == pytest.approx(6.0)
    assert chosen["num_layers"] == budget.LARGE["num_layers"]
    assert chosen == {**chosen, **budget.regularisation(6.0)} and chosen["dropout"] > 0


def test_a_cell_without_weight_drop_is_timed_and_regularised_by_dropout_alone():
    timed = []

    def speed(settings):
        timed.append(settings)
        return speeds(20_000, 10_000)(settings)
    chosen, record = budget.choose(600, 1_000_000, speed, given={"cell": "irnn"})
    assert record["model"] == "large" and chosen["dropout"] > 0 and chosen["weight_drop"] == 0
    assert [t.get("weight_drop", 0) for t in timed] == [0, 0]
    chosen, _ = budget.choose(600, 1_000_000, speeds(20_000, 10_000), given={"cell": "gru"})
    assert chosen["weight_drop"] > 0  # the others keep it


def test_the_choice_counts_passes_and_validations_from_the_budget_left():
    chosen, record = budget.choose(600, 1_000_000, speeds(10_000, 5_000), lambda: 100.0)
    assert record["passes"] == pytest.approx(500 * 10_000 / 1_000_000, abs=0.01)
    steps = 500 * 10_000 / (chosen["batch_size"] * chosen["bptt_len"])
    assert record["steps"] == int(steps) and record["spent"] == 100.0
    assert chosen["eval_every"] % 50 == 0
    assert abs(chosen["eval_every"] - steps / budget.VALIDATIONS_PER_RUN) <= 25
    assert budget.choose(5, 1_000_000, speeds(1_000, 500))[0]["eval_every"] == \
        budget.MIN_EVAL_EVERY
    assert record["settings"] == chosen


# ----- a run set up for a budget ----------------------------------------------------------------
def test_max_time_alone_chooses_settings_for_the_budget_and_the_text(tmp_path, small_corpus,
                                                                     quick_measure,
                                                                     monkeypatch):
    t = build_trainer(small_corpus, out=tmp_path / "a", max_time=100, device="cpu")
    choice = t.run_config()["auto"]
    assert t.preset == budget.AUTO and t.run_config()["preset"] == budget.AUTO
    settings = choice["settings"]
    for name in ("num_layers", "hidden_dim", "dropout", "weight_drop"):
        assert getattr(t.model.config, name) == settings[name]
    assert t.config.eval_every == settings["eval_every"] and t.config.max_time == 100
    assert t.config.max_steps is None  # the budget is the stopping rule
    assert choice["train_symbols"] == t.task.train_split.symbols
    # A small text read many times in the budget: the large model, the most regularisation.
    assert choice["model"] == "large" and set(choice["symbols_per_s"]) == {"small", "large"}
    assert choice["passes"] > budget.REGULARISATION[-1][0]
    assert settings["dropout"] == budget.REGULARISATION[-1][1]
    assert 0 < t.pos.elapsed < 100  # the measurement is part of the run's time

    # An option given wins over the choice, and the record says so.
    t = build_trainer(small_corpus, out=tmp_path / "b", max_time=100, dropout=0.05,
                      device="cpu")
    assert t.model.config.dropout == 0.05
    assert t.choice["given"] == ["dropout"] and t.choice["settings"]["dropout"] == 0.05
    # A cell given is sized by the rule, which measures that cell's speed.
    measured = []
    measure = budget.measure
    monkeypatch.setattr(budget, "measure", lambda step, seconds: (
        measured.append(step.__self__.model.config.cell), measure(step, seconds))[1])
    t = build_trainer(small_corpus, out=tmp_path / "e", max_time=100, cell="gru", device="cpu")
    assert t.preset == budget.AUTO and t.choice["given"] == ["cell"]
    assert measured == ["gru", "gru"]  # the small model's speed, then the large one's
    assert t.model.config.cell == "gru" and t.choice["settings"]["cell"] == "gru"
    assert t.model.config.hidden_dim == t.choice["settings"]["hidden_dim"] == budget.LARGE[
        "hidden_dim"]
    t = build_trainer(small_corpus, out=tmp_path / "f", max_time=100, cell="irnn", device="cpu")
    assert t.choice["model"] == "large" and t.model.config.weight_drop == 0
    # A size given, or a preset named, is not a budget's choice.
    t = build_trainer(small_corpus, out=tmp_path / "c", max_time=100, hidden_dim=48,
                      device="cpu")
    assert t.preset == "default" and t.model.config.hidden_dim == 48 and t.choice is None
    t = build_trainer(small_corpus, out=tmp_path / "d", max_time=100, preset="tiny",
                      device="cpu")
    assert t.preset == "tiny" and "auto" not in t.run_config()


def test_with_no_stopping_rule_and_no_size_a_run_gets_the_default_budget(tmp_path,
                                                                          small_corpus,
                                                                          quick_measure):
    # No option at all: the rule, for the default budget, which the run keeps as its clock.
    t = build_trainer(small_corpus, out=tmp_path / "a", device="cpu")
    assert t.preset == budget.AUTO and t.config.max_time == DEFAULT_BUDGET
    assert t.config.max_steps is None and t.config.epochs is None
    assert t.choice["budget"] == DEFAULT_BUDGET and t.choice["default_budget"]
    assert t.model.config.hidden_dim == t.choice["settings"]["hidden_dim"]
    # A budget given is no default; a cell given keeps the rule.
    t = build_trainer(small_corpus, out=tmp_path / "b", max_time=50, cell="gru", device="cpu")
    assert t.preset == budget.AUTO and t.config.max_time == 50
    assert "default_budget" not in t.choice
    # A stopping rule in steps or passes, or a size, takes the default preset, unbounded in time.
    for opts in ({"max_steps": 7}, {"epochs": 0.5}, {"num_layers": 1}):
        t = build_trainer(small_corpus, out=tmp_path / str(len(opts)) / next(iter(opts)),
                          device="cpu", **opts)
        assert t.preset == DEFAULT_PRESET and t.choice is None and t.config.max_time is None


def test_choose_preset_by_the_options_given():
    assert choose_preset(None, {}) == budget.AUTO
    assert choose_preset(None, {"max_time": 9, "cell": "rnn", "dropout": 0.1}) == budget.AUTO
    assert choose_preset(None, {"max_time": 9, "max_steps": 5}) == budget.AUTO
    for given in ({"max_steps": 5}, {"epochs": 2}, {"hidden_dim": 8}, {"max_time": 9,
                                                                         "embed_dim": 8}):
        assert choose_preset(None, given) == DEFAULT_PRESET
    assert choose_preset("large", {"max_time": 9}) == "large"


def test_a_budget_run_says_what_it_chose_and_resumes_with_it(tmp_path, small_corpus,
                                                             quick_measure):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(small_corpus), "--out", str(out),
                                      "--max-time", "5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "chosen for 5 s on this text" in result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"] == "auto" and saved["model"]["hidden_dim"] == \
        saved["auto"]["settings"]["hidden_dim"]
    resumed = build_trainer(resume=out, max_time=10)
    assert resumed.choice == saved["auto"] and resumed.run_config()["auto"] == saved["auto"]
    step = resumed.pos.step
    summary = resumed.run()
    assert summary["step"] > step  # (the bound on the clock: the fake-clock tests below)
    assert json.loads((out / "config.json").read_text())["auto"] == saved["auto"]


def test_a_budget_that_setting_up_takes_is_refused(tmp_path, small_corpus, quick_measure):
    with pytest.raises(CharLMError, match="setting the run up took .* of the 0.001 s budget"):
        build_trainer(small_corpus, out=tmp_path / "run", max_time=0.001, device="cpu")
    assert not (tmp_path / "run" / "last.safetensors").exists()


# ----- --max-time bounds the wall clock ---------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def costing(self, seconds: float, fn):
        def timed(*args, **kwargs):
            self.now += seconds
            return fn(*args, **kwargs)
        return timed


@pytest.mark.parametrize("budget_s", [40.0, 83.5])
def test_max_time_bounds_the_whole_run_validation_and_saves_included(tmp_path, small_corpus,
                                                                    tiny_options, budget_s):
    """Steps cost 1 s, every validation 3 s, every save 0.5 s on a fake clock: the run ends
    within the budget, its final validation and saves included, and the learning rate has
    decayed to its floor by the last step."""
    opts = tiny_options(max_steps=None, max_time=budget_s, eval_every=7, save_every=5,
                        val_sample=0, warmup_steps=0)
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **opts)
    clock = FakeClock()
    trainer.clock = clock
    clock.now = trainer.pos.elapsed = trainer.pos.setup = 10.0  # setting the run up took 10 s
    trainer.train_step = clock.costing(1.0, trainer.train_step)
    trainer.task.validate = clock.costing(3.0, trainer.task.validate)
    trainer.files.save = clock.costing(0.5, trainer.files.save)
    summary = trainer.run()
    assert summary["status"] == "done"
    # Not over, and not far under: the end's cost is guessed from the training speed until a
    # validation has been timed (none has, with the 40 s budget).
    assert budget_s - 8.0 <= clock.now <= budget_s
    assert summary["elapsed"] == pytest.approx(clock.now)
    records = read_metrics(tmp_path / "run")
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert evals[-1]["step"] == steps[-1]["step"]  # the final validation ran
    # The schedule spans the training time: from the peak at the first step (not decayed by
    # the setup's 10 s) to the floor at the last.
    assert steps[0]["lr"] == pytest.approx(trainer.config.lr, rel=1e-3)
    floor = trainer.config.lr * trainer.config.min_lr_ratio
    assert steps[-1]["lr"] == pytest.approx(floor, rel=0.15)
    lrs = [r["lr"] for r in steps]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # never back up


# ----- validation on a fixed sample -------------------------------------------------------------
def test_a_limited_layout_scores_the_first_symbols_of_every_lane():
    tokens = np.arange(1, 2001) % 50 + 1
    full = LaneLayout(tokens, np.asarray([0]), 8, 16, eod_id=1, burn_in=20)
    part = full.limited(30)
    assert part.num_lanes == full.num_lanes
    scored_full = np.concatenate([full.target_positions(c)
                                  for c in range(full.chunks_per_epoch)])
    scored_part = np.concatenate([part.target_positions(c)
                                  for c in range(part.chunks_per_epoch)])
    assert len(scored_part) == 8 * 30
    assert set(scored_part) <= set(scored_full)
    for start in full.starts:  # each lane's first 30 targets
        assert set(range(start + 1, start + 31)) <= set(scored_part)


def test_the_sample_figure_is_the_same_alone_and_inside_a_full_pass(tmp_path, small_corpus,
                                                                    tiny_options):
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(max_steps=5))
    trainer.run()
    split = prepare_cached([small_corpus]).split("val")
    config, n = EvalConfig(lanes=4), split.symbols // 3
    alone = evaluate(trainer.model, trainer.vocab, split, config, limit=n)
    full = evaluate(trainer.model, trainer.vocab, split, config, sample=n)
    plain = evaluate(trainer.model, trainer.vocab, split, config)
    assert alone["symbols"] == full["sample"]["symbols"] and n <= alone["symbols"] < n + 4
    assert alone["loss_nats"] == pytest.approx(full["sample"]["loss_nats"], rel=1e-6)
    assert full["loss_nats"] == pytest.approx(plain["loss_nats"], rel=1e-9)
    assert full["symbols"] == plain["symbols"] == split.symbols
    assert "sample" not in evaluate(trainer.model, trainer.vocab, split, config,
                                    sample=split.symbols)
    # A larger limit holds the smaller sample's positions: the same sample figure inside it.
    wider = evaluate(trainer.model, trainer.vocab, split, config, sample=n, limit=2 * n)
    assert 2 * n <= wider["symbols"] < 2 * n + 4 < split.symbols
    assert wider["sample"]["loss_nats"] == pytest.approx(alone["loss_nats"], rel=1e-6)


def test_validations_during_training_score_the_sample_and_the_last_scores_everything(
        tmp_path, small_corpus, tiny_options):
    run = tmp_path / "run"
    trainer = build_trainer(small_corpus, out=run, **tiny_options(max_steps=20, eval_every=10,
                                                                  val_sample=200))
    summary = trainer.run()
    evals = [r for r in read_metrics(run) if "val_loss" in r]
    val_symbols = trainer.task.val_split.symbols
    assert [r["step"] for r in evals] == [10, 20]
    assert 200 <= evals[0]["val_symbols"] < 200 + trainer.task.config.eval_lanes
    final = evals[-1]
    assert final["val_symbols"] == val_symbols and summary["best"] == {
        k: v for k, v in final.items() if k not in ("step", "best", "time")}
    # The final pass's sample figure is what a sampled validation of these weights gives.
    c = trainer.task.config
    sampled = evaluate(trainer.model, trainer.vocab, trainer.task.val_split,
                       EvalConfig(lanes=c.eval_lanes, burn_in=c.eval_burn_in), limit=200)
    assert final["val_sample_loss"] == pytest.approx(sampled["loss_nats"], rel=1e-6)


def test_under_max_time_validation_keeps_to_its_share_of_the_budget(tmp_path, small_corpus,
                                                                    tiny_options):
    """Steps cost 1 s and a validation 1 s per 100 symbols scored, on a fake clock: the
    validations during training take at most their share of the run, and the final one scores
    what its share of the budget allows (at least the sample), not the whole split."""
    from charlm.training import loop

    opts = tiny_options(max_steps=None, max_time=400.0, eval_every=5, save_every=10**6,
                        val_sample=100, warmup_steps=0)
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **opts)
    val_symbols = trainer.task.val_split.symbols
    clock = FakeClock()
    trainer.clock, trainer.pos.elapsed = clock, 0.0
    trainer.train_step = clock.costing(1.0, trainer.train_step)
    validate = trainer.task.validate

    def timed_validate(model, final=False, limit=None):
        record = validate(model, final=final, limit=limit)
        clock.now += record.get("val_symbols", val_symbols) / 100
        return record
    trainer.task.validate = timed_validate
    trainer.run()
    assert clock.now <= 400.0
    evals = [r for r in read_metrics(tmp_path / "run") if "val_loss" in r]
    during, final = evals[:-1], evals[-1]
    assert during and all(r["val_symbols"] < 100 + 32 for r in during)
    spent = sum(r["val_symbols"] / 100 for r in during)
    assert spent <= loop.VALIDATION_SHARE * final["time"] + 1e-9
    allowed = loop.FINAL_VALIDATION_SHARE * 400.0 * 100  # symbols at 100 per second
    assert val_symbols > allowed  # so the cap matters here
    assert allowed <= final["val_symbols"] < allowed + 32 and "val_sample_loss" in final


def test_a_short_budget_on_a_short_text_keeps_the_small_model():
    """The small model would read the text more than 8 times, but the large one would read it
    fewer than LARGE_FROM_PASSES times, too few steps to learn (measured: a 0.3 MB novel at
    90 s, the large model 2.58 bits/char held out, the small one 2.02)."""
    symbols = 243_650
    chosen, record = budget.choose(90, symbols, speeds(22_000, 9_000))
    assert record["model"] == "small" and chosen["hidden_dim"] == budget.SMALL["hidden_dim"]
    assert record["passes"] > budget.SMALL_UP_TO_PASSES  # the small model's own passes
    assert set(record["symbols_per_s"]) == {"small", "large"}  # both were timed
    chosen, record = budget.choose(600, symbols, speeds(22_000, 9_000))
    assert record["model"] == "large" and record["passes"] >= budget.LARGE_FROM_PASSES
