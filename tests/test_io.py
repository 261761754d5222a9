"""Atomic writes and the reader that copes with them."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from autoprune._io import atomic_write, read_parquet


def test_read_parquet_never_sees_a_torn_file_while_a_writer_replaces_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Reading by path raced os.replace (pyarrow pairs the old size with the new bytes); a handle does not."""
    path = tmp_path / "rows.parquet"
    atomic_write(path, lambda tmp: pd.DataFrame({"a": [0]}).to_parquet(tmp))
    done = threading.Event()

    def writer() -> None:
        n = 1
        while not done.is_set():
            frame = pd.DataFrame({"a": np.arange(n % 50 + 1), "b": ["x" * (n % 7)] * (n % 50 + 1)})
            atomic_write(path, frame.to_parquet)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        lengths = {len(read_parquet(path)) for _ in range(500)}
    finally:
        done.set()
        thread.join()
    assert len(lengths) > 1  # the writer really was replacing the file during the reads
