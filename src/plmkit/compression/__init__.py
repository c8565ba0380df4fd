"""Smaller and faster models, one module per method: `report` (what a variant costs and buys:
size, parameters, latency, throughput, the task metric; `plmkit compare`), `quantize` (int8 Linear
layers), `distill`, `prune` and `onnx` (export for onnxruntime)."""
