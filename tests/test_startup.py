"""Start-up: ``import sgdsde`` loads nothing heavy, the public names load on first use,
numba kernels compile on first use and come from the on-disk cache in later processes.

Each check runs in a fresh interpreter (the test process has imported everything).
Timings are not asserted here (they depend on the machine): benchmarks/bench_startup.py
measures them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sgdsde

REPO = Path(sgdsde.__file__).resolve().parent.parent
# Modules a plain import must not pay for (torch and torchsde alone take ~2 s).
HEAVY = ("torch", "torchsde", "matplotlib", "xarray", "pandas")


def _python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter that imports this checkout's sgdsde; the code
    prints one JSON value, returned here."""
    environ = dict(os.environ, **env)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sgdsde_loads_nothing_heavy():
    loaded = _python(
        "import json, sys; import sgdsde; "
        f"print(json.dumps([m for m in {(*HEAVY, 'numba')!r} if m in sys.modules]))"
    )
    assert loaded == []


def test_models_data_and_xoshiro_run_without_torch():
    """The closed-form models' numpy interface, every data generator and the xoshiro
    streams need numba, never torch or torchsde (or the dataset and plotting stack)."""
    code = """
import json, sys
import numpy as np
import sgdsde
from sgdsde.data import GENERATORS, make_data
from sgdsde.models import MODELS, make_model
from sgdsde import xoshiro
assert xoshiro.fill_normals.signatures == [], "xoshiro kernels compile on first use"
data = make_data("sparse_regression", n=6, d=4, k=2, n_test=3)
for name in GENERATORS:
    make_data(name)
model = make_model("diagonal_linear", d=4)
theta = model.init([np.random.default_rng(0)])
model.loss(theta, data.X, data.y), model.grad(theta, data.X, data.y)
z = np.empty((2, 3)); xoshiro.XoshiroNormals.from_seed(0, 2).draw(z)
print(json.dumps([m for m in HEAVY if m in sys.modules]))
""".replace("HEAVY", repr(HEAVY))
    assert _python(code) == []


def test_public_names_load_on_first_use():
    names = set(sgdsde.__all__)
    assert {"simulate_sgd", "simulate_sde", "make_model", "Model", "TorchModel"} <= names
    assert names <= set(dir(sgdsde))
    for name in sorted(names - {"__version__"}):
        value = getattr(sgdsde, name)
        assert getattr(value, "__module__", "").startswith("sgdsde."), name
    assert sgdsde.models.MODELS is sgdsde.MODELS  # subpackages stay attributes
    namespace: dict = {}
    exec("from sgdsde import *", namespace)
    assert names <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'simulate_everything'"):
        sgdsde.simulate_everything  # noqa: B018


def test_kernels_compile_on_first_use_then_load_from_the_disk_cache(tmp_path):
    """Importing a model compiles nothing; its first use compiles the kernel (both
    overloads) into numba's cache, and a second fresh process loads it from there."""
    code = """
import json
import numpy as np
from sgdsde.models import linear
kernel = linear._predict_linear
compiled_at_import = "dispatcher" in vars(kernel)
model = linear.LinearRegression(d=3)
predict_one, _ = model.kernels
value = predict_one(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.5, -1.0]), model.spec)
stats = predict_one.stats
print(json.dumps({
    "compiled_at_import": compiled_at_import,
    "value": value,
    "hits": sum(stats.cache_hits.values()),
    "misses": sum(stats.cache_misses.values()),
}))
"""
    first = _python(code, NUMBA_CACHE_DIR=str(tmp_path))
    second = _python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert first["value"] == second["value"] == 1.0 + 1.0 - 3.0
    assert not first["compiled_at_import"] and not second["compiled_at_import"]
    assert first["misses"] == 2 and first["hits"] == 0  # float64 and float32 compiled
    assert second["misses"] == 0 and second["hits"] == 2  # both loaded from disk
    assert any(tmp_path.rglob("*.nbi")), "numba's cache index is on disk"
