"""The whole plugin contract: every hook a plugin may implement.

Each hook receives a ``register`` callback made by the core; a plugin calls it once per
:class:`maas_lab.components.Component` it provides. The core fills in which plugin gave it,
refuses duplicate names (reported, never renamed) and decides when to call ``run``.
An implementation may accept fewer arguments than the spec, so hooks can grow safely.

Built-in plugins (``plugins/maas_torch``, ``plugins/maas_hf``, ``plugins/maas_onnx``) use
exactly these hooks and are found through the same ``maas_lab`` entry-point group as a third
party's. Example, a whole plugin package ``maas_lab_hello``::

    from maas_lab import Component, hookimpl

    @hookimpl
    def maas_loaders(register):
        register(Component(name="text-table", description="A lookup table in a text file",
                           formats=("text-table",), run=load_table))

and in its ``pyproject.toml``: ``[project.entry-points.maas_lab] hello = "maas_lab_hello"``.
"""

from __future__ import annotations

import pluggy

# The plugin contract's version, MAJOR.MINOR: the hooks below, what they pass and what they
# take back (Component, Param, Artifact, Launch, runners, contexts). A plugin declares the
# version it was written for in its entry-point module (``MAAS_LAB_CONTRACT = "1.2"``); the
# core loads it when the majors match and the plugin's minor is not newer than this one.
# The rule and the changelog: docs/contract.md.
CONTRACT = "1.2"

hookspec = pluggy.HookspecMarker("maas_lab")
hookimpl = pluggy.HookimplMarker("maas_lab")


@hookspec
def maas_loaders(register):
    """Provide model loaders: how a stored model format becomes a usable Python object.

    ``register(Component(name, description, formats, run, params=(), validate=None))``.
    ``formats`` are the version formats the loader opens (``"torch"``, ``"hf"``, ``"onnx"``,
    ``"torchscript"`` or a new one). ``run(checkout, options) -> model`` gets a
    :class:`maas_lab.registry.Checkout` whose files were verified against their digests.
    ``validate(files, config) -> None`` is called at registration, before anything is stored,
    with ``{relative name: local path}`` and the version's config dict; it raises
    ``maas_lab.errors.UsageError`` to refuse a model it could never open. Loaders must never
    unpickle (use safetensors, or ``torch.load(..., weights_only=True)``).
    """


@hookspec
def maas_exporters(register):
    """Provide exporters: turn a stored model into a deployable artifact (ONNX, TorchScript...).

    ``register(Component(name, description, formats, run, params, produces))``: ``formats``
    are the source formats accepted, ``produces`` the format made. ``run(checkout, options,
    workdir)`` writes files into ``workdir`` and returns a :class:`maas_lab.components.Artifact`
    (files, signature, config, report). The core then runs parent and export on the same
    inputs through the serving backends of both formats (parity check) and, within
    tolerance, stores the files as a new version with a lineage edge (parent, ``export``,
    plugin name and version, parameters, parity figures). Raise ``UsageError`` naming the
    operator or feature that cannot be exported, and which other exporter to try.
    """


@hookspec
def maas_compressors(register):
    """Provide compressors: pruning, quantization, distillation and the like.

    ``register(Component(name, description, formats, run, params, produces))``: ``formats``
    are the version formats accepted. ``run(checkout, options, workdir, context)`` writes
    files into ``workdir`` and returns a :class:`maas_lab.components.Artifact` whose
    ``report`` holds the plugin's own figures (sparsity, layers kept in float...).
    ``context`` (:class:`maas_lab.compression.Context`) gives the data the user named
    (``context.data(split)``, ``context.calibration``), the parent's runner, a ``progress``
    bar factory, and ``context.measure(workdir, artifact, rows=None)`` to measure a candidate
    against the parent inside a fidelity budget (``context.max_drop``). The core then
    measures parent and result side by side with the evaluators, refuses a result over the
    budget, and registers it as a new version with metrics and a lineage edge.
    """


@hookspec
def maas_launchers(register):
    """Provide launchers: run a training script or function on N processes or machines.

    ``register(Component(name, description, run, params))``: ``run(entry, options)`` gets
    ``entry``, the Python module and arguments each process of the job must run
    (``["-m", "maas_lab.launching.rank", JOB_DIR]``), and returns a
    :class:`maas_lab.components.Launch`: the command that starts every process of the job on
    this machine (accelerate is the built-in engine). The core runs that command, records
    the job, tails its log, streams rank 0's progress, cancels it and reports how it ended;
    the processes report progress and register models through :mod:`maas_lab.training`.
    Raise :class:`maas_lab.errors.UsageError` for options the engine would refuse, before
    anything starts.
    """


@hookspec
def maas_serving_backends(register):
    """Provide serving backends: turn a stored artifact into a runner.

    ``register(Component(name, description, formats, run, params))``: ``run(checkout,
    options)`` returns a runner: an object with ``signature`` (``{"inputs": [...],
    "outputs": [...]}``, entries made by :func:`maas_lab.components.tensor`) and
    ``infer(feeds: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]``; optionally
    ``example_feeds(batch) -> feeds`` with realistic inputs (real sentences through the
    tokenizer for text models). The core uses runners for parity checks, and the HTTP
    server for inference; batching, HTTP, auth and metrics belong to the core.
    """


@hookspec
def maas_evaluators(register):
    """Provide evaluators: the measurements every compression and ``maas compare`` report.

    ``register(Component(name, description, run, params))``: ``run(subjects, context)``
    gets several versions at once (each with ``ref``, ``runner``, ``size_bytes``, ``task``;
    the first is the reference) so timings can be interleaved and fidelity measured against
    one baseline, and returns one ``{metric: number}`` dict per subject (empty where the
    evaluator does not apply). ``context`` (:class:`maas_lab.evaluation.Context`) holds the
    dataset, if any, and ``feeds(runner, part, start, batch)`` which turns it into inputs.
    """


@hookspec
def maas_serving_engines(register):
    """Provide serving engines: what runs a server's replicas (the built-in ``local``
    supervisor of worker processes, Ray Serve, or a third party's Kubernetes deployer).

    ``register(Component(name, description, run, params, validate=None))``. ``maas serve
    --engine NAME`` records the server, then starts its own process, which calls
    ``run(server)`` with a :class:`maas_lab.serving.engine.EngineServer` and returns the
    exit code when the server has stopped. The engine starts replicas that each host
    ``maas_lab.serving.engine.replica_app(...)``: the core's Open Inference Protocol
    application (routes, validation, limits, batching, access, metrics, alias following), so
    every engine answers the same requests the same way. Through ``server`` the engine says
    where it listens (``server.started(port)``), which replicas are ready
    (``server.report(...)``), reads the replica count ``maas scale`` asks for
    (``server.row()``) and learns when ``maas stop`` asks it to drain (``server.wait(s)``).
    ``validate(options, core_options)`` (optional) runs in the caller's process before
    anything starts: raise :class:`maas_lab.errors.UsageError` for a missing package, an
    address that does not answer or a core option the engine cannot honour.
    ``extra={"start_s": seconds}`` is how long starting may take (default 180);
    ``extra={"replicas": "per-core"}`` lets ``maas serve`` without ``--replicas`` start one
    replica per core (at most 4), as the built-in engines do; without it the default is 1.
    """


@hookspec
def maas_explainers(register):
    """Provide explainers: how much each input feature or token contributed to an answer.

    ``register(Component(name, description, run, params, extra={"passes": passes}))``.
    ``run(problem, options) -> maas_lab.explaining.Attribution`` gets a
    :class:`maas_lab.explaining.Problem`: ``x`` (float ``[rows, features]``: feature rows,
    or for text one presence value per token), ``baseline`` (the same shape: what "absent"
    means), ``score(x) -> [rows]`` (one number per row through the version's own runner, so
    it works for any format: the predicted class's output, or a sentence's similarity to a
    target), and where the version has gradients ``torch_score`` (the same score as a
    differentiable torch function of ``x``) or ``layer`` (text: token ids, their baseline
    ids, the embedding module and a differentiable score of the ids). ``gradients`` says
    which is there. ``passes(problem, options) -> int`` says how many rows the model will
    be run on, before anything runs, so the core can refuse a request over its budget.
    Raise :class:`maas_lab.errors.UsageError` when the method cannot explain this version
    (no gradients) and name the method that can.
    """
