"""``POST /v2/models/{name}[/versions/{v}]/explain``: attributions over HTTP.

The request is an inference request (same inputs, same parsing, checks and access scope as
``/infer``), with optional ``parameters``: ``explainer`` (a name from ``maas plugins``),
``target`` (a sentence, for a sentence embedder), ``label`` (the class to explain), and the
explainer's own options (``steps``, ``baseline``, ``samples``, ``seed``). The answer is the
explanation as JSON (:meth:`maas_lab.explaining.Explanation.to_dict`).

An explanation runs the model hundreds of times, so it must never starve inference: it runs
on a thread of its own, one at a time, with at most ``explain_queue`` more waiting (503
beyond), never on the batcher's queue; and each request is priced before it runs (rows times
steps or samples, from the explainer's own ``passes``) and refused past
``explain_max_passes`` with 413 naming the limit and what to change.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

from ..errors import MaasError, UsageError
from ..hints import option
from .refusals import HTTPError, clean
from .server_wire import parse_infer_request

EXTENSION = "explain"
MAX_PASSES = 10_000  # forward rows per explanation: 16 digits x 50 steps is 832
QUEUE = 2  # explanations waiting behind the one running
OWN = {"explainer", "target", "label"}  # request parameters the core reads itself
WIRE = {"binary_data_output"}  # inference parameters that mean nothing here


class Explanations:
    """One server's explanations: their thread, their queue and their budget."""

    def __init__(self, options: dict):
        self.max_passes = int(options.get("explain_max_passes") or MAX_PASSES)
        self.queue = int(options.get("explain_queue", QUEUE))
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="maas-explain")
        self.in_flight = 0  # running and waiting
        self.done = 0
        self.refused = 0

    def stop(self) -> None:
        """At shutdown: explanations still waiting are dropped (the server is going away)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def prometheus(self) -> str:
        return (
            "# HELP maas_explanations_in_flight Explanations running or waiting.\n"
            "# TYPE maas_explanations_in_flight gauge\n"
            f"maas_explanations_in_flight {self.in_flight}\n"
            "# HELP maas_explanations_total Explanations answered, and refused.\n"
            "# TYPE maas_explanations_total counter\n"
            f'maas_explanations_total{{status="200"}} {self.done}\n'
            f'maas_explanations_total{{status="refused"}} {self.refused}\n'
        )

    async def explain(self, server, name: str, version: str | None, body: bytes, headers: dict):
        loaded = server.models.find(name, version)
        if self.in_flight > self.queue:
            self.refused += 1
            raise HTTPError(
                503,
                f"{self.in_flight} explanations are running or waiting on this server, the "
                f"most it takes ({option('explain_queue')} {self.queue} waiting); retry "
                "shortly. Inference is not affected.",
                {"retry-after": "5"},
            )
        self.in_flight += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self.pool,
                copy_context().run,
                functools.partial(self._explain, server, loaded, body, headers),
            )
        except HTTPError:
            self.refused += 1
            raise
        finally:
            self.in_flight -= 1
        self.done += 1
        return {"model_name": loaded.name, "model_version": str(loaded.number), **result}

    def _explain(self, server, loaded, body: bytes, headers: dict) -> dict:
        from ..explaining import build, choose, price, run_explainer

        check = functools.partial(server._check_header, loaded)
        request = parse_infer_request(body, headers.get("inference-header-content-length"), check)
        params = {k: v for k, v in request.parameters.items() if k not in WIRE}
        feeds = server._feeds(loaded, request)
        explainer = params.get("explainer")
        if explainer is not None and not isinstance(explainer, str):
            raise HTTPError(400, "parameters.explainer must be an explainer's name (a string).")
        target = params.get("target")
        if target is not None and not isinstance(target, str):
            raise HTTPError(400, "parameters.target must be a sentence (a string).")
        target_feeds = None
        if target is not None:
            if loaded.text is None:
                raise HTTPError(
                    400,
                    f"{loaded.ref} takes no sentences: parameters.target is for sentence "
                    "embedders; send parameters.label to explain a class, or nothing for the "
                    "predicted one.",
                )
            target_feeds = loaded.text([target])
        try:
            setup = build(
                loaded.runner,
                feeds,
                loaded.format,
                loaded.ref,
                target_feeds=target_feeds,
                label=params.get("label"),
            )
            comp = choose(params.get("explainer"), loaded.runner)
            options = {k: v for k, v in params.items() if k not in OWN}
            _, estimate = price(comp, setup, options, loaded.ref)
            if estimate is not None and estimate > self.max_passes:
                raise HTTPError(
                    413,
                    f"Explaining {setup.problem.rows} row(s) of {loaded.ref} with {comp.name} "
                    f"would run the model on {estimate} rows, over this server's limit of "
                    f"{self.max_passes} per explanation ({option('explain_max_passes')}); send "
                    "fewer rows at once, ask for fewer steps or samples, or start the server "
                    f"with a larger {option('explain_max_passes')}.",
                )
            result = run_explainer(comp, setup, options, None, loaded.ref, target=target)
        except UsageError as exc:
            raise HTTPError(400, str(exc)) from None
        except MaasError as exc:
            message = f"{loaded.ref} could not be explained: {clean(str(exc))}"
            raise HTTPError(500, message) from None
        return result.to_dict()
