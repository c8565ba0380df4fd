import numpy as np
import pytest
import torch

from plmkit.evaluation import (ClassificationMetrics, EntityMetrics, MultiLabelMetrics, RegressionMetrics,
                               RelationMetrics, SquadMetrics, SquadThresholdSweep, normalize_answer, squad_f1)
from shard_helpers import reduced_on_first


def test_classification_streamed_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    pred[:80] = gold[:80]
    m = ClassificationMetrics(4)
    for i in range(0, 200, 32):  # batch by batch
        m.update(torch.tensor(pred[i:i + 32]), torch.tensor(gold[i:i + 32]))
    r = m.compute()
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(gold, pred))
    assert r["macro_f1"] == pytest.approx(sk.f1_score(gold, pred, average="macro"))
    assert r["micro_f1"] == pytest.approx(sk.f1_score(gold, pred, average="micro"))
    assert r["weighted_f1"] == pytest.approx(sk.f1_score(gold, pred, average="weighted"))


def test_multilabel():
    m = MultiLabelMetrics(3)
    m.update(torch.tensor([[1, 0, 1], [0, 1, 0]]), torch.tensor([[1, 0, 0], [0, 1, 0]]))
    r = m.compute()
    assert r["subset_accuracy"] == 0.5 and r["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))


def test_multilabel_macro_f1_averages_every_label_one_never_seen_scoring_zero():
    m = MultiLabelMetrics(3)  # label 0: F1 1; label 1: precision 1, recall 1/2, F1 2/3; label 2: never seen, F1 0
    m.update(torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0]]), torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]]))
    assert m.compute()["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_multilabel_streamed_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 2, (100, 5)), rng.integers(0, 2, (100, 5))
    gold[:, 4] = pred[:, 4] = 0  # a label no row has
    gold[:, 3] = 0  # one only predicted
    m = MultiLabelMetrics(5)
    for i in range(0, 100, 32):
        m.update(torch.tensor(pred[i:i + 32]), torch.tensor(gold[i:i + 32]))
    r = m.compute()
    assert r["macro_f1"] == pytest.approx(sk.f1_score(gold, pred, average="macro", zero_division=0))
    assert r["micro_f1"] == pytest.approx(sk.f1_score(gold, pred, average="micro", zero_division=0))
    assert r["subset_accuracy"] == pytest.approx(sk.accuracy_score(gold, pred))


def test_pearson_spearman_with_ties():
    stats = pytest.importorskip("scipy.stats")
    x = np.array([1, 2, 2, 3, 5, 5, 5, 8, 9, 1.5])
    y = np.array([2, 1, 4, 3, 7, 5, 6, 9, 8, 1.0])
    m = RegressionMetrics()
    m.update(torch.tensor(x[:4]), torch.tensor(y[:4]))
    m.update(torch.tensor(x[4:]), torch.tensor(y[4:]))
    r = m.compute()
    assert r["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-6)
    assert r["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-6)


@pytest.mark.parametrize("pred, gold, why", [([0.1, 0.7, 0.3], [0.5, 0.5, 0.5], "the gold labels are constant"),
                                             ([0.2, 0.2, 0.2], [0.1, 0.7, 0.3], "the predictions are constant"),
                                             ([], [], "there are no examples")])
def test_correlations_of_constant_values_are_undefined_not_zero(pred, gold, why, caplog):
    m = RegressionMetrics()
    m.update(torch.tensor(pred), torch.tensor(gold))
    r = m.compute()
    assert np.isnan(r["pearson"]) and np.isnan(r["spearman"]) and r["n"] == len(pred)
    assert f"pearson and spearman are undefined (reported as NaN): {why}" in caplog.text


def test_entity_metrics_bio_and_bioes():
    m = EntityMetrics("BIO")
    m.update([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    r = m.compute()
    assert r["precision"] == 0.5 and r["recall"] == 0.5 and r["f1"] == 0.5
    m = EntityMetrics("BIOES")
    m.update([["S-PER", "B-LOC", "E-LOC"]], [["S-PER", "B-LOC", "E-LOC"]])
    assert m.compute()["f1"] == 1.0


def test_squad_official_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple and a pear") == "apple and pear"
    assert squad_f1("the big red dog", "a red dog") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    m = SquadMetrics()
    m.update("Paris.", ["paris", "in Paris"])
    m.update("", [])  # unanswerable, predicted no answer
    m.update("x", [])
    r = m.compute()
    assert r["exact_match"] == pytest.approx(200 / 3) and r["has_ans_exact_match"] == 100 and r["no_ans_f1"] == 50


def test_squad_v2_best_threshold():
    m = SquadThresholdSweep()
    # (null score - best span score, best span, gold answers); answered when the difference <= threshold
    for diff, span, golds in [(-1.0, "Paris", ["Paris"]), (0.5, "the red dog", ["big red dog"]),  # F1 0.8, EM 0
                              (2.0, "x", []), (2.0, "1889", ["1889"]),  # a tie: both switch at 2.0
                              (4.0, "moon", []), (float("inf"), "", ["Paris"])]:  # no span: never answered
        m.update(span, diff, golds)
    r = m.compute()
    # all unanswered: 2 of 6 right; answering the first question gives 3; the partial answer adds 0.8 to F1 only
    assert r["best_exact"] == pytest.approx(300 / 6) and r["best_exact_thresh"] == -1.0
    assert r["best_f1"] == pytest.approx(380 / 6) and r["best_f1_thresh"] == 0.5
    only_unanswerable = SquadThresholdSweep()
    for diff in (0.3, -2.0):
        only_unanswerable.update("something", diff, [])
    r = only_unanswerable.compute()
    assert r["best_exact"] == 100 and r["best_exact_thresh"] < -2.0  # below every difference: never answer


def test_relation_micro_f1_excludes_no_relation():
    m = RelationMetrics(3, no_relation_id=2)
    # gold: r0, r1, none, none ; pred: r0, none, r1, none
    m.update(torch.tensor([0, 2, 1, 2]), torch.tensor([0, 1, 2, 2]))
    r = m.compute()
    assert r["precision"] == 0.5 and r["recall"] == 0.5 and r["f1"] == 0.5 and r["accuracy"] == 0.5


def test_squad_and_relation_metrics_of_processes_adding_up_equal_one_process():
    """QA's exact match and F1 are means (sums and counts add up), its v2 threshold sweep runs over every
    question (gathered to process 0); relation F1 comes from the summed confusion matrix."""
    answers = [("Paris", ["Paris"], -1.0), ("the red dog", ["big red dog"], 0.5), ("x", [], 2.0),
               ("1889", ["1889"], 2.0), ("moon", [], 4.0), ("", ["Paris"], float("inf"))]
    one, parts = (SquadMetrics(), SquadThresholdSweep()), [(SquadMetrics(), SquadThresholdSweep()) for _ in range(3)]
    for k, (span, golds, diff) in enumerate(answers):
        for metric, sweep in (one, parts[k % 2]):  # (process 2 scores none)
            metric.update(span if diff <= 0 else "", golds)
            sweep.update(span, diff, golds)
    for m in range(2):
        assert reduced_on_first([p[m] for p in parts]).compute() == pytest.approx(one[m].compute(), abs=1e-12)
    assert one[0].compute()["no_ans_exact_match"] == 100 and 0 < one[0].compute()["f1"] < 100
    gold, pred = torch.tensor([0, 1, 2, 2, 1, 0, 2]), torch.tensor([0, 2, 1, 2, 1, 1, 2])
    whole, parts = RelationMetrics(3, 2), [RelationMetrics(3, 2) for _ in range(2)]
    whole.update(pred, gold)
    parts[0].update(pred[:3], gold[:3])
    parts[1].update(pred[3:], gold[3:])
    assert reduced_on_first(parts).compute() == whole.compute() and 0 < whole.compute()["f1"] < 1


def test_entity_metrics_bilou_tags_score_like_bioes():
    # scheme_of calls L-/U- (BILOU) data "BIOES"; seqeval's IOBES scheme rejects those prefixes
    m = EntityMetrics("BIOES")
    m.update([["U-PER", "O", "B-LOC", "L-LOC"]], [["U-PER", "O", "B-LOC", "L-LOC"]])
    r = m.compute()
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["f1"] == 1.0
    m = EntityMetrics("BIOES")
    m.update([["U-PER", "B-LOC", "I-LOC"]], [["U-PER", "B-LOC", "L-LOC"]])  # unfinished LOC: strict, no entity
    r = m.compute()
    assert r["precision"] == 1.0 and r["recall"] == 0.5
