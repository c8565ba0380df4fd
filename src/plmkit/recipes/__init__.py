"""Recipes: a `RunConfig` and a `run()` for each kind of run, shared by the CLI and Python."""
