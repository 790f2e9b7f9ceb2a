"""MTCNN face detector (Zhang et al. 2016): three small cascaded CNNs, written for mmrface.

P-Net scans an image pyramid for 12x12 face candidates, R-Net re-scores and refines them at
24x24, O-Net gives the final box, score and five landmarks at 48x48. The networks here are our
own `nn.Module`s whose parameter names match the state dicts that the `facenet-pytorch` wheel
ships in `facenet_pytorch/data/{pnet,rnet,onet}.pt`; we load only those weight files (with
`weights_only=True`) and never import facenet-pytorch's Python code (it pulls in torchvision).

Coordinates are 0-based pixels; boxes are half-open `[x0, x1) x [y0, y1)`; landmarks are, in
order, the eye on the image's left, the other eye, the nose tip, the left and right mouth corner.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch
from torch import nn



_MISSING = ("the mtcnn detector needs the weight files of facenet-pytorch: "
            "pip install --no-deps facenet-pytorch==2.6.0")


def weight_file(name: str) -> str:
    """facenet-pytorch's `{name}.pt` (pnet, rnet, onet), checked against its sha256 (`mmrface.thirdparty`)."""
    from mmrface.thirdparty import verified_file

    return str(verified_file("facenet_pytorch", f"data/{name}.pt", missing=_MISSING))


class PNet(nn.Module):
    """Proposal net, fully convolutional: 12x12 window -> face probability + box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets (dx0, dy0, dx1, dy1) / box size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        prob = torch.softmax(self.conv4_1(x), dim=1)[:, 1]  # N x h x w
        return prob, self.conv4_2(x)  # N x 4 x h x w


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    """Flatten N x C x H x W in (W, H, C) order: the converted Caffe weights expect it."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops -> face probability + box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # N x 28 x 11 x 11
        x = self.pool2(self.prelu2(self.conv2(x)))  # N x 48 x 4 x 4
        x = self.prelu3(self.conv3(x))  # N x 64 x 3 x 3
        x = self.prelu4(self.dense4(_flatten_transposed(x)))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops -> face probability, box offsets, 5 landmarks (x0..x4, y0..y4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # N x 32 x 23 x 23
        x = self.pool2(self.prelu2(self.conv2(x)))  # N x 64 x 10 x 10
        x = self.pool3(self.prelu3(self.conv3(x)))  # N x 64 x 4 x 4
        x = self.prelu4(self.conv4(x))  # N x 128 x 3 x 3
        x = self.prelu5(self.dense5(_flatten_transposed(x)))
        prob = torch.softmax(self.dense6_1(x), dim=1)[:, 1]
        return prob, self.dense6_2(x), self.dense6_3(x)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression. boxes: N x 4 (x0, y0, x1, y1). Returns kept indices.

    `mode="union"` compares intersection / union, `mode="min"` intersection / smaller area.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = boxes.T
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        if mode == "min":
            overlap = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-9)
        else:
            overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes (N x 4) to squares around the same centre."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the nets' box offsets (fractions of the box size) to boxes N x 4."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * size


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB -> float N x 3 x H x W scaled as the nets were trained."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return ((x - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut integer boxes (N x 4) out of the image, zero-padded outside it, resized to size²."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64)):
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue  # degenerate box: an all-black crop, which the nets reject
        patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interp)
    return out


class MTCNN:
    """The three-stage cascade. Weights load lazily, once, on the first `detect` call."""

    def __init__(
        self,
        min_face: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        batch: int = 256,
    ) -> None:
        self.min_face, self.thresholds, self.factor, self.batch = min_face, thresholds, factor, batch
        self._nets: tuple[PNet, RNet, ONet] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[PNet, RNet, ONet]:
        with self._lock:
            if self._nets is None:
                nets = (PNet(), RNet(), ONet())
                for name, net in zip(("pnet", "rnet", "onet"), nets):
                    net.load_state_dict(torch.load(weight_file(name), map_location="cpu", weights_only=True))
                    net.eval().to(memory_format=torch.channels_last)  # ~3x faster on CPU
                self._nets = nets
        return self._nets

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rgb uint8 HxWx3 -> boxes N x 4, scores N, landmarks N x 5 x 2 (float64)."""
        pnet, rnet, onet = self._load()
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        boxes, scores = self._propose(pnet, rgb)
        if not len(boxes):
            return empty
        # stage 2: refine the squared proposals at 24x24
        boxes = np.round(_square(boxes))
        prob, offsets = self._run(rnet, _crops(rgb, boxes, 24))
        keep = prob > self.thresholds[1]
        boxes, scores, offsets = boxes[keep], prob[keep], offsets[keep]
        keep = nms(boxes, scores, 0.7)
        boxes = _regress(boxes[keep], offsets[keep])
        if not len(boxes):
            return empty
        # stage 3: final boxes and landmarks at 48x48
        boxes = np.round(_square(boxes))
        prob, offsets, points = self._run(onet, _crops(rgb, boxes, 48))
        keep = prob > self.thresholds[2]
        boxes, scores, offsets, points = boxes[keep], prob[keep], offsets[keep], points[keep]
        size = (boxes[:, 2:4] - boxes[:, 0:2])[:, None, :]  # N x 1 x 2
        landmarks = np.stack([points[:, :5], points[:, 5:]], axis=2) * size + boxes[:, None, :2]
        boxes = _regress(boxes, offsets)
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep], scores[keep], landmarks[keep]

    def _scales(self, h: int, w: int) -> list[float]:
        scale, side, scales = 12.0 / self.min_face, min(h, w) * 12.0 / self.min_face, []
        while side >= 12:
            scales.append(scale)
            scale, side = scale * self.factor, side * self.factor
        return scales

    def _propose(self, pnet: PNet, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: run P-Net over the pyramid, keep windows above threshold, merge by NMS."""
        h, w = rgb.shape[:2]
        all_boxes, all_scores, all_offsets = [], [], []
        img = rgb
        for scale in self._scales(h, w):
            hs, ws = int(h * scale + 1), int(w * scale + 1)
            # each level from the previous one: reading the full image every time costs more
            img = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA)
            prob, reg = pnet(_to_tensor(img[None]))
            prob, reg = prob[0].numpy(), reg[0].numpy()  # h' x w', 4 x h' x w'
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if not len(ys):
                continue
            cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64) * 2
            boxes = (cells + np.array([0, 0, 12, 12])) / scale  # 12-px window, stride 2
            scores, offsets = prob[ys, xs], reg[:, ys, xs].T.astype(np.float64)
            keep = nms(boxes, scores, 0.5)
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_offsets.append(offsets[keep])
        if not all_boxes:
            return np.zeros((0, 4)), np.zeros(0)
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        keep = nms(boxes, scores, 0.7)
        return _regress(boxes[keep], np.concatenate(all_offsets)[keep]), scores[keep]

    def _run(self, net: nn.Module, crops: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run R-Net or O-Net over crops in batches; returns float64 numpy outputs."""
        parts = [net(_to_tensor(crops[i : i + self.batch])) for i in range(0, len(crops), self.batch)]
        return tuple(
            torch.cat([p[j] for p in parts]).double().numpy() for j in range(len(parts[0]))
        )
