"""Smaller and faster models: distillation, structured pruning (and the other compression commands)."""
