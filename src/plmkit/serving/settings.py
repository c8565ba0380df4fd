"""`plmkit serve`'s settings, declared once (its flags come from here)."""
from __future__ import annotations

from dataclasses import dataclass

from plmkit.utils.device import is_device_name
from plmkit.utils.settings import Settings, setting

WAIT_SHARE = 0.15  # an encoder batch waits for companions this share of the previous batch's time (batching.py)


@dataclass
class ServeSettings(Settings):
    section = "serve"

    host: str = setting("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)",
                        metavar="ADDR")
    port: int = setting(8000, "port to listen on (0: any free one)", metavar="N", at_least=0, at_most=65535)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", metavar="DEV")
    api_key: str | None = setting(None, "require 'Authorization: Bearer KEY' on every API request (401 otherwise)",
                                  metavar="KEY")
    allowed_origins: list[str] = setting(
        help="web origins whose pages may call the API from a browser (CORS), e.g. http://localhost:3000; repeat "
             "for several; '*': any (vLLM's default). Default none: the server may hold an API key and listens on "
             "this machine, where any web page could otherwise reach it", default_factory=list, metavar="ORIGIN")
    max_batch: int = setting(8, "decoders: sequences decoded together (rows of the continuous batch)", metavar="N",
                             at_least=1)
    batch_tokens: int = setting(16384, "encoders: padded tokens per batch at most (a request's inputs are split "
                                "across batches; one input longer than that runs alone)", metavar="N", at_least=1)
    batch_wait_ms: float = setting(5.0, f"encoders: a batch waits for more requests once the model is free: "
                                   f"{WAIT_SHARE:.0%} of the previous batch's time, between MS/5 and MS",
                                   metavar="MS", at_least=0)
    batching: bool = setting(True, "batch concurrent requests (--no-batching: one request at a time, to compare)")
    max_queue: int = setting(256, "prompts waiting per model (encoders: batches of a request's inputs) before new "
                             "requests are answered 429; a request that comes before joins whole, however many "
                             "prompts it has (as vLLM takes any prompt list)", metavar="N", at_least=1)
    timeout: float = setting(300.0, "seconds a request may take, waiting included; later it is answered 504",
                             metavar="S", above=0)
    max_n: int = setting(8, "completions per request (the 'n' field) at most", metavar="N", at_least=1)
    default_max_tokens: int = setting(256, "tokens a chat completion generates at most when max_tokens is not given "
                                           "(completions: 16, as OpenAI)", metavar="N", at_least=1)
    task_batch_size: int = setting(32, "task models: records per forward pass inside a batch", metavar="N", at_least=1)

    def validate(self) -> None:
        self.need(is_device_name(self.device), f"device (--device) must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self.need(self.api_key != "", "api_key (--api-key) is empty: give a key or leave the flag out")


__all__ = ["ServeSettings"]
