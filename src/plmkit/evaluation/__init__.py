"""Evaluation metrics, accumulated batch by batch (no logits are kept)."""
from plmkit.evaluation.metrics import (ClassificationMetrics, EntityMetrics, MultiLabelMetrics, RegressionMetrics,
                                       RelationMetrics, SquadMetrics, SquadThresholdSweep, normalize_answer,
                                       squad_exact_match, squad_f1, squad_scores)

__all__ = ["ClassificationMetrics", "EntityMetrics", "MultiLabelMetrics", "RegressionMetrics", "RelationMetrics",
           "SquadMetrics", "SquadThresholdSweep", "normalize_answer", "squad_exact_match", "squad_f1", "squad_scores"]
