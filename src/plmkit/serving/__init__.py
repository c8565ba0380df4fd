"""`plmkit serve`: an OpenAI-compatible inference server for every model plmkit trains.

    app.py       the ASGI app: routes, errors, the API key, the playground page
    batching.py  dynamic batching (encoders) and continuous batching (decoders), one worker per model
    models.py    `load_served_model`: what a model directory is served as
    protocol.py  request bodies, OpenAI's error body, responses and stream chunks
    metrics.py   Prometheus metrics
    settings.py  `ServeSettings` (the command's flags)

Above tasks, generation and models; below cli/ (`plmkit serve`).
"""
from plmkit.serving.app import create_app
from plmkit.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
