"""Smaller and faster models: export to ONNX (`onnx.py`)."""
