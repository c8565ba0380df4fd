"""Tasks, one module each behind one protocol (`plmkit.tasks.base.Task`), found by name in a registry:

* ``classification`` (classification.py): single-label, multi-label or regression over a text or a pair;
* ``ner`` (ner.py): token classification over CoNLL words (BIO or BIOES), long sentences in windows;
* ``relation`` (relation.py): the relation between two marked entity spans;
* ``qa`` (qa.py): extractive question answering (SQuAD v1.1 / v2.0), long contexts in windows;
* ``sft`` (sft.py): supervised fine-tuning of a causal LM on prompt -> response pairs.

Fine-tuning is the recipe plmkit.recipes.finetune (``plmkit finetune``); evaluation and prediction
with a fine-tuned model directory are in inference.py (``plmkit evaluate`` / ``plmkit predict``).
"""
from plmkit.tasks.base import TASK_FILE, Task, TaskSettings
from plmkit.tasks.inference import (evaluate_dir, evaluate_loaded, load_for_inference, load_model_dir, predict_dir, predict_records,
                                    read_prediction_input)
from plmkit.tasks.registry import TASKS, get_task, load_task, pipeline_names, task_for_pipeline, task_names

__all__ = ["TASKS", "TASK_FILE", "Task", "TaskSettings", "evaluate_dir", "evaluate_loaded", "get_task", "load_for_inference",
           "load_model_dir", "load_task", "pipeline_names", "predict_dir", "predict_records", "read_prediction_input",
           "task_for_pipeline", "task_names"]
