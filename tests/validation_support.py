"""What tests of ``sgdsde.validation.validate`` share: its SGD runs re-run by hand with
the seeding its module doc states (run i: child i of ``seed``, spawned into network,
SGD and SDE streams), the oracle for the calibrations it derives from them."""

from __future__ import annotations

import numpy as np

from sgdsde.validation import MLP, EvaluationOptions, teacher_images, train_sgd

#: The teacher data of the tiny validation configs (n 24, 3 classes, 1x2x2 images).
TINY_DATA = {"n": 24, "n_test": 8, "input_shape": (1, 2, 2), "n_classes": 3}


def validate_sgd_runs(
    sgd: dict, *, widths=(6,), evaluation: EvaluationOptions | None = None, n_seeds: int = 2
) -> list:
    """The SGD runs of ``validate`` on a tiny teacher config with seed 0."""
    data = teacher_images(**TINY_DATA)
    runs = []
    for child in np.random.SeedSequence(0).spawn(n_seeds):
        init, sgd_seed, _ = child.spawn(3)
        net = MLP(TINY_DATA["input_shape"], widths=list(widths), n_outputs=3, seed=init)
        runs.append(train_sgd(net, data, seed=sgd_seed, evaluation=evaluation, **sgd))
    return runs
