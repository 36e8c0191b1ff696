"""``charlm classify``: train, evaluate and use many-to-one classifiers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..classify_runs import CLASSIFY_OPTIONS
from ..errors import CharLMError
from ..options import resumable_flags, split_by_owner
from ..presets import CLASSIFY_PRESET_NOTES, CLASSIFY_PRESETS
from ..probe import PENALTIES
from ..text.labelled import LabelledConfig
from ..text.sources import ReadConfig
from .app import group
from .common import Guard, JsonOpt, NprocOpt, err, in_processes, out, warn
from .params import with_options
from .training_view import TrainView, run_trainer, start_words

classify_app = group("classify", "Classify whole texts (many-to-one): train a classifier from "
                                 "scratch or on a trained language model, evaluate it, predict "
                                 "labels.")

DataArg = Annotated[list[Path], typer.Argument(
    help="Labelled data: a directory of label sub-directories (a file per example), files "
         "named by their label (a line per example), CSV / TSV / JSON lines, or lines that "
         "start with their label (see --format).")]
ClassifierOpt = Annotated[Path, typer.Option(
    "--checkpoint", help="A classifier's run directory (its best checkpoint) or a .safetensors "
                         "file.")]


def _shares(counts: dict) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{k} {v / total:.0%}" for k, v in counts.items())


def _start_line(data: dict) -> str:
    total = data["total_steps"]
    budget = f"{total:,} steps" if total else ""
    if data.get("max_time"):
        budget += (" or " if budget else "") + f"{data['max_time']:g} s"
    return (f"{start_words(data)}: preset {data['preset']}, {data['parameters']:,} "
            f"parameters, {data['examples']:,} texts ({len(data['labels'])} labels), "
            f"{data['val_examples']:,} to validate on, {data['batches_per_epoch']:,} batches "
            f"per epoch" + (f", {budget}" if budget else ""))


def _eval_line(data: dict) -> tuple[str, str]:
    return (f"val accuracy {data['val_accuracy']:.4f}  macro-F1 {data['val_f1']:.4f}  loss "
            f"{data['val_loss']:.4f}", f"{data['val_accuracy']:.3f}")


@classify_app.command("train")
@with_options(LabelledConfig, *CLASSIFY_OPTIONS, skip=("tie_weights",),
              presets=CLASSIFY_PRESETS)
def classify_train(
    data: Annotated[Optional[list[Path]], typer.Argument(
        help="Labelled data (see 'charlm classify eval --help' for the layouts).")] = None,
    val: Annotated[Optional[list[Path]], typer.Option(
        help="Validation data (repeatable). Default: a share of DATA held out "
             "(--val-fraction).")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help=f"Model size and training budget: "
             f"{'; '.join(f'{n}: {CLASSIFY_PRESET_NOTES[n]}' for n in CLASSIFY_PRESETS)}. "
             f"Options given override its values. Default: default.")] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        help="A language model's run directory: the classifier starts from its backbone (its "
             "vocab, cell and sizes; characters it never saw read as unknown).")] = None,
    probe: Annotated[bool, typer.Option(
        "--probe", help="With --init-from: freeze the language model and fit a logistic "
                        "regression on its pooled top-layer state (--pooling: the last state, "
                        "or with its max and mean) instead of training: a linear probe.")] = False,
    probe_penalty: Annotated[Optional[str], typer.Option(
        help=f"The probe's penalty: {', '.join(PENALTIES)} (l1 leaves few units with a "
             f"weight). Default: l2.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory. Default: ./checkpoints/<data name> (numbered if "
                      "taken).")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help=f"Continue the run in this directory from its last checkpoint, on the same data. "
             f"Only {', '.join(resumable_flags(CLASSIFY_OPTIONS))} may change.")] = None,
    nproc: NprocOpt = 1,
    options: dict = None,
):
    """Train a classifier; the best checkpoint by validation accuracy is kept."""
    from ..classify_runs import new_classifier_run, probe_run, resume_classifier_run

    with Guard():
        if probe and nproc > 1:
            raise CharLMError("--probe fits in one process; leave out --nproc")
        in_processes(nproc)
        given = split_by_owner(options, (LabelledConfig, *CLASSIFY_OPTIONS))
        reading = given.pop(LabelledConfig)
        train_options = {k: v for part in given.values() for k, v in part.items()}
        if resume is not None:
            if data or val or preset or init_from or probe or out_dir or reading:
                raise CharLMError("--resume continues a run on its own data and settings; give only "
                             "the options that may change")
            view = TrainView(_start_line, _eval_line, "texts")
            trainer = resume_classifier_run(resume, train_options, report=view, warn=warn)
        else:
            if not data:
                raise CharLMError("give the labelled data to train on")
            if probe_penalty is not None and not probe:
                raise CharLMError("--probe-penalty applies only with --probe")
            if probe:
                if init_from is None:
                    raise CharLMError("--probe needs --init-from LM_RUN (the model to probe)")
                summary = probe_run(data, val, out_dir, reading, train_options, init_from,
                                    probe_penalty or "l2", warn=warn)
                choice, best = summary["probe"], summary["best"]
                err.print(f"probe: {choice['penalty']} logistic regression on "
                          f"{choice['features']:,} features, C {choice['C']:g} "
                          f"({choice['chosen_on']} accuracy by C: " + ", ".join(f"{c} {a:.4f}" for c, a in
                                                          choice["tried"].items())
                          + f"); {choice['weighted_features']:,} features with a non-zero "
                            f"weight, from {choice['units']:,} of the top layer's units",
                          markup=False)
                err.print(f"done: val accuracy {best['val_accuracy']:.4f}, saved in "
                          f"{summary['run_dir']}/", markup=False)
                return
            view = TrainView(_start_line, _eval_line, "texts")
            trainer = new_classifier_run(data, val, out_dir, preset, reading, train_options,
                                         init_from, report=view, warn=warn)
        counts = trainer.task.data.get("train", {}).get("counts")
        if counts:
            err.print(f"labels: {_shares(counts)}", markup=False)
        summary = run_trainer(trainer, view, "charlm classify train")
        best = summary["best"]
        best_text = (f"best val accuracy {best['val_accuracy']:.4f} (macro-F1 "
                     f"{best['val_f1']:.4f}), " if best else "")
        steps = f"{summary['step']:,} step{'s' if summary['step'] != 1 else ''}"
        err.print(f"done: {steps} in {summary['elapsed']:.0f} s, {best_text}saved in "
                  f"{summary['run_dir']}/", markup=False)


@classify_app.command("eval")
@with_options(LabelledConfig)
def classify_eval(
    data: DataArg,
    checkpoint: ClassifierOpt,
    as_json: JsonOpt = False,
    plot: Annotated[Optional[Path], typer.Option(
        help="Also write the confusion matrix as a PNG here (an existing file is never "
             "overwritten).")] = None,
    options: dict = None,
):
    """Accuracy, macro-F1, per-class precision / recall / F1 / support and the confusion matrix
    on labelled data."""
    from ..classify import evaluate_classifier
    from ..classify_runs import load_classifier, read_examples
    from ..text.labelled import LabelledConfig as Reading

    with Guard():
        if plot is not None and plot.exists():
            raise CharLMError(f"--plot {plot} exists; choose another path or remove it")
        ckpt = load_classifier(checkpoint)
        examples = read_examples(data, Reading.from_given(**options), warn)
        result = evaluate_classifier(ckpt.model, ckpt.vocab, examples.texts, examples.labels)
        labels = ckpt.model.config.labels
        if result["unseen_labels"]:
            warn("labels the model never saw (counted as wrong): " + ", ".join(
                f"{k} ({v:,})" for k, v in sorted(result["unseen_labels"].items())))
        if result["unknown_chars"]:
            warn(f"{result['unknown_chars']:,} character(s) unknown to the model's vocab (read "
                 f"as UNK)")
        if plot is not None:
            from ..classify import confusion_plot
            if plot.exists():  # made while the texts were read
                raise CharLMError(f"--plot {plot} exists; choose another path or remove it")
            confusion_plot(result["confusion"], labels, plot,
                           title=f"{ckpt.path.parent.name}: {', '.join(map(str, data))}")
        if as_json:
            print(json.dumps({"checkpoint": str(ckpt.path), "data": [str(p) for p in data],
                              **result}))
            return
        err.print(f"checkpoint: {ckpt.path}", markup=False)
        out.print(", ".join(str(p) for p in data), markup=False)
        summary = Table()
        summary.add_column("metric")
        summary.add_column("value", justify="right")
        summary.add_row("accuracy", f"{result['accuracy']:.4f}")
        summary.add_row("macro-F1", f"{result['macro_f1']:.4f}")
        summary.add_row("examples", f"{result['examples']:,}")
        if result["unknown_labels"]:
            summary.add_row("with labels the model never saw", f"{result['unknown_labels']:,}")
        out.print(summary)
        per = Table()
        for col in ("label", "precision", "recall", "F1", "support"):
            per.add_column(col, justify="left" if col == "label" else "right")
        for name, f in result["per_class"].items():
            per.add_row(name, f"{f['precision']:.4f}", f"{f['recall']:.4f}", f"{f['f1']:.4f}",
                        f"{f['support']:,}")
        out.print(per)
        out.print("confusion matrix (rows: the true label, columns: the predicted one)")
        matrix = Table()
        matrix.add_column("true \\ predicted")
        for name in labels:
            matrix.add_column(name, justify="right")
        for name, row in zip(labels, result["confusion"]):
            matrix.add_row(name, *[f"{v:,}" for v in row])
        out.print(matrix)
        if plot is not None:
            err.print(f"plot: {plot}", markup=False)


@classify_app.command("predict")
@with_options(ReadConfig)
def classify_predict(
    texts: Annotated[Optional[list[str]], typer.Argument(
        help="Texts to classify. Default: the lines of --file, else of stdin.")] = None,
    checkpoint: ClassifierOpt = ...,
    file: Annotated[Optional[Path], typer.Option(
        help="A file of texts, one per line.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per text (text, label, probability, top).")] = False,
    top: Annotated[int, typer.Option(
        min=1, help="Show the K likeliest labels. Default: 1.")] = 1,
    options: dict = None,
):
    """A label and its probability for each text (stripped of the whitespace around it; empty
    ones skipped), streamed as the texts are read (any number of lines in flat memory)."""
    from ..classify import predict_stream
    from ..classify_runs import load_classifier
    from ..text.sources import lines_of

    with Guard():
        if texts and file is not None:
            raise CharLMError("give texts as arguments or --file, not both")
        reading = ReadConfig.from_given(**options)
        ckpt = load_classifier(checkpoint)
        if texts:
            source = iter(texts)
        elif file is not None:
            try:
                stream = open(file, "rb")
            except OSError as exc:
                raise CharLMError(f"{file}: cannot read: {exc.strerror}") from None
            source = lines_of(stream, file, reading.encoding)
        else:
            if sys.stdin.isatty():
                err.print("reading texts from stdin, one per line (Ctrl-D to end)")
            source = lines_of(sys.stdin.buffer, Path("<stdin>"), reading.encoding)
        empty = [0]

        def cleaned(texts):  # as training reads texts: stripped, empty ones skipped
            for text in texts:
                text = text.strip()
                if text:
                    yield text
                else:
                    empty[0] += 1
        for text, ranked in predict_stream(ckpt.model, ckpt.vocab, cleaned(source), top=top):
            label, p = ranked[0]
            if as_json:
                line = json.dumps({"text": text, "label": label, "probability": p,
                                   **({"top": [[n, q] for n, q in ranked]} if top > 1 else {})},
                                  ensure_ascii=False)
            else:
                shown = "\t".join(f"{n}\t{q:.4f}" for n, q in ranked)
                line = f"{shown}\t{text}"
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if empty[0]:
            warn(f"{empty[0]:,} empty line(s) skipped")
