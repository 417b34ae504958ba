"""Training checkpoints: model, optimiser, scheduler and loop state, written atomically
(a complete folder is swapped in; a crash leaves the previous checkpoint) so that
``resume`` continues exactly where a run stopped."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

CHECKPOINT = "checkpoint"


def save_checkpoint(out: Path, model, loss, opt, sched, state: dict, train_config) -> None:
    """Write ``out/checkpoint`` (model weights + extras, optimiser tensors, JSON state)."""
    from safetensors.torch import save_file

    final, tmp, old = out / CHECKPOINT, out / ".checkpoint.tmp", out / ".checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tensors, meta = flatten_optimizer(opt.state_dict())
    tensors["loss.log_inv_temperature"] = loss.log_inv_temperature.detach().clone().reshape(1)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps(
        {**state, "optimizer": meta, "scheduler": sched.state_dict(), "train_config": asdict(train_config)}))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out: Path, model, loss, opt, sched, device) -> dict | None:
    """Restore what :func:`save_checkpoint` wrote; the loop state, or None without one."""
    from safetensors.torch import load_file

    ck = out / CHECKPOINT
    if not (ck / "trainer_state.json").is_file():
        return None
    state = json.loads((ck / "trainer_state.json").read_text())
    model.load_saved_weights(ck)
    tensors = load_file(str(ck / "optimizer.safetensors"), device=str(device))
    with torch.no_grad():
        loss.log_inv_temperature.copy_(tensors.pop("loss.log_inv_temperature")[0])
    opt.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
    sched.load_state_dict(state["scheduler"])
    return state


def flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser state dict as flat tensors (for safetensors) and JSON metadata."""
    tensors, meta_state = {}, {}
    for pid, st in sd["state"].items():
        meta_state[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().clone().contiguous()
            else:
                meta_state[str(pid)][k] = v
    return tensors, {"state": meta_state, "param_groups": sd["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in meta["state"].items()}
    for key, t in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": meta["param_groups"]}


def remove_checkpoint(out: Path) -> None:
    """Delete ``out/checkpoint`` (and any half-swapped copy) once the model is written."""
    for name in (CHECKPOINT, ".checkpoint.tmp", ".checkpoint.old"):
        shutil.rmtree(out / name, ignore_errors=True)
