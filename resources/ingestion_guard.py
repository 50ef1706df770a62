"""The ingestion guard's configuration: the preconditions an ingestion run checks before it starts.

The checks that need the drop protocol or a source live with the Bronze assets (assets/bronze/guard.py);
this resource holds only what is configured per environment, such as the free-disk minimum.
"""

import shutil
from pathlib import Path

import dagster as dg


class IngestionGuard(dg.ConfigurableResource):
    """Preconditions of ingestion runs; `min_free_disk_gb` guards the local data folder."""

    data_path: str
    min_free_disk_gb: float = 1.0

    def free_disk_problem(self) -> str | None:
        folder = Path(self.data_path)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free_gb = shutil.disk_usage(folder).free / 2**30
        if free_gb < self.min_free_disk_gb:
            return f"free disk under {folder} is {free_gb:.2f} GiB, below the {self.min_free_disk_gb:g} GiB minimum"
        return None
