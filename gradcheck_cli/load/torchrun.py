"""Whether this process is one of a torchrun job, read from the environment torchrun sets. No torch here:
the CLI decides this before it starts its worker (gradcheck_cli/load/distributed.py joins the job in the worker)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from gradcheck_cli.common.errors import InvalidOptionError

# What torchrun sets for every process and init_process_group("env://") reads.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = (
    "launch gradcheck with torchrun, e.g. torchrun --nproc-per-node 2 -m gradcheck_cli scan model.py --distributed"
)


def torchrun_rank(requested: bool, fsdp: bool, environ: Mapping[str, str] = os.environ) -> int | None:
    """This process's rank when the scan runs distributed (``--distributed``, or torchrun's environment
    found), else None; one sentence when it was asked for outside torchrun."""
    missing = [name for name in TORCHRUN_VARIABLES if not environ.get(name)]
    if missing and (requested or fsdp):
        option = "--distributed" if requested else "--fsdp"
        unset = f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
        raise InvalidOptionError(f"{option} runs only under torchrun ({unset}); {LAUNCH_HINT}.")
    if missing:
        return None
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    except ValueError:
        raise InvalidOptionError(
            f"RANK={environ['RANK']!r} and WORLD_SIZE={environ['WORLD_SIZE']!r} are not process numbers; {LAUNCH_HINT}."
        ) from None
    if not 0 <= rank < world:
        raise InvalidOptionError(f"RANK={rank} is outside WORLD_SIZE={world}; {LAUNCH_HINT}.")
    return rank
