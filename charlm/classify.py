"""What a trained classifier gives on texts: probabilities, labels and the figures of a labelled
set (accuracy, macro-F1, per-class precision / recall / F1 / support, the confusion matrix).

Texts are encoded with the model's vocab (characters it never saw are UNK and counted), sorted
by length so each batch pads little, and read in batches; the results come back in the texts'
order. ``predict_stream`` reads an iterable of texts a batch at a time, so any number of texts
runs in flat memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .devices import COMPUTE_DTYPES
from .errors import CharLMError
from .text.vocab import PAD_ID, Vocab

EVAL_BATCH = 64          # texts per batch when predicting
STREAM_BATCH = 1024      # texts read at a time from a stream (sorted by length inside)


@dataclass
class Encoded:
    """Texts as id arrays, and how many of their characters the vocab did not know."""

    ids: list[np.ndarray]
    unknown: int = 0

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(i) for i in self.ids), dtype=np.int64, count=len(self.ids))


def encode(vocab: Vocab, texts: list[str]) -> Encoded:
    ids = [i.astype(np.int64) for i in vocab.encode_many(texts)] if texts else []
    unknown = 0
    if vocab.unk_id is not None:
        unknown = sum(int(np.count_nonzero(i == vocab.unk_id)) for i in ids)
    for n, i in enumerate(ids):
        if len(i) == 0:  # a text the vocab encodes to nothing: read as one UNK (or PAD-free EOD)
            ids[n] = np.asarray([vocab.unk_id if vocab.unk_id is not None else vocab.eod_id])
    return Encoded(ids, unknown)


def padded(ids: list[np.ndarray], rows, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The texts ``rows`` of ``ids`` as a batch: ids (B, T) with PAD after each text's end, and
    lengths (B,)."""
    lengths = torch.tensor([len(ids[r]) for r in rows], dtype=torch.long)
    batch = np.full((len(rows), int(lengths.max())), PAD_ID, dtype=np.int64)
    for j, r in enumerate(rows):
        batch[j, :len(ids[r])] = ids[r]
    return torch.from_numpy(batch).to(device), lengths.to(device)


@torch.no_grad()
def probabilities(model, ids: list[np.ndarray], batch_size: int = EVAL_BATCH,
                  precision: str = "fp32") -> np.ndarray:
    """Class probabilities (N, C) of the texts ``ids``, in their order."""
    out = np.zeros((len(ids), model.config.num_classes), dtype=np.float32)
    order = np.argsort([len(i) for i in ids], kind="stable")
    with model.inference(COMPUTE_DTYPES[precision]):
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            x, lengths = padded(ids, rows, model.device)
            out[rows] = torch.softmax(model(x, lengths).float(), dim=-1).cpu().numpy()
    return out


def figures(true: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...],
            probabilities: np.ndarray | None = None) -> dict:
    """Accuracy, macro-F1, per-class precision / recall / F1 / support and the confusion matrix
    (rows: true labels, columns: predicted) of label ids ``true`` against ``predicted``. A
    true id of -1 is a label the model does not know: counted as wrong, and in no class's
    figures. Macro-F1 averages the labels that occur (as a true label or a prediction), as
    scikit-learn does. With ``probabilities``, the mean cross-entropy over the known labels
    too."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    known = true >= 0
    classes = list(range(len(labels)))
    if known.any():
        p, r, f, support = precision_recall_fscore_support(
            true[known], predicted[known], labels=classes, zero_division=0)
        confusion = confusion_matrix(true[known], predicted[known], labels=classes).tolist()
    else:  # no text carries a label the model knows
        p = r = f = support = np.zeros(len(classes))
        confusion = [[0] * len(classes) for _ in classes]
    result = {
        "accuracy": float(np.mean(true == predicted)) if len(true) else float("nan"),
        "macro_f1": float(np.mean(f[np.union1d(true[known], predicted[known]).astype(int)]))
        if known.any() else 0.0,
        "examples": int(len(true)),
        "per_class": {labels[c]: {"precision": float(p[c]), "recall": float(r[c]),
                                  "f1": float(f[c]), "support": int(support[c])}
                      for c in classes},
        "confusion": confusion,
        "unknown_labels": int((~known).sum()),
    }
    if probabilities is not None and known.any():
        chosen = probabilities[np.flatnonzero(known), true[known]]
        result["loss"] = float(-np.log(np.clip(chosen, 1e-12, None)).mean())
    return result


def label_ids(labels: list[str], known: tuple[str, ...]) -> tuple[np.ndarray, dict[str, int]]:
    """Label names as the model's ids (-1 for a name it does not know), and how many texts
    carry each unknown name."""
    index = {name: i for i, name in enumerate(known)}
    ids = np.fromiter((index.get(name, -1) for name in labels), dtype=np.int64,
                      count=len(labels))
    unseen: dict[str, int] = {}
    for name in labels:
        if name not in index:
            unseen[name] = unseen.get(name, 0) + 1
    return ids, unseen


def evaluate_classifier(model, vocab: Vocab, texts: list[str], labels: list[str],
                        precision: str = "fp32") -> dict:
    """The figures (see ``figures``) of ``model`` on labelled texts, with "unseen_labels" (the
    label names the model does not know, with their counts) and "unknown_chars"."""
    if not texts:
        raise CharLMError("no examples to evaluate")
    encoded = encode(vocab, texts)
    probs = probabilities(model, encoded.ids, precision=precision)
    true, unseen = label_ids(labels, model.config.labels)
    result = figures(true, probs.argmax(axis=1), model.config.labels, probs)
    result["unseen_labels"] = unseen
    result["unknown_chars"] = encoded.unknown
    return result


def top_labels(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` likeliest labels of each row, with their probabilities."""
    k = min(k, len(labels))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(labels[c], float(row[c])) for c in top] for row, top in zip(probs, order)]


def predict_stream(model, vocab: Vocab, texts: Iterable[str], top: int = 1,
                   precision: str = "fp32",
                   read_at_once: int = STREAM_BATCH) -> Iterator[tuple[str, list]]:
    """(text, its top labels with probabilities) for each text of ``texts``, in order, reading
    ``read_at_once`` texts at a time: memory stays flat whatever their number."""
    pending: list[str] = []

    def flush():
        probs = probabilities(model, encode(vocab, pending).ids, precision=precision)
        yield from zip(pending, top_labels(probs, model.config.labels, top))

    for text in texts:
        pending.append(text)
        if len(pending) >= read_at_once:
            yield from flush()
            pending = []
    if pending:
        yield from flush()


def confusion_plot(confusion: list[list[int]], labels: tuple[str, ...], path, title: str) -> None:
    """The confusion matrix as a PNG at ``path`` (rows: true labels, columns: predicted; each
    cell's count, shaded by its share of the row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_write

    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(counts[i, j]):,}", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true label")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
