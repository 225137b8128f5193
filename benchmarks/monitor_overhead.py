"""What the training monitor costs: a training step with ``Monitor(model, every=100)`` against the same step
without it, side by side in one run.

    python benchmarks/monitor_overhead.py [--quick] [--threads N] [--cpu-time]

or as a section of benchmarks/run.py, whose folder is on sys.path when it runs as a script:

    from monitor_overhead import markdown, run
    print(markdown(run(quick=False)))  # one row per model and monitor setting (dicts)

Two models on the CPU, each trained with AdamW on fixed random batches: a small MLP (8 hidden layers of
width 256, ReLU, He-initialized, batch 64, cross-entropy) and a small Transformer (token embedding, 2
pre-LN encoder layers of d_model 128 with 4 heads, sequence 64, batch 16, a head over 1,000 tokens).
Three copies of each model are trained: plain; watched with the defaults (``norms_every="auto"``: the per-
layer gradient norms of every step while they cost at most 1.5% of the step, else of every 2nd, 4th or 8th
step, chosen from the monitor's own timings); watched with ``norms_every=1`` (every step's norms, whatever
they cost). Each round runs ``every`` steps of each copy, 10 steps of each in turn (the order rotating), so
each watched copy's round holds exactly one sampled step and its share of the cost; ``ratio`` is the median
over the rounds of the ratio within each round (so a slow spell of the machine that spans a round cancels),
and is what the target (at most 1.02) is judged on. Two more figures help where the machine is not idle: the
ratio of the fastest rounds, and ``1 + its share``, the monitor's own time per step (timed around each
``monitor.step`` call, sampled steps included) over the plain step.

The step is: forward, loss, backward, ``monitor.step(loss)`` (watched copy only), ``optimizer.step()``,
``optimizer.zero_grad()``. Rows also give the cost of ``monitor.step`` itself on a sampled and on an
unsampled step (median of the watched copy's calls).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch  # noqa: TID253
from torch import nn  # noqa: TID253

from gradcheck_cli.monitor.monitor import Monitor

EVERY = 100
TARGET = 1.02
clock = time.perf_counter  # --cpu-time: time.process_time
# Steps of one copy run before the next copy's: short enough that a slow spell of the machine falls on
# every copy alike, long enough that nearly every interval the monitor times between its calls is its own
# model's step (norms_every="auto" judges its share against it).
CHUNK = 10
# candidate -> the monitor's norms_every (None: no monitor)
CANDIDATES = {"plain": None, "watched": "auto", "watched, every step": 1}


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mlp() -> nn.Module:
    """He-initialized, so its gradients stay healthy: the monitor's common path (no problem to report)."""
    layers: list[nn.Module] = []
    for _ in range(8):
        linear = nn.Linear(256, 256)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(256, 10))


class _Transformer(nn.Module):
    def __init__(self, vocab: int = 1000, width: int = 128, depth: int = 2, length: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.position))


CASES = [
    Case(
        "MLP 8x256, batch 64",
        _mlp,
        lambda g: (torch.randn(64, 256, generator=g), torch.randint(0, 10, (64,), generator=g)),
        nn.functional.cross_entropy,
    ),
    Case(
        "Transformer 2x128, seq 64, batch 16",
        _Transformer,
        lambda g: (torch.randint(0, 1000, (16, 64), generator=g), torch.randint(0, 1000, (16, 64), generator=g)),
        lambda out, y: nn.functional.cross_entropy(out.flatten(0, 1), y.flatten()),
    ),
]


def _trainer(case: Case, model: nn.Module, monitor: Monitor | None, calls: list[tuple[bool, float]]):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def one_step(x: torch.Tensor, y: torch.Tensor) -> float:
        started = clock()
        loss = case.loss(model(x), y)
        loss.backward()
        if monitor is not None:
            before = clock()
            monitor.step(loss)
            calls.append((monitor.last_step % EVERY == 1, clock() - before))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return clock() - started

    return one_step


def measure(case: Case, rounds: int) -> list[dict]:
    """Plain, watched with the defaults and watched with ``norms_every=1``, interleaved."""
    models = {}
    for name in CANDIDATES:  # the same weights for every candidate
        torch.manual_seed(0)
        models[name] = case.build()
    generator = torch.Generator().manual_seed(0)
    batches = [case.batch(generator) for _ in range(EVERY)]
    monitors = {
        name: Monitor(models[name], every=EVERY, norms_every=norms_every, on_problem="record")
        for name, norms_every in CANDIDATES.items()
        if norms_every is not None
    }
    calls: dict[str, list[tuple[bool, float]]] = {name: [] for name in CANDIDATES}
    steppers = {name: _trainer(case, models[name], monitors.get(name), calls[name]) for name in CANDIDATES}
    order = list(CANDIDATES)

    def one_round() -> dict[str, float]:
        """``every`` steps of each copy, taken in turn CHUNK steps at a time, the order rotating: each
        copy's mean step time."""
        spent = dict.fromkeys(CANDIDATES, 0.0)
        for chunk, start in enumerate(range(0, len(batches), CHUNK)):
            for k in range(len(order)):
                name = order[(chunk + k) % len(order)]
                for x, y in batches[start : start + CHUNK]:
                    spent[name] += steppers[name](x, y)
        return {name: seconds / len(batches) for name, seconds in spent.items()}

    one_round()  # warm-up: allocator, the first sampled step
    for entries in calls.values():
        entries.clear()
    times: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for _ in range(rounds):
        for name, seconds in one_round().items():
            times[name].append(seconds)
    for monitor in monitors.values():
        monitor.detach()
    plain = statistics.median(times["plain"])
    rows = []
    for name, norms_every in CANDIDATES.items():
        if norms_every is None:
            continue
        watched = statistics.median(times[name])
        ratio = statistics.median(w / p for w, p in zip(times[name], times["plain"]))
        sampled = [seconds for is_sampled, seconds in calls[name] if is_sampled]
        unsampled = [seconds for is_sampled, seconds in calls[name] if not is_sampled]
        # The monitor's own time per step, sampled steps included: what it adds, measured inside the run,
        # so a burst of other work on the machine moves it far less than it moves the step times.
        own = sum(seconds for _, seconds in calls[name]) / len(calls[name])
        rows.append(
            {
                "model": case.name,
                "monitor": f"every={EVERY}, norms_every={norms_every!r}".replace("'", '"'),
                "norms taken every": f"{monitors[name].norms_stride} steps",
                "plain step ms": round(plain * 1e3, 3),
                "with monitor ms": round(watched * 1e3, 3),
                "ratio": round(ratio, 4),
                "ratio of fastest rounds": round(min(times[name]) / min(times["plain"]), 4),
                "monitor.step per step us": round(own * 1e6, 1),
                "1 + its share": round(1 + own / plain, 4),
                "met": ratio <= TARGET,
                "monitor.step unsampled us": round(statistics.median(unsampled) * 1e6, 1),
                "monitor.step sampled ms": round(statistics.median(sampled) * 1e3, 2),
            }
        )
    return rows


def run(quick: bool = False) -> list[dict]:
    """Rows per model and monitor setting: plain and watched step times, their ratio, and the monitor's own
    per-call cost."""
    return [row for case in CASES for row in measure(case, rounds=5 if quick else 15)]


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    rows = [{**row, "met": f"{'PASS' if row['met'] else 'MISS'} (<= {TARGET})"} for row in rows]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time, not the wall clock: with --threads 1, what other work on a shared "
        "machine does to the timings is mostly left out (waiting for a core is not counted)",
    )
    options = parser.parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.cpu_time:
        global clock
        clock = time.process_time
    timing = "process CPU time" if options.cpu_time else "wall clock"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, every={EVERY}, {timing}", file=sys.stderr)
    print(markdown(run(options.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
