"""Head pose (yaw, pitch, roll in degrees) estimated from the 68 dlib/iBUG landmarks.

    yaw, pitch, roll = head_pose(points68, image_size)

Six landmarks (nose tip 30, chin 8, outer eye corners 36 and 45, mouth corners 48 and 54) are
matched to a generic 3D face by `cv2.solvePnP` with a pinhole camera whose focal length is the
image width. The model is an average face, so the angles are estimates (a few degrees off on
real faces): good enough to sort faces into pose buckets (`yaw_bucket`), not to measure a pose.
Axes follow OpenCV's camera (x right, y down, z away from the camera); yaw > 0 means the face is
turned towards the image's left (checked on real portraits), and a mirror image flips its sign.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: 68-point indices used, and a generic face in the same order (millimetre-like units, nose tip at
#: the origin; image y grows downwards, z grows away from the camera).
POSE_POINTS = (30, 8, 36, 45, 48, 54)
FACE_MODEL = np.array([
    [0.0, 0.0, 0.0],  # nose tip
    [0.0, 330.0, 65.0],  # chin
    [-225.0, -170.0, 135.0],  # outer corner of the eye on the image's left
    [225.0, -170.0, 135.0],  # outer corner of the other eye
    [-150.0, 150.0, 125.0],  # mouth corner on the image's left
    [150.0, 150.0, 125.0],  # the other mouth corner
])
YAW_BUCKETS = ((0.0, 15.0, "<15°"), (15.0, 30.0, "15-30°"), (30.0, 180.0, ">30°"))


def camera(size: float) -> np.ndarray:
    return np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float64)


def euler_degrees(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw about y, pitch about x, roll about z) of R = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    r = np.asarray(rotation, np.float64)
    yaw = math.asin(float(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = math.atan2(r[2, 1], r[2, 2])
    roll = math.atan2(r[1, 0], r[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def head_pose(points68: np.ndarray, image_size: float) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 68 landmarks (68 x 2 pixels) of an image `image_size` wide."""
    pts = np.asarray(points68, np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected 68 x 2 landmarks, got {pts.shape}")
    image_points = pts[list(POSE_POINTS)]
    ok, rvec, _ = cv2.solvePnP(FACE_MODEL, image_points, camera(image_size), np.zeros(4),
                               flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no pose for these landmarks")
    rotation, _ = cv2.Rodrigues(rvec)
    return euler_degrees(rotation)


def yaw_bucket(yaw: float) -> str:
    """The |yaw| bucket label: "<15°", "15-30°" or ">30°"."""
    a = abs(yaw)
    for lo, hi, label in YAW_BUCKETS:
        if lo <= a < hi:
            return label
    return YAW_BUCKETS[-1][2]
