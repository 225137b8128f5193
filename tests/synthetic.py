"""Hand-made ProbeResults for testing the diagnosis and the renderers without torch."""

from gradcheck_cli.common.stats import ActivationStats, LayerStats, ModelStructure, ProbeResult

# sqrt(E[phi'(h)^2]) at h ~ N(0, 1), as the probe measures it: sigmoid's derivative is at most 0.25,
# ReLU's is 1 on half the inputs.
DERIVATIVE_RMS = {"Sigmoid": 0.245, "Tanh": 0.78, "ReLU": 0.707}


def geometric_result(
    depth: int = 20,
    gain: float = 1.0,
    *,
    forward_gain: float = 1.0,
    relative_grad: float = 0.01,
    activations: dict | None = None,
    norms: dict | None = None,
    residual: bool | None = False,
    convolutional: bool = False,
    weight_scale: float = 1.0,
) -> ProbeResult:
    """``depth`` Linear layers whose backward signal is multiplied by ``gain`` per layer going toward the
    input, plus a head. Every figure is exact, so expected decades and gains are known in closed form."""
    layers = []
    for i in range(depth):
        backward = gain ** (depth - 1 - i)
        layers.append(
            LayerStats(
                name=f"layers.{i}",
                type="Linear",
                calls=1,
                param_count=16 * 16,
                fan_in=16,
                weight_std=weight_scale / 4.0,
                weight_norm=1.0,
                weight_grad_norm=backward,
                grad_norm=backward,
                relative_grad=relative_grad,
                backward=backward,
                forward_rms=forward_gain**i,
            )
        )
    layers.append(
        LayerStats(name="head", type="Linear", calls=1, param_count=160, fan_in=16, weight_std=0.144,
                   weight_norm=1.0, weight_grad_norm=1.0, grad_norm=1.0, relative_grad=relative_grad,
                   backward=1.0, forward_rms=1.0)
    )  # fmt: skip
    kinds = activations if activations is not None else {"ReLU": depth}
    sites = [
        ActivationStats(name=f"acts.{i}", type=kind, after=f"layers.{i}", derivative_rms=DERIVATIVE_RMS.get(kind))
        for kind, count in kinds.items()
        for i in range(count)
    ]
    structure = ModelStructure(
        activations=activations if activations is not None else {"ReLU": depth},
        norms=norms or {},
        convolutional=convolutional,
        residual=residual,
    )
    return ProbeResult(
        model_name="Synthetic", param_count=depth * 256 + 160, trainable_param_count=depth * 256 + 160,
        batch_size=64, passes=3, seed=0, seconds=0.5, dtype="float32", device="cpu", layers=layers,
        losses=[2.3, 2.3, 2.3], total_grad_norms=[1.5, 2.0, 2.5], structure=structure, activations=sites,
    )  # fmt: skip
