"""Export the restorer network to ONNX: `lq` (N, 3, S, S) and fidelity `w` (N,) in, `restored` out.

    report = export_onnx(model, "mmrface.onnx", weights_meta=meta, dynamic_batch=True)
    print(report.summary())

The fidelity `w` is a graph input (one value per face), never baked in. Noise is fixed: `const`
(the model's stored noise maps become constants) or `zero` (no noise). The StyleGAN2 modulated
convs are exported in their non-fused form (modulate the input, one shared constant weight,
demodulate the output): the batch stays a free axis and ONNX Runtime can pre-pack the weights,
which the grouped per-sample-weight form prevents. The tracer is torch's TorchScript exporter
(`dynamo=False`): the dynamo exporter needs `onnxscript`, which we do not depend on. The metadata_props record what the graph is:
mmrface version, weights sha256, size, opset, noise mode, batch, modconv form, arch.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from mmrface.errors import UserError

INPUT_NAMES = ("lq", "w")
OUTPUT_NAME = "restored"
NOISE_CHOICES = ("const", "zero")
META_PREFIX = "mmrface."


class _ExportWrapper(nn.Module):
    """forward(lq, w) with the noise mode fixed: the two-input function the graph computes."""

    def __init__(self, model: nn.Module, noise_mode: str):
        super().__init__()
        self.model, self.noise_mode = model, noise_mode

    def forward(self, lq: Tensor, w: Tensor) -> Tensor:  # (N, 3, S, S), (N,) -> (N, 3, S, S)
        return self.model(lq, w=w, noise_mode=self.noise_mode)


@dataclass
class ExportReport:
    path: Path
    size: int
    opset: int
    noise: str
    batch: str  # "dynamic" or the fixed batch size
    bytes: int
    max_abs_diff: float  # onnxruntime vs eager torch on a random input, both fidelities tested
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"wrote {self.path} ({self.bytes / 2**20:.1f} MB, {self.size}px, opset {self.opset}, "
                f"batch {self.batch}, noise {self.noise}); max |onnxruntime - torch| = {self.max_abs_diff:.2e} "
                f"({self.seconds:.1f} s)")


def _has_noise_buffers(model: nn.Module) -> bool:
    return any(".noises." in name or name.startswith("noises.") for name, _ in model.named_buffers())


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = 17, dynamic_batch: bool = False,
                batch: int = 1, noise: str = "const", fused_modconv: bool = False,
                metadata: dict[str, str] | None = None, check: bool = True, seed: int = 0) -> ExportReport:
    """Trace `model` (MMRFaceNet / GFPGANv1Clean: forward(lq, w, noise_mode=...)) into an ONNX file.

    Args:
        dynamic_batch: free batch axis (needs the non-fused modconv); else the graph has `batch`.
        noise: "const" (stored noise maps, as `Restorer` uses them) or "zero".
        fused_modconv: export the grouped per-sample-weight modconv (fixed batch only; slower in ORT).
        metadata: extra metadata_props (e.g. weights sha256), stored with the `mmrface.` prefix.
        check: run `onnx.checker`, load the file with onnxruntime and compare with eager torch.
    """
    import onnx

    from mmrface import __version__
    from mmrface.models.stylegan2 import ModulatedConv2d, set_fused_modconv

    if noise not in NOISE_CHOICES:
        raise UserError(f"noise must be one of {NOISE_CHOICES}, got {noise!r}")
    if noise == "const" and not _has_noise_buffers(model):
        raise UserError("this model has no stored noise maps; export with --noise zero")
    if dynamic_batch and fused_modconv:
        raise UserError("--dynamic-batch needs the non-fused modconv (the fused one folds the batch into conv groups)")
    if not 7 <= opset <= 23:
        raise UserError(f"opset must be in 7..23, got {opset}")
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    size = int(model.size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    t0 = time.perf_counter()

    n = 2 if dynamic_batch else batch  # trace with 2 so that no size-1 axis gets specialised
    gen = torch.Generator().manual_seed(seed)
    lq = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    w = torch.full((n,), 0.5)
    wrapper = _ExportWrapper(model, noise)
    convs = [m for m in model.modules() if isinstance(m, ModulatedConv2d)]
    previous = [m.fused for m in convs]
    set_fused_modconv(model, fused_modconv)
    try:
        axes = {k: {0: "batch"} for k in (*INPUT_NAMES, OUTPUT_NAME)} if dynamic_batch else None
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input shape check: constant by design
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, chosen on purpose
            torch.onnx.export(wrapper, (lq, w), str(path), dynamo=False, input_names=list(INPUT_NAMES),
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamic_axes=axes,
                              do_constant_folding=True)
    except Exception as exc:  # the exporter's errors are long; keep the first line
        raise UserError(f"ONNX export failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    finally:
        for m, fused in zip(convs, previous):  # the caller's model is left as it was
            m.fused = fused

    props = {"version": __version__, "size": str(size), "opset": str(opset), "noise": noise,
             "batch": "dynamic" if dynamic_batch else str(batch),
             "modconv": "fused" if fused_modconv else "unfused",
             "arch": type(model).__name__, "inputs": "lq (N,3,S,S) float32 in [-1,1]; w (N,) float32 fidelity",
             **{k: str(v) for k, v in (metadata or {}).items()}}
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    proto.producer_name, proto.doc_string = "mmrface", f"mmrface {__version__} restorer network"
    onnx.save(proto, str(path))

    diff = float("nan")
    if check:
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:
            path.unlink(missing_ok=True)
            raise UserError(f"{path}: onnx.checker rejected the exported graph: {str(exc).splitlines()[0]}") from exc
        diff = parity(model, path, noise, batches=(1, 2) if dynamic_batch else (batch,), seed=seed + 1)
    return ExportReport(path, size, opset, noise, props["batch"], path.stat().st_size, diff,
                        time.perf_counter() - t0, {META_PREFIX + k: v for k, v in props.items()})


@torch.no_grad()
def parity(model: nn.Module, path: str | Path, noise: str, batches: tuple[int, ...] = (1,),
           fidelities: tuple[float, ...] = (0.3, 1.0), seed: int = 1) -> float:
    """Max |onnxruntime - eager torch| over random inputs, each batch size and fidelity given."""
    from mmrface.export.ort_backend import OrtNetwork

    net = OrtNetwork(path)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in batches:
        lq = torch.rand(n, 3, net.size, net.size, generator=gen) * 2 - 1
        for w in fidelities:
            ref = model(lq, w=torch.full((n,), w), noise_mode=noise)
            worst = max(worst, float((net(lq, w) - ref).abs().max()))
    return worst


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The `mmrface.*` metadata_props of an exported file, without the prefix."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def weights_metadata(meta: dict) -> dict[str, str]:
    """metadata_props describing a weight file's `load_weights` meta (sha256, path, config)."""
    cfg = meta.get("config", {})
    out = {"weights_sha256": str(meta.get("sha256", "unknown")), "weights": str(meta.get("path", "unknown")),
           "config": json.dumps(cfg.get("model", cfg), sort_keys=True)}
    if "default_fidelity" in meta:  # e.g. GFPGAN weights: w = 1 reproduces GFPGAN
        out["default_fidelity"] = str(meta["default_fidelity"])
    return out


def cached_export(model: nn.Module, cache_dir: str | Path, **kwargs) -> Path:
    """Export `model` once per (weights, options) into `cache_dir` and return the file (benchmarks).

    The key hashes the parameters and buffers, so a changed model is never served a stale graph.
    Exported without the parity check (tests/test_onnx.py covers parity); kwargs go to `export_onnx`.
    """
    import hashlib

    h = hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    path = Path(cache_dir) / f"{type(model).__name__}-{model.size}-{h.hexdigest()[:16]}.onnx"
    if not path.is_file():
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(model, tmp, check=False, **kwargs)
        tmp.replace(path)
    return path
