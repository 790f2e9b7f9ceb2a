"""Face tracks across video frames, with landmarks smoothed over time by One-Euro filters.

    tracker = FaceTracker()
    for frame in video:
        faces = tracker.update(detect(frame), t=frame_time_in_seconds)   # smoothed faces

Association: detections are matched to live tracks by box IoU with the Hungarian algorithm
(`scipy.optimize.linear_sum_assignment`); a match needs IoU >= `iou_threshold`. Unmatched
detections start new tracks. A track that misses detections keeps being reported with its last
smoothed face for up to `max_missed` frames (so a one-frame detector miss does not make the
restored face blink), then it ends.

Smoothing: each track runs one One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) over its
5 landmarks and 2 box corners, time-stamped by the frame's time in seconds, so it adapts to the
frame rate and to variable frame rates. The filter's cutoff rises with speed:
`cutoff = min_cutoff + beta * speed`: still faces are smoothed hard (no jitter), moving faces
lightly (little lag). Speed is measured in face sizes per second (mean landmark speed divided by
the face's size), so `beta` means the same for a 100-px and a 1000-px face. All points of a face
share one cutoff, so the smoothed landmarks are a weighted mean of past landmark sets and keep
the face's shape.

Defaults (min_cutoff 0.5 Hz, beta 4, d_cutoff 1 Hz), from a synthetic check (7 points with
0.7 px noise on a 100-px face at 25 fps): frame-to-frame jitter of a still face drops to 0.12x,
and a face moving at 0.5 / 2 face sizes per second trails by 1.4 / 2.3 px. beta 1 instead
trails by 3.2 / 5.9 px for about the same jitter (0.09x); min_cutoff 1 Hz halves the smoothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmrface.pipeline.detect import Face


def _alpha(cutoff: float, dt: float) -> float:
    """Smoothing factor of a first-order low-pass filter with `cutoff` Hz over a step of dt s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over a point set (N x 2), one adaptive cutoff shared by all points.

    Args:
        min_cutoff: cutoff (Hz) when still; lower = smoother, more lag at low speed.
        beta: how fast the cutoff rises with speed (per face size per second).
        d_cutoff: cutoff (Hz) of the low-pass filter on the speed estimate.
    """

    def __init__(self, min_cutoff: float = 0.5, beta: float = 4.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("One-Euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None  # last filtered value
        self.dx: np.ndarray | None = None  # last filtered derivative (units per second)
        self.t: float | None = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filter sample `x` (N x 2) taken at time `t` seconds; `scale` (> 0) normalises speed."""
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return self.x.copy()
        dt = float(t) - self.t
        if dt <= 0:  # repeated timestamp: nothing new to learn
            return self.x.copy()
        dx = (x - self.x) / dt
        self.dx = self.dx + _alpha(self.d_cutoff, dt) * (dx - self.dx)
        speed = float(np.linalg.norm(self.dx, axis=-1).mean()) / max(float(scale), 1e-6)
        cutoff = self.min_cutoff + self.beta * speed
        self.x = self.x + _alpha(cutoff, dt) * (x - self.x)
        self.t = float(t)
        return self.x.copy()


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N x 4) and b (M x 4), (x0, y0, x1, y1) -> N x M."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _points(face: Face) -> np.ndarray:
    """Face -> 7 x 2: five landmarks, then the box's two corners."""
    return np.concatenate([np.asarray(face.landmarks, np.float64).reshape(5, 2),
                           np.asarray(face.box, np.float64).reshape(2, 2)])


def _face_size(face: Face) -> float:
    x0, y0, x1, y1 = np.asarray(face.box, np.float64)
    return math.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0))


@dataclass
class Track:
    """One face followed over time."""

    id: int
    filter: OneEuroFilter
    raw: Face  # last detection (or flow estimate) that updated the track
    face: Face  # last smoothed face, what is restored
    missed: int = 0  # frames since the last update
    hits: int = 1


class FaceTracker:
    """Associate per-frame detections into tracks and smooth each track's landmarks.

    Args:
        iou_threshold: least box IoU between a track's last box and a detection to match them.
        max_missed: frames a track survives without a detection, reported with its last
            smoothed face; 0 ends a track at its first miss.
        min_cutoff, beta, d_cutoff: One-Euro parameters (see `OneEuroFilter`).
        smoothing: False keeps association and miss-bridging but reports raw landmarks.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, min_cutoff: float = 0.5,
                 beta: float = 4.0, d_cutoff: float = 1.0, smoothing: bool = True):
        OneEuroFilter(min_cutoff, beta, d_cutoff)  # validate once, here
        self.iou_threshold, self.max_missed = float(iou_threshold), max(0, int(max_missed))
        self.filter_args = (min_cutoff, beta, d_cutoff)
        self.smoothing = smoothing
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, detections: Sequence[Face], t: float) -> list[Face]:
        """Feed one frame's detections (taken at `t` seconds); -> the faces to restore in it,
        one per live track, ordered by track id (oldest first)."""
        detections = list(detections)
        matches, new = self._associate(detections)
        for track in self.tracks:
            det = matches.get(track.id)
            if det is None:
                track.missed += 1
                continue
            track.raw, track.missed, track.hits = det, 0, track.hits + 1
            track.face = self._smooth(track, det, t)
        self.tracks = [tr for tr in self.tracks if tr.missed <= self.max_missed]
        for det in new:
            track = Track(self._next_id, OneEuroFilter(*self.filter_args), det, det)
            track.face = self._smooth(track, det, t)
            self.tracks.append(track)
            self._next_id += 1
        return [tr.face for tr in self.tracks]

    def _associate(self, detections: list[Face]) -> tuple[dict[int, Face], list[Face]]:
        """-> ({track id: detection}, unmatched detections)."""
        if not self.tracks or not detections:
            return {}, detections
        from scipy.optimize import linear_sum_assignment

        iou = box_iou(np.stack([tr.raw.box for tr in self.tracks]), np.stack([d.box for d in detections]))
        rows, cols = linear_sum_assignment(-iou)
        matches, used = {}, set()
        for r, c in zip(rows, cols):
            if iou[r, c] >= self.iou_threshold:
                matches[self.tracks[r].id] = detections[c]
                used.add(c)
        return matches, [d for k, d in enumerate(detections) if k not in used]

    def _smooth(self, track: Track, det: Face, t: float) -> Face:
        if not self.smoothing:
            return det
        pts = track.filter(_points(det), t, scale=_face_size(det))
        box = pts[5:].reshape(4)
        return Face(box.astype(np.float32), pts[:5].astype(np.float32), det.score)

    def propagate(self, prev_grey: np.ndarray, grey: np.ndarray, t: float) -> list[Face]:
        """A frame without detection: move each live track by optical flow from the previous frame.

        The 5 landmarks are followed with pyramidal Lucas-Kanade (forward and backward; a point
        whose round trip misses by more than 1 px is unreliable). The track's points move by the
        median shift of the reliable ones (a face moves as a whole between two frames); a track
        with fewer than 3 reliable points counts as a miss. -> the faces to restore, as `update`.
        """
        import cv2

        for track in self.tracks:
            if track.missed:  # already coasting: nothing reliable to follow
                track.missed += 1
                continue
            p0 = np.asarray(track.raw.landmarks, np.float32).reshape(-1, 1, 2)
            win = int(np.clip(_face_size(track.raw) / 6, 9, 41)) | 1
            p1, ok1, _ = cv2.calcOpticalFlowPyrLK(prev_grey, grey, p0, None, winSize=(win, win), maxLevel=3)
            p2, ok2, _ = cv2.calcOpticalFlowPyrLK(grey, prev_grey, p1, None, winSize=(win, win), maxLevel=3)
            good = (ok1.ravel() == 1) & (ok2.ravel() == 1) & (np.linalg.norm((p2 - p0).reshape(-1, 2), axis=1) < 1.0)
            if good.sum() < 3:
                track.missed += 1
                continue
            shift = np.median((p1 - p0).reshape(-1, 2)[good], axis=0).astype(np.float64)
            raw = Face(np.asarray(track.raw.box, np.float64) + np.tile(shift, 2),
                       np.asarray(track.raw.landmarks, np.float64) + shift, track.raw.score)
            track.raw = raw
            track.face = self._smooth(track, raw, t)
        self.tracks = [tr for tr in self.tracks if tr.missed <= self.max_missed]
        return [tr.face for tr in self.tracks]
