"""Evaluation metrics, accumulated batch by batch (no logits are kept)."""
from plmkit.evaluation.metrics import (ClassificationMetrics, EntityMetrics, MultiLabelMetrics, RegressionMetrics,
                                       RelationMetrics, SquadMetrics, SquadThresholdSweep, normalize_answer,
                                       squad_exact_match, squad_f1, squad_scores)
from plmkit.evaluation.seq2seq import SummarizationMetrics, TranslationMetrics, lead, lead_baseline

__all__ = ["ClassificationMetrics", "EntityMetrics", "MultiLabelMetrics", "RegressionMetrics", "RelationMetrics",
           "SquadMetrics", "SquadThresholdSweep", "SummarizationMetrics", "TranslationMetrics", "lead", "lead_baseline",
           "normalize_answer", "squad_exact_match", "squad_f1", "squad_scores"]
