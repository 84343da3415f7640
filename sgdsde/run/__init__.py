"""The run layer shared by every simulator: the run loop over save points, recording of
metrics, save grids, dataset assembly and I/O, and the shared argument checks."""

from sgdsde.run.dataset import config_of, load_dataset, save_dataset
from sgdsde.run.grids import as_grid, eval_grid

__all__ = ["as_grid", "config_of", "eval_grid", "load_dataset", "save_dataset"]
