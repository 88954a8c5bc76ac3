"""The torch module: cell type, assay and multi-scale genome embeddings feeding an MLP."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from epitensor._utils import EpitensorError, cpu_vendor
from epitensor.nn.hyperparams import ModuleConfig

__all__ = [
    "AvocadoModule",
    "GenomeFactors",
    "COMPONENTS",
    "CPU_GEMMS",
    "onednn_forward",
    "onednn_linear",
    "onednn_available",
    "resolve_cpu_gemm",
]

CPU_GEMMS = ("auto", "default", "onednn")  # values of EPITENSOR_CPU_GEMM

# The five factor groups, in the order they are concatenated into the MLP input.
COMPONENTS = ("celltype", "assay", "genome_25bp", "genome_250bp", "genome_5kbp")
SCALE_250BP = 10
SCALE_5KBP = 200


def _uniform_embedding(n_rows: int, n_factors: int, sparse: bool) -> nn.Embedding:
    embedding = nn.Embedding(n_rows, n_factors, sparse=sparse)
    nn.init.uniform_(embedding.weight, -0.5, 0.5)
    return embedding


def _project_rows(
    embedding: nn.Embedding, weight: torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """``embedding(index) @ weight.T``, through the projected table when it is smaller.

    Parameters
    ----------
    embedding : nn.Embedding
        Table of shape ``(n_rows, n_factors)``.
    weight : torch.Tensor, shape=(n_nodes, n_factors)
    index : torch.Tensor, shape=(batch,), int64

    Returns
    -------
    torch.Tensor, shape=(batch, n_nodes)
    """
    if embedding.num_embeddings <= index.shape[0] and not embedding.sparse:
        # F.embedding, not ``table[index]``: the same values, but its backward sums the
        # batch into the few rows in one pass, where indexing's backward (index_put_
        # with accumulate) cost more than the batch's GEMMs at 2 x 256
        return F.embedding(index, embedding.weight @ weight.T)
    return embedding(index) @ weight.T


def resolve_cpu_gemm(device, precision: str) -> str:
    """How training and inference multiply in fp32 on a CPU: ``"default"`` (torch's MKL) or ``"onednn"``.

    ``EPITENSOR_CPU_GEMM`` (``auto``, ``default`` or ``onednn``) decides; unset
    means ``auto``: oneDNN on x86 CPUs not made by Intel, where the build has it.
    MKL, torch's fp32 product, recognises the vendor and on AMD takes its own
    AVX2 code path even on CPUs with AVX-512: there oneDNN ran the paper-size
    products at twice MKL's rate (AVX-512 AMD EPYC) and a little faster with
    both capped to AVX2, and the fused bias and ReLU save passes over memory
    (README, "Training speed"). On Intel CPUs MKL stays (not measured here).
    bf16 autocast and other devices keep torch's own kernels (their bf16
    products are oneDNN's already).

    Parameters
    ----------
    device : torch.device
        Where the model trains or predicts.
    precision : str
        The resolved precision, ``"fp32"`` or ``"bf16"``.

    Returns
    -------
    str
        ``"onednn"`` or ``"default"``.
    """
    choice = os.environ.get("EPITENSOR_CPU_GEMM", "auto").strip().lower() or "auto"
    if choice not in CPU_GEMMS:
        raise EpitensorError(
            f"invalid EPITENSOR_CPU_GEMM: got {choice!r}, expected one of {list(CPU_GEMMS)}"
        )
    if device.type != "cpu" or precision != "fp32" or choice == "default":
        return "default"
    if not onednn_available():
        if choice == "onednn":
            raise EpitensorError(
                "EPITENSOR_CPU_GEMM=onednn, but this torch build has no oneDNN linear "
                "operator; unset the variable (or set it to default)"
            )
        return "default"
    if choice == "onednn":
        return "onednn"
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return "onednn" if x86 and cpu_vendor() not in ("", "GenuineIntel") else "default"


def onednn_available() -> bool:
    """Whether this torch build can run :func:`onednn_linear` (oneDNN on a CPU)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(
            torch.ops.mkldnn, "_linear_pointwise"
        )
    except (AttributeError, RuntimeError):  # a private operator: may move between releases
        return False


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t`` if row-major or a transposed row-major matrix, else a row-major copy.

    oneDNN falls back to a reference kernel, hundreds of times slower, for other
    strides, such as a column slice of the first layer's weight; a transposed
    weight it takes as it is, a transposed input it copies.
    """
    return t if t.is_contiguous() or t.T.is_contiguous() else t.contiguous()


def onednn_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False
) -> torch.Tensor:
    """``x @ weight.T + bias``, ReLU'd if ``relu``, by oneDNN (bias and ReLU fused; no autograd)."""
    post = "relu" if relu else "none"
    return torch.ops.mkldnn._linear_pointwise(_plain(x), _plain(weight), bias, post, [], "")


class _OneDnnLinear(torch.autograd.Function):
    """``relu(x @ weight.T + bias + add)`` and its gradients, each product by oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias, add, relu):
        x, weight = _plain(x), _plain(weight)
        if add is None:
            y = onednn_forward(x, weight, bias, relu)
        else:
            y = torch.ops.mkldnn._linear_pointwise.binary(x, add.contiguous(), weight, bias, "add")
            if relu:
                y.relu_()
        ctx.relu, ctx.has_bias = relu, bias is not None
        ctx.save_for_backward(x, weight, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        grad = _plain(grad)
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        need = ctx.needs_input_grad
        grad_w = None
        if need[1]:
            # oneDNN copies grad.T to row-major first (a batch x outputs copy, freed
            # before grad_x is made: hence this order); for a narrow input (the 110
            # genome factors) MKL's product, which takes the transpose as it is, was faster
            grad_w = onednn_forward(grad.T, x.T) if x.shape[1] >= 512 else grad.T @ x
        grad_x = onednn_forward(grad, weight.T) if need[0] else None
        grad_b = grad.sum(0) if ctx.has_bias and need[2] else None
        grad_add = grad if need[3] else None
        return grad_x, grad_w, grad_b, grad_add, None


def onednn_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    add: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """``x @ weight.T + bias + add``, ReLU'd if ``relu``, by oneDNN, differentiable (fp32, CPU).

    The forward product fuses the bias, ``add`` and the ReLU; the backward's
    products run in oneDNN too. Torch's default fp32 CPU product is MKL's, which
    on AMD CPUs takes its AVX2 code path even where AVX-512 exists; oneDNN uses
    what the CPU has (about twice MKL's rate on an AVX-512 AMD EPYC).

    Parameters
    ----------
    x : torch.Tensor, shape=(batch, n_in), float32
    weight : torch.Tensor, shape=(n_out, n_in), float32
    bias : torch.Tensor, shape=(n_out,), optional
        Default None: no bias.
    add : torch.Tensor, shape=(batch, n_out), optional
        Added before the ReLU. Default None.
    relu : bool
        Default False.

    Returns
    -------
    torch.Tensor, shape=(batch, n_out), float32
    """
    return _OneDnnLinear.apply(x, weight, bias, add, relu)


_SIZES = ModuleConfig()  # the defaults, declared once in hyperparams.py


class GenomeFactors(nn.Module):
    """Multi-scale genome factors of one axis (a chromosome or a region layout).

    Position ``i`` uses row ``i`` of the 25-bp table, row ``i // 10`` of the
    250-bp table and row ``i // 200`` of the 5-kbp table.

    Parameters
    ----------
    n_positions : int
        Number of 25-bp positions on the axis.
    n_25bp_factors, n_250bp_factors, n_5kbp_factors : int
        Factors per scale. Defaults 25, 40, 45 (the paper's).
    sparse : bool
        Sparse gradients, so an optimiser step costs what a batch touches.
        Default True.
    n_average_rows : int
        Rows of the buffer ``average`` (``(n_average_rows, n_positions)``,
        float16: each assay's average activity, see :mod:`epitensor.nn.average`),
        saved with the factors. Default 0: no such buffer.
    """

    def __init__(
        self,
        n_positions: int,
        n_25bp_factors: int = _SIZES.n_25bp_factors,
        n_250bp_factors: int = _SIZES.n_250bp_factors,
        n_5kbp_factors: int = _SIZES.n_5kbp_factors,
        sparse: bool = True,
        n_average_rows: int = 0,
    ) -> None:
        super().__init__()
        self.n_positions = int(n_positions)
        self.emb_25bp = _uniform_embedding(self.n_positions, n_25bp_factors, sparse)
        self.emb_250bp = _uniform_embedding(
            math.ceil(self.n_positions / SCALE_250BP), n_250bp_factors, sparse
        )
        self.emb_5kbp = _uniform_embedding(
            math.ceil(self.n_positions / SCALE_5KBP), n_5kbp_factors, sparse
        )
        if n_average_rows:
            average = torch.zeros(n_average_rows, self.n_positions, dtype=torch.float16)
            self.register_buffer("average", average)

    @property
    def n_factors(self) -> int:
        """Total factors per position (110 for the paper's sizes)."""
        return (
            self.emb_25bp.embedding_dim + self.emb_250bp.embedding_dim + self.emb_5kbp.embedding_dim
        )

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Concatenated multi-scale factors.

        Parameters
        ----------
        positions : torch.Tensor, shape=(batch,), int64
            Positions on the axis.

        Returns
        -------
        torch.Tensor, shape=(batch, n_25bp + n_250bp + n_5kbp)
        """
        return torch.cat(self.parts(positions), dim=1)

    def parts(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The 25-bp, 250-bp and 5-kbp factors of ``positions``, each ``(batch, n_scale)``."""
        return (
            self.emb_25bp(positions),
            self.emb_250bp(torch.div(positions, SCALE_250BP, rounding_mode="floor")),
            self.emb_5kbp(torch.div(positions, SCALE_5KBP, rounding_mode="floor")),
        )


class AvocadoModule(nn.Module):
    """Multi-scale deep tensor factorization: embeddings concatenated into an MLP.

    Parameters
    ----------
    n_celltypes, n_assays : int
        Rows of the cell type and assay embeddings.
    axis_lengths : dict of str to int
        Positions per genome axis; one :class:`GenomeFactors` is built for each.
        Axes can be added or swapped later through ``module.genome``.
    n_celltype_factors, n_assay_factors : int
        Defaults 32 and 256 (the paper's).
    n_25bp_factors, n_250bp_factors, n_5kbp_factors : int
        Defaults 25, 40, 45 (the paper's).
    n_layers, n_nodes : int
        Hidden ReLU layers and their width. Defaults 2 and 2048 (the paper's).
    dropout : float
        Dropout after each hidden layer. Default 0.
    sparse : bool
        Sparse gradients for the genome tables. Default True.
    average : {"none", "blend", "residual"}
        Use of each assay's average activity (:mod:`epitensor.nn.average`).
        Default ``"none"``. Otherwise the module holds the buffer
        ``average_count`` (training cell types per assay) and every axis's
        genome factors the buffer ``average``.
    average_weight : float
        The network's weight of ``"blend"``. Default 0.5.

    Attributes
    ----------
    gemm : {"default", "onednn"}
        How :meth:`forward` multiplies on a CPU in fp32: torch's default
        product, or :func:`onednn_linear` (bias and ReLU fused). Not a
        hyperparameter and not saved: the training plan sets it around its
        forward passes (:func:`resolve_cpu_gemm`). Default
        ``"default"``.
    """

    def __init__(
        self,
        n_celltypes: int,
        n_assays: int,
        axis_lengths: dict[str, int],
        n_celltype_factors: int = _SIZES.n_celltype_factors,
        n_assay_factors: int = _SIZES.n_assay_factors,
        n_25bp_factors: int = _SIZES.n_25bp_factors,
        n_250bp_factors: int = _SIZES.n_250bp_factors,
        n_5kbp_factors: int = _SIZES.n_5kbp_factors,
        n_layers: int = _SIZES.n_layers,
        n_nodes: int = _SIZES.n_nodes,
        dropout: float = _SIZES.dropout,
        sparse: bool = True,
        average: str = _SIZES.average,
        average_weight: float = _SIZES.average_weight,
    ) -> None:
        super().__init__()
        self.gemm = "default"
        self.average = average
        self.average_weight = float(average_weight)
        if average != "none":
            self.register_buffer("average_count", torch.zeros(n_assays))
        self.genome_sizes = (n_25bp_factors, n_250bp_factors, n_5kbp_factors)
        self.sparse = sparse
        self.celltype_embedding = _uniform_embedding(n_celltypes, n_celltype_factors, False)
        self.assay_embedding = _uniform_embedding(n_assays, n_assay_factors, False)
        self.genome = nn.ModuleDict(
            {axis: self.new_genome_factors(length) for axis, length in axis_lengths.items()}
        )
        n_in = n_celltype_factors + n_assay_factors + sum(self.genome_sizes)
        layers: list[nn.Module] = []
        for _ in range(n_layers):
            layers += [nn.Linear(n_in, n_nodes), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            n_in = n_nodes
        layers.append(nn.Linear(n_in, 1))
        self.network = nn.Sequential(*layers)
        for layer in self.network:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def parts_to(self, device: torch.device | str, axes: Sequence[str] = ()) -> AvocadoModule:
        """Move the network, the cell type and assay factors and only ``axes``' genome factors.

        ``module.to(device)`` would also move every other genome axis (the whole
        genome for a stage-2 model), which prediction on one axis never reads.
        """
        for name, child in self.named_children():
            if name != "genome":
                child.to(device)
        for axis in axes:
            self.genome[axis].to(device)
        for name, buffer in self.named_buffers(recurse=False):  # average_count
            setattr(self, name, buffer.to(device))
        return self

    def new_genome_factors(self, n_positions: int) -> GenomeFactors:
        """A freshly initialised :class:`GenomeFactors` with this module's sizes."""
        rows = self.assay_embedding.num_embeddings if self.average != "none" else 0
        return GenomeFactors(n_positions, *self.genome_sizes, sparse=self.sparse,
                             n_average_rows=rows)  # fmt: skip

    def average_term(
        self, table: GenomeFactors, assays: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """The average term :func:`epitensor.nn.average.combine` adds to the network's output.

        Parameters
        ----------
        table : GenomeFactors
            The axis's factors, holding its ``average`` buffer.
        assays : torch.Tensor, int64
            Assay rows, broadcastable against ``positions`` (``(batch,)`` with
            ``(batch,)``, or ``(n_tracks, 1)`` with ``(n_positions,)``).
        positions : torch.Tensor, int64
            Axis positions.

        Returns
        -------
        torch.Tensor, the broadcast shape, float32, arcsinh
            The assay's average; in ``"residual"`` 0 for an assay with a single
            training cell type (no leave-one-out average existed in training).
        """
        average = table.average[assays, positions].float()
        if self.average == "residual":
            average = average * (self.average_count[assays] >= 2)
        return average

    def with_average(
        self, net: torch.Tensor, table: GenomeFactors, assays: torch.Tensor,
        positions: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """The prediction: the network's output ``net`` combined with the average term.

        Shapes as in :meth:`average_term`; the identity when ``average`` is ``"none"``.
        """
        if self.average == "none":
            return net
        from epitensor.nn.average import combine

        term = self.average_term(table, assays, positions)
        return combine(net.float(), term, self.average, self.average_weight)

    @property
    def component_sizes(self) -> dict[str, int]:
        """Number of input features of each component, in concatenation order."""
        return dict(
            zip(
                COMPONENTS,
                (
                    self.celltype_embedding.embedding_dim,
                    self.assay_embedding.embedding_dim,
                    *self.genome_sizes,
                ),
            )
        )

    def features(
        self, celltypes: torch.Tensor, assays: torch.Tensor, positions: torch.Tensor, axis: str
    ) -> torch.Tensor:
        """The concatenated input of the MLP.

        Parameters
        ----------
        celltypes, assays, positions : torch.Tensor, shape=(batch,), int64
            Indices into the cell type, assay and ``axis`` genome tables.
        axis : str
            Genome axis of ``positions``.

        Returns
        -------
        torch.Tensor, shape=(batch, n_features)
            Cell type, assay, 25-bp, 250-bp and 5-kbp factors, concatenated.
        """
        return torch.cat(
            [
                self.celltype_embedding(celltypes),
                self.assay_embedding(assays),
                *self.genome[axis].parts(positions),
            ],
            dim=1,
        )

    def forward(
        self, celltypes: torch.Tensor, assays: torch.Tensor, positions: torch.Tensor, axis: str
    ) -> torch.Tensor:
        """Predicted signal.

        Parameters
        ----------
        celltypes, assays, positions : torch.Tensor, shape=(batch,), int64
            Indices into the cell type, assay and ``axis`` genome tables.
        axis : str
            Genome axis of ``positions``.

        Returns
        -------
        torch.Tensor, shape=(batch,), arcsinh scale
        """
        # Same value as ``network(features(...))``, but the first layer is split by
        # component: the cell type and assay parts are projected once per table row
        # and gathered, so the first layer costs 110 inputs per sample instead of 398.
        if self.gemm == "onednn":
            return self._forward_onednn(celltypes, assays, positions, axis)
        w_ct, w_as, w_genome = self._first_layer_split()
        pre = (
            _project_rows(self.celltype_embedding, w_ct, celltypes)
            + _project_rows(self.assay_embedding, w_as, assays)
            + self.genome[axis](positions) @ w_genome.T
            + self.network[0].bias
        )
        return self.head(pre)

    def _forward_onednn(
        self, celltypes: torch.Tensor, assays: torch.Tensor, positions: torch.Tensor, axis: str
    ) -> torch.Tensor:
        """:meth:`forward` with every ``Linear`` + ``ReLU`` one :func:`onednn_linear`."""
        w_ct, w_as, w_genome = self._first_layer_split()
        tracks = _project_rows(self.celltype_embedding, w_ct, celltypes)
        tracks = tracks.add_(_project_rows(self.assay_embedding, w_as, assays))
        first = self.network[0]
        x = onednn_linear(self.genome[axis](positions), w_genome, first.bias, tracks, relu=True)
        layers, i = list(self.network), 2  # after the first Linear and its ReLU
        while i < len(layers):
            if isinstance(layers[i], nn.Linear) and isinstance(
                layers[i + 1] if i + 1 < len(layers) else None, nn.ReLU
            ):
                x = onednn_linear(x, layers[i].weight, layers[i].bias, relu=True)
                i += 2
            else:  # dropout, and the last Linear (one output: no product worth moving)
                x = layers[i](x)
                i += 1
        return x.squeeze(-1)

    # fast inference: the first layer is linear in the concatenated factors --------

    def _first_layer_split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = self.network[0]
        n_ct = self.celltype_embedding.embedding_dim
        n_as = self.assay_embedding.embedding_dim
        weight = first.weight
        return weight[:, :n_ct], weight[:, n_ct : n_ct + n_as], weight[:, n_ct + n_as :]

    def track_projection(self, celltypes: torch.Tensor, assays: torch.Tensor) -> torch.Tensor:
        """First-layer pre-activation contributed by cell type, assay and bias.

        Parameters
        ----------
        celltypes, assays : torch.Tensor, shape=(n_tracks,), int64

        Returns
        -------
        torch.Tensor, shape=(n_tracks, n_nodes)
        """
        w_ct, w_as, _ = self._first_layer_split()
        return (
            self.celltype_embedding(celltypes) @ w_ct.T
            + self.assay_embedding(assays) @ w_as.T
            + self.network[0].bias
        )

    def genome_projection(self, positions: torch.Tensor, axis: str) -> torch.Tensor:
        """First-layer pre-activation contributed by the genome factors.

        Parameters
        ----------
        positions : torch.Tensor, shape=(batch,), int64
        axis : str

        Returns
        -------
        torch.Tensor, shape=(batch, n_nodes)
        """
        _, _, w_genome = self._first_layer_split()
        return self.genome[axis](positions) @ w_genome.T

    def head(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """The network after the first linear layer.

        Parameters
        ----------
        pre_activation : torch.Tensor, shape=(..., n_nodes)
            Output of the first linear layer.

        Returns
        -------
        torch.Tensor, shape=(...,), arcsinh scale
        """
        return self.network[1:](pre_activation).squeeze(-1)

    def forward_tracks(
        self, celltypes: torch.Tensor, assays: torch.Tensor, positions: torch.Tensor, axis: str
    ) -> torch.Tensor:
        """Predict many tracks at many positions, reusing the genome projection.

        Parameters
        ----------
        celltypes, assays : torch.Tensor, shape=(n_tracks,), int64
        positions : torch.Tensor, shape=(n_positions,), int64
        axis : str

        Returns
        -------
        torch.Tensor, shape=(n_tracks, n_positions), arcsinh scale
        """
        genome = self.genome_projection(positions, axis)
        tracks = self.track_projection(celltypes, assays)
        return self.head(tracks[:, None, :] + genome[None, :, :])
