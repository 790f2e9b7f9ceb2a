"""Restore every face of a video, frame by frame, with tracked and smoothed alignment.

    summary = restore_video("clip.mp4", "out/clip.mp4", Restorer("mmrface-small"))
    print(summary.report())

The loop: decode one frame -> detect faces -> update the face tracks (landmarks smoothed over
time, see track.py) -> `Restorer.restore(frame, faces=tracked)` -> encode the frame. Audio
packets are copied to the output as they come (see io.py). Only one frame is in memory at a
time, so long clips need no more memory than short ones.

Detection runs on every frame by default: the default detector costs about 0.1-0.2 s on a
1000-px frame, a small part of restoring even one face on a CPU. `detect_every=k` detects on
every k-th frame only and follows the faces by optical flow in between (for GPUs, where the
network is fast and detection dominates); new faces then appear only on detection frames.
Faces are searched and kept by the Restorer's `DetectionOptions` (backend, min face size,
only-center / largest face; `pipeline/detection.py`) without its fallback: MMOD costs seconds
per frame on a CPU, and a face the primary misses for a few frames is bridged by the tracker.

The output is written to a hidden temporary file next to `dst` and renamed when complete, so an
interrupted run leaves no half-written video; the input is never overwritten.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from mmrface.errors import UserError
from mmrface.pipeline.detect import Face
from mmrface.pipeline.detection import DetectionOptions, find_faces, select_faces
from mmrface.pipeline.paste import output_size
from mmrface.video.io import DecodedFrame, VideoSink, VideoSource, first_line, import_av, is_video
from mmrface.video.track import FaceTracker


@dataclass
class VideoSummary:
    """What `restore_video` did."""

    src: str
    dst: str
    frames: int = 0
    expected_frames: int | None = None  # the input's frame count from its header or duration
    short_below: float = 0.8  # report "ends early" below this share of expected_frames
    faces: int = 0  # restored faces, summed over frames
    face_counts: Counter = field(default_factory=Counter)  # faces in a frame -> number of frames
    seconds: float = 0.0
    size: tuple[int, int] = (0, 0)  # output width, height
    padded: bool = False  # one pixel added to reach even width/height
    rate: Fraction | None = None
    video_codec: str = ""
    audio: str = "none"
    corrupt_packets: int = 0  # damaged video packets skipped

    @property
    def fps(self) -> float:
        """Frames restored per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_faces(self) -> float:
        return self.faces / self.frames if self.frames else 0.0

    def report(self) -> str:
        no_face = self.face_counts.get(0, 0)
        rate = f"{float(self.rate):.3f}".rstrip("0").rstrip(".") if self.rate else "?"
        short = self.expected_frames is not None and self.frames < self.short_below * self.expected_frames
        return (f"{self.src}: {self.frames} frames"
                + (f" (of about {self.expected_frames}: the file ends early or is damaged)" if short else "")
                + f" at {rate} fps -> {self.dst} "
                f"({self.size[0]}x{self.size[1]}{', padded to even size' if self.padded else ''}, "
                f"{self.video_codec}, audio: {self.audio}); {self.faces} faces restored "
                f"({self.mean_faces:.2f} per frame, {no_face} frame(s) without a face); "
                f"{self.seconds:.1f} s, {self.fps:.2f} frames/s"
                + (f"; {self.corrupt_packets} damaged packet(s) skipped" if self.corrupt_packets else ""))


def restore_video(src: str | os.PathLike, dst: str | os.PathLike, restorer, *, fidelity: float | None = None,
                  only_center_face: bool | None = None, largest_face: bool | None = None,
                  min_size: float | None = None,
                  smoothing: bool = True, min_cutoff: float = 0.5, beta: float = 4.0, d_cutoff: float = 1.0,
                  max_missed: int = 5, iou_threshold: float = 0.3, detect_every: int = 1,
                  codec: str | None = None, crf: int | None = None, preset: str = "medium",
                  progress: bool = True) -> VideoSummary:
    """Restore the faces of video `src` into video `dst` (container from dst's extension).

    Args:
        restorer: a `mmrface.pipeline.restorer.Restorer` (network, detection options, upscale).
        fidelity: fidelity weight w for this video; None = the restorer's default.
        only_center_face, largest_face: restore one face per frame, chosen among the tracks;
            min_size: ignore detections smaller than this (pixels, short side of the box).
            None = the restorer's detection options.
        smoothing: track faces and smooth their landmarks over time (One-Euro); False restores
            each frame on its own detections, as for a photo.
        min_cutoff, beta, d_cutoff: One-Euro filter parameters (Hz, per face size per second, Hz).
        max_missed: frames a face stays restored at its last place when the detector misses it.
        iou_threshold: least box overlap for a detection to continue a track.
        detect_every: detect faces every k frames, follow them by optical flow in between.
        codec, crf, preset: video encoder (default libx264, VP9 for .webm), quality, speed.
        progress: show a progress bar over frames on stderr.
    """
    av = import_av()
    src, dst = Path(src), Path(dst)
    if not is_video(dst):
        raise UserError(f"{dst}: not a video file name; use one of .mp4 .m4v .mov .mkv .webm .avi")
    if dst.exists() and src.exists() and os.path.samefile(src, dst) or dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the output would overwrite the input; choose another output")
    if detect_every < 1:
        raise UserError(f"detect_every must be >= 1, got {detect_every}")
    tracker = FaceTracker(iou_threshold, max_missed, min_cutoff, beta, d_cutoff) if smoothing else None
    detection = restorer.detection_for(only_center_face, largest_face, min_size).replace(fallback=None)
    faces_of = _FaceFinder(detection, tracker, detect_every)

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.partial{dst.suffix}")
    summary, t0 = VideoSummary(str(src), str(dst)), time.perf_counter()
    sink: VideoSink | None = None
    early_audio = []  # audio packets demuxed before the first frame fixed the output size
    try:
        with VideoSource(src) as source, _progress_bar(source, src, progress) as bar:
            summary.expected_frames = source.frame_count
            summary.short_below = 1.0 if source.frame_count_exact else 0.8  # estimates are rough
            for item in source.items():
                if not isinstance(item, DecodedFrame):  # an audio packet
                    if sink is None:
                        early_audio.append(item)
                    else:
                        sink.write_audio(item)
                    continue
                if sink is None:
                    h, w = output_size(*item.rgb.shape[:2], restorer.upscale)
                    sink = VideoSink(tmp, source, w, h, codec=codec, crf=crf, preset=preset)
                    summary.size, summary.padded, summary.rate = (sink.width, sink.height), sink.padded, source.rate
                    summary.video_codec, summary.audio = sink.codec_name, sink.audio_description
                    for packet in early_audio:
                        sink.write_audio(packet)
                    early_audio.clear()
                faces = faces_of(item.rgb, item.time)
                result = restorer.restore(item.rgb, fidelity=fidelity, faces=faces)
                sink.write(result.image, item.pts)
                summary.frames += 1
                summary.faces += len(faces)
                summary.face_counts[len(faces)] += 1
                bar.update(1)
            summary.corrupt_packets = source.corrupt_packets
            if sink is None:
                damaged = f" ({source.corrupt_packets} damaged packet(s))" if source.corrupt_packets else ""
                raise UserError(f"{src}: the video stream holds no decodable frame{damaged}")
            sink.close()
            sink = None
        os.replace(tmp, dst)
    except av.FFmpegError as exc:
        raise UserError(f"{src}: writing {dst.name} failed ({first_line(exc)})") from None
    finally:
        if sink is not None:
            sink.abort()
        if tmp.exists():
            tmp.unlink()
    summary.seconds = time.perf_counter() - t0
    return summary


class _FaceFinder:
    """The faces to restore in each frame, in order: raw detections when there is no tracker,
    else tracked and smoothed faces (detected every `detect_every` frames, optical flow between)."""

    def __init__(self, detection: DetectionOptions, tracker: FaceTracker | None, detect_every: int):
        self.tracker, self.detect_every = tracker, detect_every
        # detections keep every face over min_size; one face is chosen among the tracks afterwards
        self.search, self.choose = detection.replace(only_center=False, largest=False), detection
        self.index, self.prev_grey = 0, None

    def __call__(self, rgb: np.ndarray, t: float) -> list[Face]:
        if self.tracker is None:
            faces = find_faces(rgb, self.search)
        else:
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if self.detect_every > 1 else None
            if self.prev_grey is not None and self.index % self.detect_every:
                faces = self.tracker.propagate(self.prev_grey, grey, t)
            else:
                faces = self.tracker.update(find_faces(rgb, self.search), t)
            self.prev_grey = grey
        self.index += 1
        return select_faces(faces, rgb.shape, self.choose.replace(min_size=0))


def _progress_bar(source: VideoSource, src: Path, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=source.frame_count, unit="frame", desc=src.name, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)
