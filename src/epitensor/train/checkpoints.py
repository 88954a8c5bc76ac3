"""Training checkpoints: the module, the optimisers and the kept parameter sets, per epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from epitensor._utils import EpitensorError, atomic_directory

__all__ = ["Checkpoint", "trained_tensors"]

if TYPE_CHECKING:  # the plan's optimisers are saved; training imports this module
    from epitensor.train.fitting import TrainingPlan


def _flatten_optimizer_states(states: list[dict]) -> tuple[dict[str, torch.Tensor], list]:
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for i, state in enumerate(states):
        entries = {}
        for pid, slots in state["state"].items():
            entry = {}
            for key, value in slots.items():
                if torch.is_tensor(value):
                    name = f"opt{i}.{pid}.{key}"
                    tensors[name] = value.detach().cpu().contiguous()
                    entry[key] = {"tensor": name}
                else:
                    entry[key] = {"value": value}
            entries[str(pid)] = entry
        meta.append({"state": entries, "param_groups": state["param_groups"]})
    return tensors, meta


def _unflatten_optimizer_states(tensors: dict[str, torch.Tensor], meta: list) -> list[dict]:
    states = []
    for item in meta:
        state = {}
        for pid, entry in item["state"].items():
            state[int(pid)] = {
                key: tensors[v["tensor"]] if "tensor" in v else v["value"]
                for key, v in entry.items()
            }
        states.append({"state": state, "param_groups": item["param_groups"]})
    return states


def _save_file(tensors: dict[str, torch.Tensor], path: Path, checkpoint: Path) -> None:
    """Write one checkpoint file; a full disk or a file size limit is one line (trial T9)."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error for OSErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EpitensorError(
            f"cannot write checkpoint {checkpoint} ({first}); free disk space, raise the file "
            f"size limit (ulimit -f) or choose a writable folder, then run again"
        ) from None


class Checkpoint:
    """An atomic per-epoch checkpoint of a training loop, in a directory.

    Files: ``checkpoint/state.json`` (epoch, history, run fingerprint),
    ``checkpoint/module.safetensors``, ``checkpoint/optim.safetensors`` and
    ``log.jsonl`` (one line of figures per finished epoch).

    Parameters
    ----------
    directory : str or path-like
        Where checkpoints live.
    fingerprint : dict
        JSON description of the run; resuming from a checkpoint with another
        fingerprint raises.
    """

    def __init__(self, directory: str | Path, fingerprint: dict) -> None:
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint))

    @property
    def path(self) -> Path:
        """The checkpoint folder."""
        return self.directory / "checkpoint"

    def exists(self) -> bool:
        """True when a finished epoch was checkpointed."""
        return (self.path / "state.json").is_file()

    def save(
        self,
        epoch: int,
        module: nn.Module,
        plan: TrainingPlan,
        history: list[dict],
        extra: dict,
        kept: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """Write the state after ``epoch`` (atomic: the old checkpoint stays until the rename).

        ``kept`` holds further parameter sets (the best epoch's, the running
        average), written in the same atomic step so they always match the epoch.
        """
        tensors, meta = _flatten_optimizer_states(plan.state_dict())
        with atomic_directory(self.path, overwrite=True) as tmp:
            _save_file(_module_tensors(module), tmp / "module.safetensors", self.path)
            _save_file(tensors, tmp / "optim.safetensors", self.path)
            for name, state in (kept or {}).items():
                _save_file(state, tmp / f"kept-{name}.safetensors", self.path)
            state = {
                "epoch": epoch,
                "fingerprint": self.fingerprint,
                "history": history,
                "optimizers": meta,
                "extra": extra,
            }
            (tmp / "state.json").write_text(json.dumps(state))
        with open(self.directory / "log.jsonl", "a") as log:
            log.write(json.dumps(history[-1]) + "\n")

    def load(self, module: nn.Module, plan: TrainingPlan) -> tuple[int, list[dict], dict]:
        """Restore module and optimisers; returns (last epoch, history, extra)."""
        from safetensors.torch import load_file

        state = json.loads((self.path / "state.json").read_text())
        if state["fingerprint"] != self.fingerprint:
            raise EpitensorError(
                f"checkpoint in {self.directory} belongs to another run (other data or "
                f"hyperparameters); remove it or train without resume"
            )
        weights = load_file(str(self.path / "module.safetensors"))
        module.load_state_dict(weights)
        tensors = load_file(str(self.path / "optim.safetensors"))
        plan.load_state_dict(_unflatten_optimizer_states(tensors, state["optimizers"]))
        return int(state["epoch"]), list(state["history"]), dict(state["extra"])

    def load_kept(self) -> dict[str, dict[str, torch.Tensor]]:
        """The parameter sets saved with ``kept=`` by :meth:`save`, by name."""
        from safetensors.torch import load_file

        return {
            path.stem.removeprefix("kept-"): load_file(str(path))
            for path in sorted(self.path.glob("kept-*.safetensors"))
        }

    def clear(self) -> None:
        """Remove the checkpoint folder and log."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
        (self.directory / "log.jsonl").unlink(missing_ok=True)


def trained_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that require gradients."""
    return {
        name: param.detach().to("cpu", copy=True)
        for name, param in module.named_parameters()
        if param.requires_grad
    }


def _module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter and buffer."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}
