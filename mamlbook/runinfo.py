"""What every run writes beside its results: where it ran, and its JSON, written safely."""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import torch


def machine_info(device: str | torch.device = "cpu") -> dict:
    """torch version, device (and GPU name), CPU threads, platform and Python of this run."""
    device = torch.device(device)
    info = {"torch": torch.__version__, "device": str(device), "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _finite_or_null(obj):
    """JSON has no inf/NaN: a value that overflowed (e.g. a diverged task's mean) is written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Write strict JSON to a temporary file, then rename it over ``path`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite_or_null(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
