"""`OrtNetwork`: an exported restorer graph run by ONNX Runtime, with the torch network's call signature.

    net = OrtNetwork("mmrface-512.onnx")          # CPU, one intra-op thread per physical core
    restored = net(lq, w=0.5)                     # lq (N, 3, S, S) in [-1, 1] -> (N, 3, S, S) tensor
    Restorer(network=net)                         # or Restorer(onnx="mmrface-512.onnx")

Graphs exported with a fixed batch B are fed in chunks of B, the last one padded. The session uses
ORT_ENABLE_ALL graph optimisation, sequential execution (the network is one long chain, so
parallel execution only adds scheduling overhead), one intra-op thread per physical core, and no
spin-waiting between ops by default: the ops are milliseconds long, so spinning saves nothing and,
on a shared CPU, takes cycles from the other processes (and from our own descheduled threads).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mmrface.errors import UserError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def physical_cores() -> int:
    """Physical cores usable by this process (hyper-threads do not help the convolutions)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cores, current = set(), {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("physical id", "core id"):
                current[key] = value.strip()
            elif not key and current:
                cores.add((current.get("physical id"), current.get("core id")))
                current = {}
        if current:
            cores.add((current.get("physical id"), current.get("core id")))
        if cores:
            return max(1, min(usable, len(cores)))
    except OSError:
        pass
    return max(1, usable)


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


class OrtNetwork:
    """ONNX Runtime session over an `mmrface export` graph; `size`, `metadata`, `__call__(x, w)`.

    Args:
        path: the .onnx file.
        threads: intra-op threads (default: physical cores).
        providers: "cpu" (default), "cuda", or a list of ONNX Runtime provider names; CUDA falls back
            to CPU with a clear error if this onnxruntime build has no CUDA provider.
        optimized_path: also write the graph after ORT's optimisations there (inspection, cache).
        spin: let idle intra-op threads spin-wait for work (ONNX Runtime's default; off here).
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: str | list[str] | None = None,
                 optimized_path: str | Path | None = None, spin: bool = False):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX model {self.path} does not exist (write one with `mmrface export`)")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.threads = int(threads) if threads else physical_cores()
        if self.threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if optimized_path:
            opts.optimized_model_filepath = str(optimized_path)
        self.providers = self._providers(providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile ...: one line, naming the file
            raise UserError(f"{self.path}: not a loadable ONNX model ({_short(exc)})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"lq", "w"} or len(self.session.get_outputs()) != 1:
            raise UserError(f"{self.path}: not an mmrface restorer graph (inputs {sorted(inputs)}, "
                            f"expected ['lq', 'w']; export one with `mmrface export`)")
        shape = inputs["lq"].shape  # [N or 'batch', 3, S, S]
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]) or shape[2] != shape[3]:
            raise UserError(f"{self.path}: input 'lq' has shape {shape}, expected (N, 3, S, S) with a fixed S")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k[len("mmrface."):]: v for k, v in meta.items() if k.startswith("mmrface.")}
        self.size = int(shape[2])
        self.batch: int | None = shape[0] if isinstance(shape[0], int) else None  # None = dynamic
        self.noise = self.metadata.get("noise", "unknown")
        if "size" in self.metadata and int(self.metadata["size"]) != self.size:
            raise UserError(f"{self.path}: metadata says size {self.metadata['size']}, graph input is {self.size}")

    @staticmethod
    def _providers(providers: str | list[str] | None, available: list[str]) -> list[str]:
        if providers is None or providers == "cpu":
            return [PROVIDERS["cpu"]]
        if isinstance(providers, str):
            if providers not in PROVIDERS:
                raise UserError(f"providers must be 'cpu', 'cuda' or a list of ONNX Runtime names, got {providers!r}")
            providers = [PROVIDERS[providers], PROVIDERS["cpu"]]
        missing = [p for p in providers if p not in available]
        if missing:
            raise UserError(f"ONNX Runtime provider(s) {missing} not available in this build (available: {available})")
        return list(providers)

    def run(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Raw call: x (N, 3, S, S) float32, w (N,) float32 -> (N, 3, S, S) float32; N must fit the graph."""
        return self.session.run(None, {"lq": x, "w": w})[0]

    def __call__(self, x: torch.Tensor | np.ndarray, w: float | np.ndarray = 1.0) -> torch.Tensor:
        """x (N, 3, S, S) in [-1, 1] and fidelity w (float or (N,)) -> restored (N, 3, S, S) float tensor."""
        arr = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1:] != (3, self.size, self.size):
            raise UserError(f"expected input (N, 3, {self.size}, {self.size}), got {tuple(arr.shape)}")
        n = arr.shape[0]
        ws = np.broadcast_to(np.asarray(w, np.float32), (n,)).copy()
        if self.batch is None or n == self.batch:
            return torch.from_numpy(self.run(arr, ws))
        out = []
        for i in range(0, n, self.batch):  # fixed-batch graph: chunks of B, the last one padded
            xs, wc = arr[i:i + self.batch], ws[i:i + self.batch]
            k = len(xs)
            if k < self.batch:
                xs = np.concatenate([xs, np.repeat(xs[-1:], self.batch - k, 0)])
                wc = np.concatenate([wc, np.repeat(wc[-1:], self.batch - k)])
            out.append(self.run(xs, wc)[:k])
        return torch.from_numpy(np.concatenate(out))

    def __repr__(self) -> str:
        return (f"OrtNetwork({str(self.path)!r}, size={self.size}, batch={self.batch or 'dynamic'}, "
                f"threads={self.threads}, providers={self.providers})")


def default_providers(device) -> str:
    """"cuda" when `device` (torch.device or str) is a CUDA device and this onnxruntime has CUDA, else "cpu"."""
    import onnxruntime as ort

    wants_cuda = str(getattr(device, "type", device)).startswith("cuda")
    return "cuda" if wants_cuda and PROVIDERS["cuda"] in ort.get_available_providers() else "cpu"
