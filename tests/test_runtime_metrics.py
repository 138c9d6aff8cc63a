"""runtime.metrics against values worked out by hand, the seed loop's own
arithmetic, and sklearn."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from runtime.metrics import EarlyStop, Evaluation, better, macro_f1

# 4 samples, 3 classes; predictions (argmax) 2, 0, 1, 2; labels 2, 1, 1, 0
LOGITS = torch.tensor(
    [
        [0.1, 0.2, 0.7],  # label 2: top1 hit
        [0.5, 0.4, 0.1],  # label 1: second
        [0.2, 0.6, 0.2],  # label 1: top1 hit
        [0.1, 0.3, 0.6],  # label 0: third
    ]
)
LABELS = torch.tensor([2, 1, 1, 0])


def evaluation(keys, batches, classes) -> Evaluation:
    ev = Evaluation(keys, classes)
    for logits, labels in batches:
        ev.update(logits, labels, nn.functional.cross_entropy(logits, labels).item() * len(labels))
    return ev


def evaluate(keys, batches, classes) -> dict[str, float]:
    return evaluation(keys, batches, classes).result()


def test_hand_computed_values():
    r = evaluate(["loss", "accuracy", "top2", "macro_f1"], [(LOGITS, LABELS)], 3)
    assert list(r) == ["val_loss", "val_accuracy", "val_top2", "val_macro_f1"]
    assert r["val_accuracy"] == 0.5
    assert r["val_top2"] == 0.75
    # class 0: TP 0, FP 1, FN 1 -> 0; class 1: TP 1, FP 0, FN 1 -> 2/3; class 2: TP 1, FP 1, FN 0 -> 2/3
    assert r["val_macro_f1"] == pytest.approx((0 + 2 / 3 + 2 / 3) / 3, rel=1e-15)
    expected_loss = -sum(torch.log_softmax(LOGITS, 1)[i, y].item() for i, y in enumerate(LABELS.tolist())) / 4
    assert r["val_loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_loss_is_always_reported_and_only_asked_metrics_follow():
    r = evaluate(["accuracy"], [(LOGITS, LABELS)], 3)
    assert list(r) == ["val_loss", "val_accuracy"]
    assert list(evaluate([], [(LOGITS, LABELS)], 3)) == ["val_loss"]


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'top0'"):
        Evaluation(["top0"], 3)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        Evaluation(["f1"], 3)


def test_numbers_match_the_seed_loop_exactly():
    """The seed loop's own sums over uneven batches, compared with ==."""
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(103, 10, generator=g), torch.randint(0, 10, (103,), generator=g)
    batches = [(logits[i : i + 32], labels[i : i + 32]) for i in range(0, 103, 32)]
    criterion = nn.CrossEntropyLoss()
    total, correct, seen = 0.0, 0, 0
    for outputs, y in batches:
        total += criterion(outputs, y).item() * len(y)
        correct += (outputs.argmax(1) == y).sum().item()
        seen += len(y)
    r = evaluate(["loss", "accuracy"], batches, 10)
    assert r["val_loss"] == total / seen
    assert r["val_accuracy"] == correct / seen


def test_top_k_counts_labels_among_the_k_highest():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(200, 7, generator=g), torch.randint(0, 7, (200,), generator=g)
    r = evaluate(
        ["accuracy", "top1", "top3", "top5", "top7", "top9"],
        [(logits[:90], labels[:90]), (logits[90:], labels[90:])],
        7,
    )
    for k in (3, 5):
        hits = sum(labels[i].item() in logits[i].topk(k).indices.tolist() for i in range(200))
        assert r[f"val_top{k}"] == hits / 200
    assert r["val_top1"] == r["val_accuracy"]
    assert r["val_top7"] == r["val_top9"] == 1.0  # k at or past the class count counts everything


def test_ties_break_as_argmax_does_so_top1_is_accuracy():
    logits = torch.zeros(3, 4)  # every class tied: argmax says class 0
    labels = torch.tensor([0, 1, 3])
    r = evaluate(["accuracy", "top1", "top2"], [(logits, labels)], 4)
    assert r["val_accuracy"] == r["val_top1"] == 1 / 3
    assert r["val_top2"] == 2 / 3  # classes 0 and 1 rank first


def test_macro_f1_matches_sklearn():
    g = torch.Generator().manual_seed(2)
    for trial in range(20):
        classes = 2 + trial % 6
        n = 5 + trial * 3
        logits = torch.randn(n, classes, generator=g)
        labels = torch.randint(0, classes, (n,), generator=g)
        if trial % 3 == 0:  # some classes absent from the labels
            labels = labels.clamp(max=classes // 2)
        batches = [(logits[i : i + 8], labels[i : i + 8]) for i in range(0, n, 8)]
        r = evaluate(["macro_f1"], batches, classes)
        expected = f1_score(labels.numpy(), logits.argmax(1).numpy(), average="macro", zero_division=0)
        assert r["val_macro_f1"] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_macro_f1_leaves_out_classes_never_present_nor_predicted():
    # 5 classes; classes 3 and 4 appear nowhere: the mean is over 0, 1, 2 as in sklearn
    confusion = torch.zeros(5, 5, dtype=torch.int64)
    confusion[0, 0], confusion[1, 1], confusion[2, 0] = 2, 1, 1  # label 2 predicted as 0
    # class 0: TP 2 FP 1 FN 0 -> 4/5; class 1: 1; class 2: TP 0 FN 1 -> 0
    assert macro_f1(confusion) == pytest.approx((0.8 + 1 + 0) / 3, rel=1e-15)
    y_true, y_pred = [0, 0, 1, 2], [0, 0, 1, 0]
    assert macro_f1(confusion) == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0), rel=1e-15)
    # a class predicted but never present counts, as 0
    confusion[0, 4] = 1
    y_true, y_pred = [0, 0, 1, 2, 0], [0, 0, 1, 0, 4]
    assert macro_f1(confusion) == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0), rel=1e-15)


def test_bad_shapes_and_labels_are_refused():
    ev = Evaluation(["accuracy", "macro_f1"], 3)
    with pytest.raises(ValueError, match=r"expected logits \(N, 3\)"):
        ev.update(torch.zeros(2, 4), torch.tensor([0, 1]), 0.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ev.update(torch.zeros(2, 3), torch.tensor([0, 3]), 0.0)
    with pytest.raises(ValueError, match="no samples"):
        ev.result()


def test_pack_and_unpack_sum_across_processes():
    """What an all_reduce of pack() gives: the metrics of the two shards together."""
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(50, 6, generator=g), torch.randint(0, 6, (50,), generator=g)
    keys = ["loss", "accuracy", "top3", "macro_f1"]
    shards = [evaluation(keys, [(logits[s], labels[s])], 6) for s in (slice(0, 20), slice(20, 50))]
    merged = Evaluation(keys, 6)
    merged.unpack(shards[0].pack() + shards[1].pack())
    whole = evaluation(keys, [(logits[:20], labels[:20]), (logits[20:], labels[20:])], 6)
    assert merged.result() == whole.result()
    assert (merged.seen, merged.correct, merged.top, merged.loss_sum) == (
        whole.seen,
        whole.correct,
        whole.top,
        whole.loss_sum,
    )
    assert torch.equal(merged.confusion, whole.confusion)


# --- better and early stopping ------------------------------------------------


def test_better_higher_except_loss():
    assert better("accuracy", 0.6, 0.5) and not better("accuracy", 0.5, 0.5) and not better("accuracy", 0.4, 0.5)
    assert better("loss", 0.4, 0.5) and not better("loss", 0.5, 0.5) and not better("loss", 0.6, 0.5)
    assert better("val_loss", 0.4, 0.5) and not better("val_accuracy", 0.4, 0.5)
    assert better("top5", 0.9, 0.8) and better("macro_f1", 0.9, 0.8)
    assert better("accuracy", 0.0, None) and better("loss", 123.0, None)
    assert not better("loss", float("nan"), None) and not better("loss", float("nan"), 1.0)


def test_better_min_delta_must_be_exceeded():
    assert not better("accuracy", 0.55, 0.5, min_delta=0.05)
    assert better("accuracy", 0.5501, 0.5, min_delta=0.05)
    assert not better("loss", 0.45, 0.5, min_delta=0.05)
    assert better("loss", 0.4499, 0.5, min_delta=0.05)


def test_early_stop_counts_evaluations_without_improvement():
    stop = EarlyStop(patience=2)
    values = [0.5, 0.6, 0.6, 0.7, 0.65, 0.7]
    assert [stop.update("accuracy", v) for v in values] == [False, False, False, False, False, True]
    assert stop.best == 0.7 and stop.bad == 2


def test_early_stop_on_loss_goes_down():
    stop = EarlyStop(patience=1)
    assert stop.update("loss", 1.0) is False
    assert stop.update("loss", 0.9) is False
    assert stop.update("loss", 0.95) is True


def test_early_stop_nan_is_no_improvement():
    stop = EarlyStop(2)
    assert [stop.update("loss", v) for v in [float("nan"), 1.0, float("nan"), float("nan")]] == [
        False,
        False,
        False,
        True,
    ]


def test_early_stop_min_delta_keeps_the_best_until_beaten_by_more():
    """Many small gains do not reset patience: the best moves only on a gain over min_delta."""
    stop = EarlyStop(3, min_delta=0.05)
    assert [stop.update("accuracy", v) for v in [0.50, 0.52, 0.53, 0.54]] == [False, False, False, True]
    assert stop.best == 0.50
    stop = EarlyStop(3, min_delta=0.05)
    values = [0.50, 0.52, 0.54, 0.56, 0.57]
    assert [stop.update("accuracy", v) for v in values] == [False, False, False, False, False]
    assert stop.best == 0.56 and stop.bad == 1


def test_early_stop_follows_one_metric():
    stop = EarlyStop(3, metric_key="val_loss")
    stop.update("loss", 1.0)
    with pytest.raises(ValueError, match="follows 'loss', not 'accuracy'"):
        stop.update("accuracy", 0.5)


def test_early_stop_state_round_trip():
    stop = EarlyStop(3, 0.01)
    for v in [1.0, 0.8, 0.85]:
        stop.update("loss", v)
    state = stop.state()
    assert state == {"metric": "loss", "best": 0.8, "bad": 1}
    resumed = EarlyStop(3, 0.01)
    resumed.load_state(state)
    for v in [0.9, 0.81]:
        assert resumed.update("loss", v) == stop.update("loss", v)
    assert resumed.state() == stop.state() and resumed.should_stop
    with pytest.raises(ValueError, match="not 'accuracy'"):
        EarlyStop(3, metric_key="accuracy").load_state(state)


def test_early_stop_from_plan():
    from recipe_lang.recipe import EarlyStop as Spec
    from recipe_lang.recipe import EvaluateSpec

    P = SimpleNamespace(evaluate=EvaluateSpec(best="accuracy", early_stop=Spec(patience=4)))
    stop = EarlyStop.from_plan(P)
    assert (stop.metric_key, stop.patience, stop.min_delta) == ("accuracy", 4, 0.0)
    P.evaluate = EvaluateSpec(best="accuracy", early_stop=Spec(patience=2, metric="loss", min_delta=0.1))
    stop = EarlyStop.from_plan(P)
    assert (stop.metric_key, stop.patience, stop.min_delta) == ("loss", 2, 0.1)
    P.evaluate = EvaluateSpec()
    assert EarlyStop.from_plan(P) is None
