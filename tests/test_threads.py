"""The OpenMP wait setting: applied on import of mtst, never over the user's own."""

from __future__ import annotations

import os
import subprocess
import sys

from mtst.threads import SPIN_COUNT, short_spin


def test_short_spin_sets_the_count_where_nothing_is_set() -> None:
    env: dict[str, str] = {}
    assert short_spin(env)
    assert env == {"GOMP_SPINCOUNT": SPIN_COUNT}


def test_short_spin_keeps_what_the_user_chose() -> None:
    for key, value in (("GOMP_SPINCOUNT", "300000"), ("OMP_WAIT_POLICY", "ACTIVE")):
        env = {key: value}
        assert not short_spin(env)
        assert env == {key: value}


def test_importing_mtst_sets_it_before_torch_starts() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import mtst, os, sys; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [SPIN_COUNT, "False"]
