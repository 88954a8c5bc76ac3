"""Inference, written once: many tracks over many positions, sharing the genome projection.

The first dense layer is linear in the concatenated factors, so its
pre-activation splits into a per-track part (cell type, assay, bias), computed
once per track, and a per-position genome part, computed once per block of
positions and reused for every track. Each track then costs only the rest of
the network. :meth:`Avocado.predict_tracks
<epitensor.estimators.avocado.Avocado.predict_tracks>`, imputation
(:func:`epitensor.workflows.impute.impute`), the holdout scorer of training and the
benchmarks all predict through :class:`Predictor`.

A model with ``average`` set (:mod:`epitensor.nn.average`) adds or blends each
assay's average activity here, after the network, so every caller gets it.

A :class:`Predictor` borrows a module: inside :meth:`Predictor.session` the
network, the cell type and assay factors and the genome factors of the one
axis being predicted are on the device (never the other axes: a stage-2 model
holds the whole genome), in eval mode; both are restored on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from epitensor._utils import EpitensorError, resolve_device
from epitensor.nn.module import AvocadoModule, GenomeFactors, onednn_forward, resolve_cpu_gemm

__all__ = ["PRECISIONS", "Predictor", "head_layers"]

PRECISIONS = ("fp32", "bf16")


def head_layers(module: AvocadoModule, dtype: torch.dtype) -> list:
    """The network after the first layer and its ReLU: ``(weight, bias, relu)`` per linear layer.

    ``relu`` says whether a ReLU follows the layer; weights and biases are in ``dtype``.
    """
    first_relu, *rest = module.network[1:]
    if not isinstance(first_relu, torch.nn.ReLU):
        raise EpitensorError(f"inference expects a ReLU after the first layer, not {first_relu!r}")
    layers = []
    for layer in rest:
        if isinstance(layer, torch.nn.ReLU) and layers:
            layers[-1] = (*layers[-1][:2], True)
        elif isinstance(layer, torch.nn.Linear):
            layers.append((layer.weight.to(dtype), layer.bias.to(dtype), False))
        elif not isinstance(layer, torch.nn.Dropout):  # dropout is the identity at inference
            raise EpitensorError(f"inference does not know the layer {layer!r}")
    return layers


def _head_inplace(layers: list, pre: torch.Tensor, gemm: str = "default") -> torch.Tensor:
    """The network after the first layer, reusing ``pre``'s memory for activations.

    Parameters
    ----------
    layers : list
        From :func:`head_layers`.
    pre : torch.Tensor, shape=(n, n_nodes)
        First-layer pre-activation, in the layers' dtype.
    gemm : {"default", "onednn"}
        Torch's product, or oneDNN's with the bias and the ReLU fused (fp32 on a
        CPU; :func:`~epitensor.nn.module.resolve_cpu_gemm`). Default "default".

    Returns
    -------
    torch.Tensor, shape=(n,), float32, arcsinh
    """
    x = pre.relu_()  # the first layer's ReLU
    for weight, bias, relu in layers:
        if gemm == "onednn":
            x = onednn_forward(x, weight, bias, relu)
        else:
            x = torch.nn.functional.linear(x, weight, bias)
            x = x.relu_() if relu else x
    return x.squeeze(-1).float()


def _genome_columns(module: AvocadoModule) -> torch.Tensor:
    """The genome columns of the first layer's weight, shape ``(n_nodes, n_genome_factors)``."""
    sizes = module.component_sizes
    return module.network[0].weight[:, sizes["celltype"] + sizes["assay"] :]


class Predictor:
    """Predict tracks over positions of one axis at a time.

    Parameters
    ----------
    module : AvocadoModule
        The network and factors (borrowed: device and mode restored after a session).
    celltypes, assays : torch.Tensor, shape=(n_tracks,), int64
        Embedding rows of each track's cell type and assay.
    device : str or torch.device, optional
        Where to compute. Default None: CUDA if available, else MPS, else CPU.
    precision : {"fp32", "bf16"}
        Arithmetic of the layers after the first. Default ``"fp32"``: equal to the
        plain forward pass to float tolerance. ``"bf16"`` halves the work of the
        big layers where the hardware has bfloat16 matrix units (recent x86 CPUs,
        GPUs) at an error of about 1e-2 on the arcsinh scale. In fp32 on a CPU
        the layers after the first multiply as
        :func:`~epitensor.nn.module.resolve_cpu_gemm` says (oneDNN, bias and ReLU
        fused, on x86 CPUs not made by Intel; ``EPITENSOR_CPU_GEMM``).
    genome : callable, optional
        ``genome(axis) -> GenomeFactors`` as a context manager (loads and later
        frees a saved model's axis). Default None: ``module.genome[axis]``.
    """

    def __init__(
        self,
        module: AvocadoModule,
        celltypes: torch.Tensor,
        assays: torch.Tensor,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        genome: Callable[[str], contextlib.AbstractContextManager[GenomeFactors]] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise EpitensorError(
                f"invalid precision: got {precision!r}, expected one of {list(PRECISIONS)}"
            )
        if len(celltypes) != len(assays) or len(celltypes) == 0:
            raise EpitensorError(
                f"give one assay per cell type and at least one track; got {len(celltypes)} "
                f"cell types and {len(assays)} assays"
            )
        self.module = module
        self.precision = precision
        self.dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        self.device = resolve_device(device)
        self._rows = (torch.as_tensor(celltypes), torch.as_tensor(assays))
        self._genome = genome or (lambda axis: contextlib.nullcontext(module.genome[axis]))
        self._tables = contextlib.ExitStack()
        self._axis: str | None = None
        self._table = None
        self._table_device = None

    @property
    def n_tracks(self) -> int:
        """Number of tracks predicted."""
        return len(self._rows[0])

    @contextlib.contextmanager
    def session(self) -> Iterator[Predictor]:
        """Borrow the module: its shared parts on ``device`` in eval mode; restored on exit."""
        module = self.module
        was_training = module.training
        old_device = module.celltype_embedding.weight.device
        module.eval().parts_to(self.device)
        try:
            with torch.inference_mode():
                celltypes, assays = (t.to(self.device) for t in self._rows)
                self._assays = assays
                self._track_pre = module.track_projection(celltypes, assays)
                self._w_genome = _genome_columns(module)
                self._layers = head_layers(module, self.dtype)
                self._gemm = resolve_cpu_gemm(self.device, self.precision)
                yield self
        finally:
            self._release()
            module.parts_to(old_device).train(was_training)

    def _release(self) -> None:
        if self._table is not None:
            self._table.to(self._table_device)
        self._tables.close()
        self._axis = self._table = None

    def _axis_table(self, axis: str) -> GenomeFactors:
        # one axis at a time: moving to the next one releases (or unloads) the last
        if axis != self._axis:
            self._release()
            table = self._tables.enter_context(self._genome(axis))
            self._table_device = table.emb_25bp.weight.device
            self._table = table.eval().to(self.device)
            self._axis = axis
        return self._table

    def genome_projection(self, axis: str, positions: torch.Tensor) -> torch.Tensor:
        """First-layer genome part of ``positions`` (int64, on ``device``), ``(n, n_nodes)``."""
        return self._axis_table(axis)(positions) @ self._w_genome.T

    def predict_positions(self, axis: str, positions: torch.Tensor) -> torch.Tensor:
        """Every track at ``positions`` of ``axis`` (inside :meth:`session`).

        Parameters
        ----------
        axis : str
            Genome axis.
        positions : torch.Tensor, shape=(n_positions,), int64
            Axis positions.

        Returns
        -------
        torch.Tensor, shape=(n_tracks, n_positions), float32, arcsinh, on ``device``
        """
        positions = positions.to(self.device)
        genome = self.genome_projection(axis, positions)
        out = torch.empty((self.n_tracks, len(positions)), dtype=torch.float32, device=self.device)
        for k in range(self.n_tracks):
            pre = (genome + self._track_pre[k]).to(self.dtype)  # the sum in fp32, then cast
            out[k] = _head_inplace(self._layers, pre, self._gemm)
        if self.module.average == "none":
            return out
        table = self._axis_table(axis)
        return self.module.with_average(out, table, self._assays[:, None], positions[None, :])

    def predict(self, axis: str, start: int, end: int) -> np.ndarray:
        """Every track over axis positions ``[start, end)`` (inside :meth:`session`).

        Returns
        -------
        numpy.ndarray, shape=(n_tracks, end - start), float32, arcsinh
        """
        positions = torch.arange(start, end, device=self.device)
        return self.predict_positions(axis, positions).cpu().numpy()
