"""How idle OpenMP threads wait, set before torch starts its thread pool.

torch's CPU builds run their kernels on GNU OpenMP, whose idle threads spin for about 300,000
iterations before they sleep. On a machine whose cores are all in use (two trainings on two cores,
a server beside a training) the spinning threads take the cores the working ones need: two default
runs of the same small training on 2 cores took 209 s each where one alone took 17 s. A short spin
(``GOMP_SPINCOUNT=1000``) brings that to 28 s each at about the same speed alone
(benchmarks/README.md, "Start-up and concurrency"). A user's own ``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY`` is kept, and once torch has started its pool the setting has no effect, so
this runs first on import of :mod:`mtst`.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SPIN_COUNT = "1000"


def short_spin(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Ask GNU OpenMP for a short spin unless the user chose how threads wait; returns whether it did."""
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
