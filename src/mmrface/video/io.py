"""Streamed video decoding and encoding with PyAV (its wheels ship their own ffmpeg).

    with VideoSource(path) as source:
        sink = VideoSink(tmp, source, width, height)
        for item in source.items():              # demux order, one frame or packet at a time
            if isinstance(item, DecodedFrame): sink.write(item.rgb, item.pts)
            else: sink.write_audio(item)         # an audio packet: copied or re-encoded
        sink.close()

Nothing holds more than one decoded frame; the only buffers are ffmpeg's own (encoder look-ahead
and the muxer's interleaving queue), so memory does not grow with the clip's length.

Time: every output frame keeps its input timestamp (`pts`) in the input stream's time base, and
the encoder is told the stream's average frame rate, so constant and variable frame rate clips
keep their timing exactly. Frames whose stream carries no timestamps get `index / rate`. AVI
output stores only a frame rate, so there the frames are put on the 1/rate grid.

Rotation: phone clips store "rotate by 90" as display metadata. Frames are turned upright here
(what the face detector needs); the output stores the upright pixels and no rotation flag.

Colour: frames are converted to RGB with the input's colour matrix and range, and back to YUV
with the same ones, which the output stream is tagged with.

Audio: the input's best audio stream is copied packet by packet (no re-encoding) when the output
container accepts its codec (checked by writing a header into memory first), else decoded and
re-encoded (AAC, or Opus/Vorbis for WebM). Other streams (subtitles, data, extra audio tracks)
are not carried over.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mmrface.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# libx264 first; mpeg4 (always built into ffmpeg) when a PyAV build lacks it. WebM takes VP9/VP8.
# AVI gets MPEG-4 Part 2 (its native codec): AVI keeps no presentation times, and ffmpeg reads
# H.264-in-AVI one frame late.
_VIDEO_CODECS = {".webm": ("libvpx-vp9", "libvpx"), ".avi": ("mpeg4",)}
_DEFAULT_VIDEO_CODECS = ("libx264", "mpeg4")
_AUDIO_CODECS = {".webm": ("libopus", "opus", "libvorbis", "vorbis")}
_DEFAULT_AUDIO_CODECS = ("aac",)


def is_video(path: str | os.PathLike) -> bool:
    """True for the file extensions `mmrface restore` treats as video (see VIDEO_EXTENSIONS).

    GIF is not among them: animated GIFs are rare as restore inputs and need a palette encoder.
    """
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def import_av():
    try:
        import av
    except ImportError:
        raise UserError("video needs PyAV: pip install 'mmrface[video]'  (or: pip install av)") from None
    return av


def first_line(exc: BaseException) -> str:
    """A short reason for an exception: ffmpeg's message without errno and file name."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class DecodedFrame:
    """One decoded video frame: `rgb` uint8 HxWx3 (upright), `pts` in the source time base,
    `time` in seconds."""

    rgb: np.ndarray
    pts: int
    time: float


class VideoSource:
    """An input video opened for streaming: its first video stream and best audio stream."""

    def __init__(self, path: str | os.PathLike):
        av = import_av()
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise UserError(f"{self.path}: no such file")
        if os.path.isdir(self.path):
            raise UserError(f"{self.path}: is a folder, not a video file")
        try:
            self.container = av.open(self.path, "r")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"{self.path}: not a readable video ({first_line(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise UserError(f"{self.path}: contains no video stream")
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"  # frame + slice threads for the decoder
        self.audio = self.container.streams.best("audio")
        cc = self.video.codec_context
        self.time_base: Fraction = self.video.time_base or Fraction(1, 90000)
        self.rate: Fraction | None = self.video.average_rate or self.video.guessed_rate or None
        self.colour = {"colorspace": cc.colorspace, "color_range": cc.color_range,
                       "color_primaries": cc.color_primaries, "color_trc": cc.color_trc}
        self.frame_count = self._count_frames()
        # AVI is constant frame rate by design and its decoded pts are unreliable with B-frames
        self.constant_rate = self.container.format.name == "avi" and bool(self.rate)
        self.width, self.height = cc.width, cc.height  # coded size before any rotation
        self.corrupt_packets = 0  # damaged video packets skipped while decoding

    def _count_frames(self) -> int | None:
        """Frames in the video stream: the header's count, else duration x rate, else None."""
        self.frame_count_exact = bool(self.video.frames)
        if self.video.frames:
            return int(self.video.frames)
        seconds = None
        if self.video.duration is not None and self.video.time_base is not None:
            seconds = float(self.video.duration * self.video.time_base)
        elif self.container.duration is not None:
            seconds = self.container.duration / 1_000_000
        if seconds is None or not self.rate:
            return None
        return max(1, round(seconds * float(self.rate)))

    def items(self):
        """Yield `DecodedFrame`s and audio `av.Packet`s in the file's order (demux order).

        A video packet the decoder rejects as damaged is skipped and counted in
        `corrupt_packets` (the frames that depend on it may then be missing or smeared); any other
        ffmpeg error ends the run with a `UserError`.
        """
        av = import_av()
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        index, last_pts = 0, None
        default_step = self._default_step()
        try:
            for packet in self.container.demux(streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None and packet.size:  # skip the empty flush packets
                        yield packet
                    continue
                try:
                    frames = packet.decode()
                except av.InvalidDataError:  # a damaged packet: skip it, as ffmpeg does
                    self.corrupt_packets += 1
                    continue
                for frame in frames:
                    pts = index * default_step if frame.pts is None or self.constant_rate else frame.pts
                    if last_pts is not None and pts <= last_pts:  # encoders need strictly rising pts
                        pts = last_pts + 1
                    last_pts = pts
                    rgb = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                    yield DecodedFrame(rgb, int(pts), float(pts * self.time_base))
                    index += 1
        except av.FFmpegError as exc:
            raise UserError(f"{self.path}: decoding failed after {index} frame(s) ({first_line(exc)})") from None

    def _default_step(self) -> int:
        """Time-base ticks per frame, for streams without timestamps."""
        if not self.rate:
            return 1
        return max(1, round(1 / (float(self.rate) * float(self.time_base))))

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _upright(rgb: np.ndarray, rotation: int | float | None) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, multiples of 90) to a frame."""
    k = round((rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size rounded up to even numbers (yuv420p stores chroma at half resolution)."""
    return width + width % 2, height + height % 2


class VideoSink:
    """The output video: frames encoded one at a time, audio copied or re-encoded, then muxed.

    Args:
        path: output file; its extension picks the container.
        source: the input, for its time base, frame rate, colour tags and audio stream.
        width, height: size of the frames to be written; odd sizes are padded by one pixel
            (edge replicated) to even ones, as 4:2:0 video needs.
        codec: video encoder name; None picks libx264 (mpeg4 if missing), VP9 for WebM, mpeg4
            for AVI.
        crf: quality, lower is better: libx264 CRF (default 18), VP9 CRF (31), mpeg4 qscale (3).
        preset: libx264 speed preset.
    """

    def __init__(self, path: str | os.PathLike, source: VideoSource, width: int, height: int,
                 codec: str | None = None, crf: int | None = None, preset: str = "medium"):
        av = import_av()
        self.path = os.fspath(path)
        ext = Path(self.path).suffix.lower()
        self.width, self.height = even_size(width, height)
        self.padded = (self.width, self.height) != (width, height)
        self.source = source
        # AVI has no timestamps, only a frame rate: there frames go on the 1/rate grid (a variable
        # rate cannot be kept). Elsewhere the input's time base and pts are kept as they are.
        self.time_base = 1 / (source.rate or Fraction(25)) if ext == ".avi" else source.time_base
        self._last_pts: int | None = None
        try:
            self.container = av.open(self.path, "w", format=_format_name(ext))
        except (av.FFmpegError, ValueError) as exc:
            raise UserError(f"{self.path}: cannot create the output video ({first_line(exc)})") from None
        try:
            self.video = self._add_video(codec, ext, crf, preset)
            self.audio, self.audio_mode = self._add_audio(ext)
        except BaseException:
            self.container.close()
            raise
        self.frames = 0

    # -- setup -------------------------------------------------------------------------------
    def _add_video(self, codec: str | None, ext: str, crf: int | None, preset: str):
        name = _pick_codec((codec,) if codec else _VIDEO_CODECS.get(ext, _DEFAULT_VIDEO_CODECS), "video")
        rate = self.source.rate or Fraction(25)
        stream = self.container.add_stream(name, rate=rate)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.time_base = self.time_base
        cc = stream.codec_context
        cc.time_base = self.time_base
        for key, value in self.source.colour.items():
            if value is not None:
                setattr(cc, key, value)
        if ext == ".avi":
            cc.max_b_frames = 0  # AVI stores no presentation times: frames must be in display order
        if name == "libx264":
            cc.options = {"crf": str(18 if crf is None else crf), "preset": preset}
        elif name.startswith("libvpx"):
            cc.bit_rate = 0
            cc.options = {"crf": str(31 if crf is None else crf), "b": "0", "deadline": "good",
                          "cpu-used": "4", "row-mt": "1"}
        elif name == "mpeg4":  # fixed quantiser (crf here means qscale, 1 best .. 31)
            q = 3 if crf is None else int(np.clip(crf, 1, 31))
            cc.qscale, cc.global_quality, cc.qmin, cc.qmax = True, q * 118, q, q  # 118 = FF_QP2LAMBDA
        self.codec_name = name
        return stream

    def _add_audio(self, ext: str):
        """-> (output audio stream or None, "copy" | "encode" | "none")."""
        src = self.source.audio
        if src is None:
            return None, "none"
        if _accepts_copy(_format_name(ext), src):
            return self.container.add_stream_from_template(src), "copy"
        name = _pick_codec(_AUDIO_CODECS.get(ext, _DEFAULT_AUDIO_CODECS), "audio")
        stream = self.container.add_stream(name, rate=src.codec_context.sample_rate or 48000)
        if src.codec_context.layout is not None and src.codec_context.layout.nb_channels <= 2:
            stream.layout = src.codec_context.layout.name
        else:
            stream.layout = "stereo"
        return stream, "encode"

    @property
    def audio_description(self) -> str:
        src = self.source.audio
        if self.audio_mode == "none":
            return "none"
        if self.audio_mode == "copy":
            return f"{src.codec_context.name} copied"
        return f"{src.codec_context.name} re-encoded to {self.audio.codec_context.name}"

    # -- writing -----------------------------------------------------------------------------
    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one RGB frame (uint8 HxWx3) shown at `pts` (in the source's time base)."""
        av = import_av()
        h, w = rgb.shape[:2]
        if (w, h) != (self.width, self.height):
            rgb = np.pad(rgb, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        cs, rng = self.source.colour["colorspace"], self.source.colour["color_range"]
        frame = frame.reformat(format="yuv420p", dst_colorspace=cs or None, dst_color_range=rng or None)
        if self.time_base != self.source.time_base:
            pts = round(pts * self.source.time_base / self.time_base)
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1
            self._last_pts = pts
        frame.pts, frame.time_base = pts, self.time_base
        self._mux(self.video.encode(frame))
        self.frames += 1

    def write_audio(self, packet) -> None:
        """Pass one input audio packet on: remuxed as it is, or decoded and re-encoded."""
        if self.audio_mode == "copy":
            packet.stream = self.audio
            self.container.mux(packet)
        elif self.audio_mode == "encode":
            for frame in packet.decode():
                frame.pts = None  # let the encoder's resampler number the samples
                self._mux(self.audio.encode(frame))

    def _mux(self, packets) -> None:
        for p in packets:
            self.container.mux(p)

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        self._mux(self.video.encode(None))
        if self.audio_mode == "encode":
            self._mux(self.audio.encode(None))
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass


def _format_name(ext: str) -> str:
    """ffmpeg muxer name for an output extension."""
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
            ".avi": "avi"}.get(ext) or _bad_extension(ext)


def _bad_extension(ext: str) -> str:
    raise UserError(f"unsupported video output extension {ext!r}; use one of {', '.join(VIDEO_EXTENSIONS)}")


def _pick_codec(names, kind: str) -> str:
    av = import_av()
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError):
            continue
    raise UserError(f"no usable {kind} encoder among {', '.join(names)} in this PyAV build")


def _accepts_copy(format_name: str, stream) -> bool:
    """Whether the muxer takes `stream`'s packets as they are: write a header into memory."""
    av = import_av()
    try:
        with av.open(io.BytesIO(), "w", format=format_name) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False
