"""The linear probe: a language model frozen, its pooled top-layer state as features (the
classifier's ``--pooling``: the last state, or by default the last state with its max and mean
over the text), a logistic regression on top (scikit-learn's ``LogisticRegression``), as Radford
et al. 2017 probed their byte-level LSTM. With an L1 penalty few units keep a weight: the
figure says how few of the top layer's units carry the decision.

The regression becomes an ordinary classifier checkpoint: the language model's backbone and a
linear head whose weights are the regression's (the feature standardisation folded in), so
``charlm classify eval`` and ``predict`` read it like any other.

    features (N, F) = pooling(backbone(text))          frozen, float32
    standardised by the training features' mean and deviation
    C (the inverse penalty) chosen from PROBE_C by validation accuracy
    head: W = coef / sd,  b = intercept - (coef / sd) . mean
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .classify import padded
from .errors import CharLMError

PROBE_C = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MAX_ITER = 1000
PENALTIES = ("l2", "l1")
FEATURE_BATCH = 64


@torch.no_grad()
def features(model, ids: list[np.ndarray], batch_size: int = FEATURE_BATCH) -> np.ndarray:
    """The pooled features (N, F) the classifier's head would read, in the texts' order."""
    order = np.argsort([len(i) for i in ids], kind="stable")
    out = None
    with model.inference():
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            x, lengths = padded(ids, rows, model.device)
            f = model.features(x, lengths).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(ids), f.shape[1]), dtype=np.float32)
            out[rows] = f
    return out


def _fit(x: np.ndarray, y: np.ndarray, c: float, penalty: str, seed: int):
    import inspect

    from sklearn.linear_model import LogisticRegression

    # L1: liblinear for two labels, saga (multinomial) for more; L2: lbfgs. scikit-learn 1.8
    # words the penalty as l1_ratio (and deprecates "penalty"); older ones take "penalty".
    solver = ("liblinear" if len(np.unique(y)) == 2 else "saga") if penalty == "l1" else "lbfgs"
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        kind = {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    else:
        kind = {"penalty": penalty}
    model = LogisticRegression(C=c, solver=solver, max_iter=MAX_ITER, tol=1e-3,
                               random_state=seed % 2**32, **kind)
    try:
        with warnings.catch_warnings():  # an unconverged fit is still a fit; C is chosen
            warnings.simplefilter("ignore", category=UserWarning)
            return model.fit(x, y)
    except ValueError as exc:
        raise CharLMError(f"the probe's logistic regression failed: {exc}") from None


def check_probe(penalty: str, head_hidden: int) -> None:
    """Refuse a probe that cannot be fitted, before anything is read or written."""
    if penalty not in PENALTIES:
        raise CharLMError(f"--probe-penalty must be one of {', '.join(PENALTIES)}")
    if head_hidden:
        raise CharLMError("the probe fits a linear head; leave out --head-hidden")


def fit_probe(classifier, train_ids, train_labels: np.ndarray, val_ids, val_labels,
              penalty: str = "l2", seed: int = 0, report=None) -> dict:
    """Fit the regression on the frozen features of ``classifier`` (its backbone copied from a
    language model) and write it into the classifier's linear head. Returns the choice: C,
    the accuracy of each C tried (on the validation texts, or without any on the training
    texts: "chosen_on"), the features with a non-zero weight and the units they belong to."""
    check_probe(penalty, classifier.config.head_hidden)
    x = features(classifier, train_ids)
    mean, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mean) / sd
    chosen_on = "validation"
    if val_ids is not None and len(val_ids):
        xv = (features(classifier, val_ids) - mean) / sd
    else:  # no validation data: chosen on the training fit
        xv, val_labels, chosen_on = xs, train_labels, "training"
    tried, best = {}, None
    for c in PROBE_C:
        fitted = _fit(xs, train_labels, c, penalty, seed)
        accuracy = float((fitted.predict(xv) == val_labels).mean())
        tried[c] = accuracy
        if report:
            report("probe", {"C": c, "val_accuracy": accuracy})
        if best is None or accuracy > best[1]:
            best = (c, accuracy, fitted)
    c, accuracy, fitted = best
    classes = classifier.config.num_classes
    coef = np.zeros((classes, x.shape[1]))
    intercept = np.zeros(classes)
    if fitted.coef_.shape[0] == 1:  # binary: logits (0, z) give softmax = (1 - s(z), s(z))
        coef[fitted.classes_[1]] = fitted.coef_[0]
        intercept[fitted.classes_[1]] = fitted.intercept_[0]
    else:
        coef[fitted.classes_] = fitted.coef_
        intercept[fitted.classes_] = fitted.intercept_
    weight = coef / sd
    bias = intercept - weight @ mean
    with torch.no_grad():
        classifier.head.out.weight.copy_(torch.from_numpy(weight).float())
        classifier.head.out.bias.copy_(torch.from_numpy(bias).float())
    weighted = np.abs(coef).sum(axis=0) > 0
    return {"C": c, "val_accuracy": accuracy, "tried": {str(k): v for k, v in tried.items()},
            "chosen_on": chosen_on, "penalty": penalty, "features": int(x.shape[1]),
            "weighted_features": int(np.count_nonzero(weighted)),
            "units": weighted_units(weighted, classifier.config.hidden_dim)}


def weighted_units(weighted: np.ndarray, hidden: int) -> int:
    """How many of the top layer's ``hidden`` units have a weight on any of their pooled
    features (``weighted``: per feature; concat pooling holds each unit three times: its last
    value, its max and its mean)."""
    return int(np.count_nonzero(weighted.reshape(-1, hidden).any(axis=0)))
