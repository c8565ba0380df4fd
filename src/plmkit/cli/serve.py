"""`plmkit serve --model DIR [--model NAME=DIR ...]`: an OpenAI-compatible server (plmkit.serving).

One process serves every model given, by name: decoders (completions, chat), fine-tuned task models
(/v1/classify, /v1/ner, /v1/qa, /v1/translate, /v1/summarize), encoders (embeddings), and the
playground page at /. It listens on 127.0.0.1 unless --host says otherwise; the line
'plmkit serve: listening on http://HOST:PORT' says where (--port 0 picks a free port).
"""
from __future__ import annotations

import argparse
import logging
import socket

log = logging.getLogger("plmkit")


def add_parser(subparsers) -> None:
    from plmkit.cli.flags import add_settings_flags
    from plmkit.serving.settings import ServeSettings

    p = subparsers.add_parser("serve", help="serve models over HTTP (OpenAI-compatible API, task routes, playground)",
                              description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                   help="a model directory to serve, called NAME (default: DIR as given); repeat for several")
    add_settings_flags(p.add_argument_group("server settings"), ServeSettings)
    p.set_defaults(func=run)


def model_specs(values: list[str]) -> dict[str, str]:
    """--model values -> {name: directory}; each directory checked now, before anything loads."""
    from plmkit.errors import ConfigError
    from plmkit.models.io import check_model_dir

    specs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or "/" in name:
            name, path = value.rstrip("/") or value, value
        if name in specs:
            raise ConfigError(f"--model: two models called {name!r}; name them with --model NAME=DIR")
        check_model_dir(path)
        specs[name] = path
    return specs


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from plmkit.cli.flags import settings_from_args
    from plmkit.errors import PlmkitError
    from plmkit.serving import ServeSettings, create_app

    settings = settings_from_args(args, ServeSettings)
    app = create_app(model_specs(args.model), settings)
    try:
        sock = socket.create_server((settings.host, settings.port), family=_family(settings.host), reuse_port=False)
    except OSError as err:
        raise PlmkitError(f"cannot listen on {settings.host}:{settings.port}: {err.strerror or err}") from None
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    app.state.server.on_failed = lambda err: setattr(server, "should_exit", True)
    shown = f"[{host}]" if ":" in host else host
    log.info("plmkit serve: listening on http://%s:%d (playground at /, OpenAI API at /v1; loading the models)",
             shown, port)
    if settings.api_key is None and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("plmkit serve: listening on %s without --api-key: anyone who reaches it can use the models", host)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: how a server is stopped (uvicorn has closed it)
        pass
    finally:
        sock.close()
    if app.state.server.state == "failed":
        raise PlmkitError(f"cannot load the models: {app.state.server.error}")
    return 0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
