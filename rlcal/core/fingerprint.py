"""What a metrics.json was measured on, as a short fingerprint, so that `rlcal compare` only diffs like with like.

    from rlcal.core.fingerprint import eval_fingerprint, fingerprint_mismatch
    fp = eval_fingerprint([("When was Ann born?", "03-14", 0.5), ...], grader="exact", n_bins=15,
                          calibration_at=0.0)
    fingerprint_mismatch(fp, other)      # [] or the fields that differ, e.g. ["eval_set", "thresholds"]

`eval_set` hashes the multiset of decisions (question, gold answer where known, t): another split, other
questions, other gold answers or another grid of t give another hash. The settings that change what a number
means are kept beside it in the clear: the grid of t, the grader, the bin count and where the ECE is measured
(`calibration_at`: 0.0 for `rlcal eval`, "all" for `rlcal score`). The model, the policy and the confidence method
are *not* part of it: comparing those on one eval set is what `rlcal compare` is for. Pure Python.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

CHECKED = ("eval_set", "n_items", "thresholds", "grader", "n_bins", "calibration_at")


def eval_fingerprint(items: Iterable[Any], **settings: Any) -> dict[str, Any]:
    """The fingerprint of the decisions `items` (JSON-able tuples; their order does not matter) and `settings`.
    Each item's last element is its t: the sorted distinct ones are listed as `thresholds`."""
    encoded = sorted(json.dumps(list(item) if isinstance(item, tuple) else item, sort_keys=True) for item in items)
    digest = hashlib.sha256("\n".join(encoded).encode("utf-8")).hexdigest()[:16]
    grid = sorted({float(json.loads(e)[-1]) for e in encoded if e.startswith("[")})
    return {"eval_set": digest, "n_items": len(encoded), "thresholds": grid, **settings}


def fingerprint_mismatch(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The checked fields on which two fingerprints differ (a field missing from both is no difference)."""
    return [key for key in CHECKED if a.get(key) != b.get(key)]
