"""The probe's result: every layer's LayerStats and the model's ProbeResult, put together from the passes'
figures and what the recorder saw."""

from __future__ import annotations

from torch import nn

from gradcheck_cli.common.stats import LayerStats, ModelStructure, ProbeResult
from gradcheck_cli.measure.layer_figures import held_parameters, layer_type, weight_figures
from gradcheck_cli.measure.pass_figures import PassFigures, layer_pass_figures
from gradcheck_cli.measure.recorder import Recorder


def assemble(
    model: nn.Module,
    params: list[nn.Parameter],
    name: str | None,
    recorder: Recorder,
    per_pass: list[PassFigures],
    passes: int,
    seed: int,
    seconds: float,
    structure: ModelStructure | None,
) -> ProbeResult:
    outputs = recorder.outputs
    layer_stats: list[LayerStats] = []
    ranking = outputs.ranked()
    weights = weight_figures(recorder.layers, recorder.reducer)
    for index, (param_count, trainable, shared) in zip(ranking, held_parameters(recorder.layers, ranking)):
        layer_name, module = recorder.layers[index]
        figures = weights[index]
        layer_stats.append(
            LayerStats(
                name=layer_name or "(model)",
                type=layer_type(module),
                calls=outputs.calls[index],
                param_count=param_count,
                trainable=trainable,
                shared_with=shared,
                normalized_by=_normalizer_name(recorder, index),
                starts_path=index in outputs.path_starts,
                grad_nonzero_in_a_pass=index in recorder.nonzero_grad,
                **figures,
                **layer_pass_figures(index, per_pass, figures.get("weight_norm")),
            )
        )
    first_param = params[0] if params else None
    recurrent = recorder.time.stats(model, [p.time_steps for p in per_pass], [p.batch_size for p in per_pass])
    return ProbeResult(
        model_name=name or type(model).__name__,
        param_count=sum(p.numel() for p in params),
        trainable_param_count=sum(p.numel() for p in params if p.requires_grad),
        batch_size=per_pass[0].batch_size,
        passes=passes,
        seed=seed,
        seconds=seconds,
        dtype=str(first_param.dtype).replace("torch.", "") if first_param is not None else "n/a",
        device=str(first_param.device) if first_param is not None else "cpu",
        layers=layer_stats,
        recurrent=recurrent,
        losses=[p.loss for p in per_pass],
        total_grad_norms=[p.total_grad_norm for p in per_pass if p.total_grad_norm is not None],
        structure=structure,
        hooked=recorder.hooked,
        activations=recorder.activations.stats(),
    )


def _normalizer_name(recorder: Recorder, index: int) -> str | None:
    norm = recorder.outputs.normalized_by.get(index)
    return None if norm is None else recorder.layers[norm][0] or "(model)"
