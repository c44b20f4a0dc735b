"""Runs alibi-detect's online detectors for `driftwatch bench drift`, in alibi-detect's own
environment (it pins transformers<5 and numpy<2). Same procedure and data as the driftwatch
side; prints one JSON line of figures per detector as soon as it has them."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from monitor.local.bench_drift import measure

_SEED = 0  # the first of driftwatch's detector seeds


def main(data: str, ert: int, window: int, runs: int, clean_records: int) -> None:
    import torch
    from alibi_detect.cd import LSDDDriftOnline, MMDDriftOnline

    torch.set_num_threads(int(os.environ.get("DRIFTWATCH_BENCH_THREADS", "1")))

    arrays = np.load(data)
    reference, clean, shifted = arrays["reference"], arrays["clean"], arrays["shifted"]
    for name, cls in (("alibi-detect MMDDriftOnline", MMDDriftOnline),
                      ("alibi-detect LSDDDriftOnline", LSDDDriftOnline)):
        # Its calibration (reference splits, bootstrap streams) draws from torch's global
        # generator: seeded, a run's figures are the next run's, as driftwatch's are.
        torch.manual_seed(_SEED)
        detector = cls(reference, ert=ert, window_size=window, backend="pytorch",
                       n_bootstraps=10 * ert, verbose=False)

        def update(row: np.ndarray, d=detector) -> bool:
            return bool(d.predict(row)["data"]["is_drift"])

        figures = measure(name, update, detector.reset_state, clean, shifted, runs,
                           clean_records)
        print(json.dumps(asdict(figures)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
