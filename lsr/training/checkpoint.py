"""Checkpoints: the model (in our save format, usable as is) plus the loop's state.

``trainer_state.pt`` holds the module weights, optimizer and scheduler state, the step, the
best dev result and the RNG states, so `--resume` continues exactly where the run stopped.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step}"


def save_checkpoint(run_dir: Path, step: int, trainable, optimizer, scheduler, best: dict | None,
                    keep: int) -> Path:
    """Write ``checkpoints/step-N`` atomically (temporary folder, then rename) and prune old ones."""
    final = checkpoint_dir(run_dir, step)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    trainable.save(partial / "model")
    torch.save({
        "step": step,
        "module": trainable.module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best": best,
        "torch_rng": torch.get_rng_state(),
    }, partial / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume(run_dir: Path, resume: str | bool) -> Path | None:
    """``True``: the latest checkpoint of the run (None if it has none); a path: that checkpoint."""
    if not resume:
        return None
    if resume is True:
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no {STATE_FILE})")
    return path


def load_checkpoint(path: Path, trainable, optimizer, scheduler) -> tuple[int, dict | None]:
    """Restore everything saved by `save_checkpoint`; returns (step, best)."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    trainable.module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), state["best"]
