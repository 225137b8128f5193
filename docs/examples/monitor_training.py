"""Watch a training run with gradcheck's Monitor, then read its history.

    gradcheck scan docs/examples/monitor_training.py  # before training: the model as built (healthy)
    python docs/examples/monitor_training.py          # trains 300 steps, writes monitor_history.jsonl here
    gradcheck report monitor_history.jsonl            # its problems, a chart over steps, the layers at a step

A small MLP learns a regression with SGD. After step 150 the learning rate is raised a thousandfold, as a
broken schedule would. The monitor reads the gradients every step on the device and judges them every 50
steps: it names step 151, the first whose gradients were computed after the jump, and the layer where the
growth began; then the NaN that follows, at its own step.
"""

import sys

import torch
from torch import nn

from gradcheck_cli import Monitor

STEPS = 300
SPIKE_AFTER = 150  # the learning rate jumps after this step's gradients were taken


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))


def main(log: str = "monitor_history.jsonl") -> Monitor:
    torch.manual_seed(0)
    inputs = torch.randn(1024, 16)
    targets = (2 * inputs[:, :4]).sin()
    model = build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    # norms_every=1: the norms of every step, to name the exact step. By default ("auto") this tiny model's
    # norms would be taken every few steps, since on a CPU they cost more than 1.5% of its 0.3 ms step.
    with Monitor(model, every=50, norms_every=1, log=log) as monitor:  # on_problem="warn": a warning each
        for step in range(1, STEPS + 1):
            batch = torch.randint(0, len(inputs), (32,))
            loss = nn.functional.mse_loss(model(inputs[batch]), targets[batch])
            loss.backward()
            monitor.step(loss)  # after backward, before the optimizer step
            if step == SPIKE_AFTER:
                for group in optimizer.param_groups:
                    group["lr"] *= 1000
            optimizer.step()
            optimizer.zero_grad()

    for problem in monitor.problems:
        where = problem.layer if problem.layer is not None else "the loss"
        print(f"{problem.kind}: first at step {problem.step} in {where}, found at step {problem.found_at}")
    return monitor


if __name__ == "__main__":
    main(*sys.argv[1:])
