"""Built-in plugin: attributions through Captum.

- ``integrated-gradients``: Captum's IntegratedGradients on the version's own torch module
  (LayerIntegratedGradients on the token embeddings of a text model), with its convergence
  delta: how far the attributions' sum is from the difference of the scores at the input
  and at the baseline. Needs gradients, so torch and Hugging Face versions only.
- ``occlusion``: each feature (or token) replaced by its baseline in turn, through the
  version's runner: any format (ONNX, int8, torch), one row per feature.
- ``kernel-shap``: Captum's KernelShap, a weighted linear fit over random coalitions of
  features, through the runner: any format; ``samples`` rows per explained row.

Captum is imported inside ``run``, so listing plugins costs nothing. Third-party explainers
use the same ``maas_explainers`` hook (see docs/plugins.md).
"""

from __future__ import annotations

import numpy as np

from maas_lab import Component, Param, hookimpl
from maas_lab.errors import BackendUnavailable, UsageError
from maas_lab.hints import option

# The plugin contract this plugin was written for (docs/contract.md): 1.2 brought
# maas_explainers.
MAAS_LAB_CONTRACT = "1.2"

__version__ = "0.1.0"
PER_EVAL = 32  # perturbed rows per runner call: fewer calls, same answers


def _captum():
    try:
        import captum.attr as attr
    except ImportError:
        raise BackendUnavailable(
            "Explaining needs Captum: pip install 'maas-lab[explain]' (or captum)."
        ) from None
    return attr


def _torch(problem):
    import torch

    return torch.from_numpy(np.ascontiguousarray(problem.x, dtype=np.float32)), torch.from_numpy(
        np.ascontiguousarray(problem.baseline, dtype=np.float32)
    )


def _positive(options, name: str, default: int) -> int:
    value = options.get(name)
    value = default if value is None else int(value)
    if value < 1:
        raise UsageError(f"{option(name, value)} must be at least 1.")
    return value


def _numpy_forward(problem):
    """``problem.score`` (numpy, any runner) as the torch function Captum calls."""
    import torch

    def forward(x):
        return torch.from_numpy(np.asarray(problem.score(x.detach().cpu().numpy()), np.float64))

    return forward


def integrated_gradients(problem, options):
    from maas_lab.explaining import Attribution

    if not problem.gradients:
        raise UsageError(
            f"{problem.who} has no gradients (a {problem.format} version), so Integrated "
            f"Gradients cannot run on it; use {option('with_', 'occlusion', flag='--with')} "
            f"or {option('with_', 'kernel-shap', flag='--with')}, which work through any runner."
        )
    attr = _captum()
    steps = _positive(options, "steps", 50)
    if problem.layer is not None:  # text: the token embeddings, one score per row
        layer = problem.layer
        ig = attr.LayerIntegratedGradients(problem.count(layer.score, len), layer.module)
        values, delta = ig.attribute(
            layer.ids,
            baselines=layer.baseline_ids,
            n_steps=steps,
            return_convergence_delta=True,
        )
        values = values.sum(-1)
    else:
        x, base = _torch(problem)
        if options.get("baseline") not in (None, "", "zeros"):
            try:
                value = float(options["baseline"])
            except ValueError:
                raise UsageError(
                    f"{option('baseline', options['baseline'])}: give zeros or a number."
                ) from None
            problem.baseline = np.full_like(problem.x, value)  # what the core scores, too
            base = base.fill_(value)
        ig = attr.IntegratedGradients(problem.count(problem.torch_score, len))
        values, delta = ig.attribute(
            x, baselines=base, n_steps=steps, return_convergence_delta=True
        )
    return Attribution(
        values.detach().double().numpy(), delta=np.abs(delta.detach().double().numpy())
    )


def occlusion(problem, options):
    from maas_lab.explaining import Attribution

    attr = _captum()
    x, base = _torch(problem)
    occ = attr.Occlusion(problem.count(_numpy_forward(problem), len))
    window = (1,) * (x.ndim - 1)
    values = occ.attribute(
        x, sliding_window_shapes=window, baselines=base, perturbations_per_eval=PER_EVAL
    )
    return Attribution(values.detach().double().numpy())


def kernel_shap(problem, options):
    from maas_lab.explaining import Attribution

    attr = _captum()
    samples = _positive(options, "samples", 200)
    x, base = _torch(problem)
    shap = attr.KernelShap(problem.count(_numpy_forward(problem), len))
    rows = []
    import torch

    with torch.random.fork_rng():  # the same coalitions each time: answers that repeat
        torch.manual_seed(int(options.get("seed") or 0))
        for i in range(len(x)):  # Captum's KernelShap explains one row per call
            values = shap.attribute(
                x[i : i + 1],
                baselines=base[i : i + 1],
                n_samples=samples,
                perturbations_per_eval=PER_EVAL,
            )
            rows.append(values.detach().double().numpy()[0])
    return Attribution(np.stack(rows))


def _ig_passes(problem, options):
    return (_positive(options, "steps", 50) + 2) * problem.rows


def _occlusion_passes(problem, options):
    return (problem.features + 1) * problem.rows


def _shap_passes(problem, options):
    return (_positive(options, "samples", 200) + 1) * problem.rows


@hookimpl
def maas_explainers(register):
    register(
        Component(
            name="integrated-gradients",
            description="Integrated Gradients on the torch module, with its convergence delta",
            run=integrated_gradients,
            formats=("torch", "hf"),
            params=(
                Param("steps", "int", 50, "points on the path from the baseline to the input"),
                Param(
                    "baseline",
                    "str",
                    "zeros",
                    "feature rows: the value every feature starts from (zeros, or a number); "
                    "text starts from padding tokens",
                ),
            ),
            extra={"passes": _ig_passes},
        )
    )
    register(
        Component(
            name="occlusion",
            description="each feature or token replaced by its baseline in turn (any runner)",
            run=occlusion,
            extra={"passes": _occlusion_passes},
        )
    )
    register(
        Component(
            name="kernel-shap",
            description="Kernel SHAP: a weighted linear fit over random feature coalitions "
            "(any runner)",
            run=kernel_shap,
            params=(
                Param("samples", "int", 200, "coalitions evaluated per explained row"),
                Param("seed", "int", 0, "the random coalitions' seed"),
            ),
            extra={"passes": _shap_passes},
        )
    )
