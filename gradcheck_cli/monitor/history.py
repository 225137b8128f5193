"""A training run's gradient history: what ``gradcheck_cli.Monitor`` records at each sampled step (the rules that
judge it over time are training_judge's), and the JSON-lines file that ``gradcheck report`` reads back. No torch.

The file is one JSON object per line: a header (the model's layers, the thresholds and rules in force),
then one record per sampled step with every layer's figures as columns in the header's layer order.
Non-finite numbers are written as the strings "nan", "inf" and "-inf" (JSON has no NaN, and here a NaN is
the news). See docs/monitor.md for the keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gradcheck_cli import __version__
from gradcheck_cli.common.choices import FindingKind
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.common.files import NotARegularFileError, read_regular_file
from gradcheck_cli.common.stats import LayerStats, ModelStructure, ProbeResult

SCHEMA = "gradcheck.monitor-history"
# Bump the major part when an existing key changes meaning or goes away; a reader accepts any minor.
SCHEMA_VERSION = "1.0"

# Problem kinds of the rules over time; the rules of a scan use their FindingKind values.
GRADIENT_GROWTH = "gradient_growth"
GRADIENT_SHRINK = "gradient_shrink"
NONFINITE = FindingKind.NONFINITE.value

# A layer's gradient norm against its own median over the first steps. Growth of x100 within a run is
# what a learning-rate spike or a loss spike does in one or two steps (see tests/test_monitor.py), while
# healthy runs drift by a few times; gradients shrink much more in healthy runs (the loss falls, a
# cross-entropy fit saturates), so only four decades count as vanishing over time.
DEFAULT_GROW_FACTOR = 100.0
DEFAULT_SHRINK_FACTOR = 1e4
# Steps whose median is each layer's reference: enough to outvote an odd first step (zero-initialized
# layers get an exact zero at step 1), few enough that the rules start early.
DEFAULT_REFERENCE_STEPS = 10

# The per-layer figures of a record, written as columns in the header's layer order.
LAYER_FIGURES = (
    "grad_norm", "weight_grad_norm", "other_grad_norm", "weight_norm", "weight_std", "relative_grad",
    "backward", "forward_rms",
)  # fmt: skip
LAYER_FLAGS = ("grad_nonfinite", "forward_nonfinite", "backward_nonfinite")
_HOW_TO_WRITE = "write one with gradcheck_cli.Monitor(model, log='history.jsonl') or monitor.write_history(path)"


class HistoryError(GradcheckError):
    """A history file that cannot be read; the message says why and how to get a good one."""


@dataclass(frozen=True)
class Rules:
    """The rules over time: a layer's gradient norm against its median over its first ``reference_steps``
    steps with a finite gradient."""

    grow_factor: float = DEFAULT_GROW_FACTOR
    shrink_factor: float = DEFAULT_SHRINK_FACTOR
    reference_steps: int = DEFAULT_REFERENCE_STEPS

    def __post_init__(self) -> None:
        if not (self.grow_factor > 1 and self.shrink_factor > 1):
            raise InvalidOptionError(
                f"grow_factor and shrink_factor must be above 1 (got {self.grow_factor:g} and "
                f"{self.shrink_factor:g}); try the defaults, {DEFAULT_GROW_FACTOR:g} and {DEFAULT_SHRINK_FACTOR:g}."
            )
        if isinstance(self.reference_steps, bool) or not isinstance(self.reference_steps, int):
            raise InvalidOptionError(f"reference_steps must be a whole number (got {self.reference_steps!r}).")
        if self.reference_steps < 1:
            raise InvalidOptionError(f"reference_steps must be at least 1 (got {self.reference_steps}).")


@dataclass
class LayerInfo:
    """What does not change during a run: one layer (a module that owns parameters directly)."""

    name: str
    type: str
    param_count: int = 0
    trainable: bool = True
    fan_in: int | None = None
    shared_with: str | None = None  # its parameters are owned by this earlier layer (tied weights)


@dataclass
class HistoryHeader:
    model: str
    layers: list[LayerInfo]
    every: int  # steps between sampled steps
    start_step: int  # the number of the first step the monitor saw
    signals: bool  # sampled steps also measure each layer's output gradient and activations (module hooks)
    thresholds: Any  # diagnosis.Thresholds
    rules: Rules
    structure: ModelStructure = field(default_factory=ModelStructure)
    param_count: int = 0
    trainable_param_count: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    note: str = ""  # how the steps were taken, e.g. by a trainer's callback after its gradient clipping
    tool_version: str = __version__

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]


@dataclass
class Problem:
    """A gradient problem the monitor found: when and where it first showed, and the numbers behind it."""

    kind: str  # GRADIENT_GROWTH, GRADIENT_SHRINK, NONFINITE, or a scan finding kind (FindingKind value)
    step: int  # the first step that showed it
    layer: str | None  # the first layer that showed it; None when it is the loss
    message: str  # one line
    found_at: int  # the step whose read-out found it (a sampled step, or a check)
    layers: list[str] = field(default_factory=list)  # every layer that showed it at that step
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    """One sampled step (or one read-out asked for with ``check``): every layer's figures at that step."""

    step: int
    steps: int  # training steps read out here: this one and those since the previous record
    loss: float | None
    total_grad_norm: float | None  # global norm of all the tracked gradients at this step
    max_total_grad_norm: float | None  # the largest over the steps read out here
    batch_size: int | None  # samples in this step's forward passes (measured with the module hooks)
    signals: bool  # the output-gradient and activation figures were measured at this step
    layers: list[LayerStats]
    problems: list[Problem] = field(default_factory=list)  # found at this read-out
    norm_steps: int | None = None  # of ``steps``, those whose per-layer gradient norms were read (norms_every)

    def layer(self, name: str) -> LayerStats:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


@dataclass
class History:
    header: HistoryHeader
    records: list[StepRecord]
    notes: list[str] = field(default_factory=list)  # what the reader had to leave out (a cut last line)

    @property
    def problems(self) -> list[Problem]:
        return [problem for record in self.records for problem in record.problems]


# ------------------------------------------------------------------------------------- a record as a scan


def probe_result(header: HistoryHeader, record: StepRecord) -> ProbeResult:
    """A sampled step as the scan's measurements, so the scan's diagnosis (and its thresholds) judge it."""
    return ProbeResult(
        model_name=header.model,
        param_count=header.param_count,
        trainable_param_count=header.trainable_param_count,
        batch_size=record.batch_size or 0,
        passes=1,
        seed=0,
        seconds=0.0,
        dtype=header.dtype,
        device=header.device,
        layers=record.layers,
        losses=[record.loss] if record.loss is not None else [],
        total_grad_norms=[record.total_grad_norm] if record.total_grad_norm is not None else [],
        structure=header.structure,
        # Without the module hooks the trend is read from weight-gradient norms, as for TorchScript.
        hooked=header.signals,
    )


def diagnose_record(header: HistoryHeader, record: StepRecord):
    from gradcheck_cli.judge.diagnosis import diagnose

    return diagnose(probe_result(header, record), header.thresholds)


# ------------------------------------------------------------------------------------- the report


@dataclass
class HistorySummary:
    """What ``gradcheck report`` shows: the run, its problems, and the layers at one sampled step."""

    path: str
    history: History
    shown: StepRecord
    shown_because: str  # why this step: "asked for", "the first sampled step with a problem", "the last ..."
    diagnosis: Any  # diagnosis.Diagnosis of the shown step

    @property
    def header(self) -> HistoryHeader:
        return self.history.header

    @property
    def problems(self) -> list[Problem]:
        return self.history.problems


def summarize_history(history: History, path: str, step: int | None = None) -> HistorySummary:
    records = history.records
    if step is not None:
        chosen = next((record for record in records if record.step == step), None)
        if chosen is None:
            steps = [record.step for record in records]
            listed = ", ".join(str(s) for s in steps[:8]) + (", ..." if len(steps) > 8 else "")
            raise InvalidOptionError(f"{path} has no record of step {step}; its records are at steps {listed}.")
        because = "asked for"
    else:
        chosen = next((record for record in records if record.problems), None)
        because = "the first record with a problem"
        if chosen is None:
            chosen, because = records[-1], "the last record"
    return HistorySummary(path, history, chosen, because, diagnose_record(history.header, chosen))


# ------------------------------------------------------------------------------------- writing


def header_document(header: HistoryHeader) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "gradcheck", "version": header.tool_version},
        "model": header.model,
        "parameters": header.param_count,
        "trainable_parameters": header.trainable_param_count,
        "dtype": header.dtype,
        "device": header.device,
        "every": header.every,
        "start_step": header.start_step,
        "signals": header.signals,
        "note": header.note,
        "layers": [asdict(layer) for layer in header.layers],
        "structure": asdict(header.structure),
        "thresholds": asdict(header.thresholds),
        "rules": asdict(header.rules),
    }


def record_scalars(record: StepRecord) -> dict[str, Any]:
    """A record's step and run-level figures: the head of its history line and of its report's series item."""
    return {
        "step": record.step,
        "steps": record.steps,
        "norm_steps": record.norm_steps,
        "loss": record.loss,
        "total_grad_norm": record.total_grad_norm,
        "max_total_grad_norm": record.max_total_grad_norm,
    }


def record_document(record: StepRecord) -> dict[str, Any]:
    layers = record.layers
    columns: dict[str, list] = {key: [getattr(layer, key) for layer in layers] for key in LAYER_FIGURES}
    columns.update({key: [getattr(layer, key) for layer in layers] for key in LAYER_FLAGS})
    columns["calls"] = [layer.calls for layer in layers]
    return {
        **record_scalars(record),
        "batch_size": record.batch_size,
        "signals": record.signals,
        "layers": columns,
        "problems": [asdict(problem) for problem in record.problems],
    }


def json_line(document: dict[str, Any]) -> str:
    """One line of the file: non-finite numbers as strings, no NaN tokens that other readers refuse."""
    return json.dumps(_encode(document), allow_nan=False, separators=(",", ":")) + "\n"


def history_text(header: HistoryHeader, records: list[StepRecord]) -> str:
    return json_line(header_document(header)) + "".join(json_line(record_document(r)) for r in records)


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


# ------------------------------------------------------------------------------------- reading

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def read_history(path: Path) -> History:
    """A history file read back whole; a HistoryError that says what is wrong and what to do otherwise.

    A last line cut short (the training process stopped while writing it) is left out with a note.
    """
    path = Path(path)
    try:
        text = read_regular_file(path).decode("utf-8")
    except FileNotFoundError:
        raise HistoryError(f"No history at {path}: {_HOW_TO_WRITE}.") from None
    except IsADirectoryError:
        raise HistoryError(f"{path} is a directory, not a history file: give the file's path.") from None
    except NotARegularFileError:  # /dev/zero never ends, a FIFO blocks
        raise HistoryError(
            f"{path} is not a regular file (a device, FIFO or socket), so not a gradcheck history: {_HOW_TO_WRITE}."
        ) from None
    except UnicodeDecodeError:
        raise HistoryError(f"{path} is not a text file, so not a gradcheck history: {_HOW_TO_WRITE}.") from None
    except OSError as error:
        raise HistoryError(f"Cannot read the history {path}: {error.strerror or error}.") from error
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines.pop()
    notes: list[str] = []
    documents: list[tuple[int, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            documents.append((number, json.loads(line)))
        except RecursionError:  # the json module recurses per level; no history line nests past a few
            raise HistoryError(
                f"{path} line {number} nests arrays or objects too deeply to be a gradcheck history record: "
                f"{_HOW_TO_WRITE}."
            ) from None
        except ValueError as error:
            if number == len(lines) and not complete and documents:
                notes.append(f"line {number} is cut short (the run stopped while writing it) and was left out")
                break
            raise HistoryError(
                f"{path} line {number} is not JSON ({getattr(error, 'msg', error)}), so {path} is not a gradcheck "
                f"history (JSON lines): {_HOW_TO_WRITE}."
            ) from None
    if not documents:
        raise HistoryError(f"{path} is empty: {_HOW_TO_WRITE}.")
    number, first = documents[0]
    header = _header(path, number, first)
    records = [_record(path, number, document, header) for number, document in documents[1:]]
    if not records:
        raise HistoryError(
            f"{path} has a header but no sampled step yet: the monitor writes a line at each sampled step "
            f"(every {header.every} steps), so read it once training has taken a step."
        )
    return History(header, records, notes)


def _header(path: Path, number: int, document: Any) -> HistoryHeader:
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        hint = ""
        if isinstance(document, dict) and ("targets" in document or "layers" in document and "schema" not in document):
            hint = " (it looks like a gradcheck report or baseline)"
        raise HistoryError(
            f'{path} is not a gradcheck monitor history: its first line has no "schema": "{SCHEMA}"{hint}; '
            f"{_HOW_TO_WRITE}."
        )
    version = document.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise HistoryError(
            f"{path} has schema version {version!r}, which gradcheck {__version__} does not read (it reads "
            f"{SCHEMA_VERSION}): use the gradcheck that wrote it."
        )
    try:
        layers = [_dataclass(LayerInfo, item) for item in document["layers"]]
        if not layers:
            raise ValueError("no layers")
        thresholds = _thresholds(document["thresholds"])
        rules = _dataclass(Rules, document["rules"])
        structure = _dataclass(ModelStructure, document.get("structure") or {})
        every, start = document["every"], document["start_step"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (every, start)) or every < 1:
            raise ValueError("every and start_step must be whole numbers")
        return HistoryHeader(
            model=str(document["model"]),
            layers=layers,
            every=every,
            start_step=start,
            signals=bool(document["signals"]),
            thresholds=thresholds,
            rules=rules,
            structure=structure,
            param_count=int(document.get("parameters") or 0),
            trainable_param_count=int(document.get("trainable_parameters") or 0),
            dtype=str(document.get("dtype", "float32")),
            device=str(document.get("device", "cpu")),
            note=str(document.get("note") or ""),
            tool_version=str((document.get("tool") or {}).get("version", "")),
        )
    except (KeyError, TypeError, ValueError, RecursionError, GradcheckError) as error:
        raise HistoryError(
            f"{path} line {number} is not a usable history header ({_why(error)}): {_HOW_TO_WRITE}."
        ) from None


def _thresholds(values: Any):
    from gradcheck_cli.judge.diagnosis import Thresholds

    return _dataclass(Thresholds, values)


def _dataclass(cls, values: Any):
    if not isinstance(values, dict):
        raise TypeError(f"{cls.__name__} is not an object")
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:  # a newer minor version may add keys: they are left out, not refused
        values = {key: value for key, value in values.items() if key in known}
    return cls(**values)


def _record(path: Path, number: int, document: Any, header: HistoryHeader) -> StepRecord:
    try:
        if not isinstance(document, dict):
            raise TypeError("not an object")
        count = len(header.layers)
        columns = document["layers"]
        if not isinstance(columns, dict):
            raise TypeError("layers is not an object of columns")
        for key in (*LAYER_FIGURES, *LAYER_FLAGS, "calls"):
            column = columns.get(key)
            if not isinstance(column, list) or len(column) != count:
                raise ValueError(f"column {key!r} does not have one value per layer ({count})")
        layers = []
        for i, info in enumerate(header.layers):
            stats = LayerStats(
                name=info.name,
                type=info.type,
                calls=int(columns["calls"][i] or 0),
                param_count=info.param_count,
                trainable=info.trainable,
                shared_with=info.shared_with,
                fan_in=info.fan_in,
            )
            for key in LAYER_FIGURES:
                setattr(stats, key, _number(columns[key][i], key))
            for key in LAYER_FLAGS:
                setattr(stats, key, bool(columns[key][i]))
            layers.append(stats)
        step = document["step"]
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError("step is not a whole number")
        problems = [_problem(item) for item in document.get("problems") or []]
        return StepRecord(
            step=step,
            steps=int(document.get("steps") or 1),
            norm_steps=document.get("norm_steps"),
            loss=_number(document.get("loss"), "loss"),
            total_grad_norm=_number(document.get("total_grad_norm"), "total_grad_norm"),
            max_total_grad_norm=_number(document.get("max_total_grad_norm"), "max_total_grad_norm"),
            batch_size=document.get("batch_size"),
            signals=bool(document.get("signals")),
            layers=layers,
            problems=problems,
        )
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise HistoryError(
            f"{path} line {number} is not a usable history record ({_why(error)}): {_HOW_TO_WRITE}."
        ) from None


def _problem(item: Any) -> Problem:
    if not isinstance(item, dict):
        raise TypeError("a problem is not an object")
    problem = _dataclass(Problem, item)
    if not isinstance(problem.kind, str) or not isinstance(problem.step, int) or not isinstance(problem.message, str):
        raise ValueError("a problem has no kind, step and message")
    problem.figures = {key: _decoded(value) for key, value in (problem.figures or {}).items()}
    return problem


def _number(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} is not a number")
    return float(value)


def _decoded(value: Any) -> Any:
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    return value


def _why(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"no {error.args[0]!r}"
    if isinstance(error, RecursionError):
        return "it nests too deeply"
    return str(error)
