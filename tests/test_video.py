"""Video restoration: streamed decode/encode with audio kept, face tracking, One-Euro smoothing.

The must-show test makes a short clip from the bundled astronaut photo drifting by a known
sub-pixel amount per frame, with a sine audio track, restores it with and without temporal
smoothing (tiny random-weight model, real MTCNN detector), and compares how much the restored
face changes from frame to frame once the known drift is undone.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from mmrface.config import load_config  # noqa: E402
from mmrface.errors import UserError  # noqa: E402
from mmrface.models import build_model  # noqa: E402
from mmrface.pipeline.detect import Face  # noqa: E402
from mmrface.pipeline.restorer import Restorer  # noqa: E402
from mmrface.video import is_video, restore_video  # noqa: E402
from mmrface.video.track import FaceTracker, OneEuroFilter, box_iou  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FPS = 25
FRAMES = 24
DRIFT = (0.5, 0.3)  # pixels per frame, x and y
WINDOW = (128, 16, 192)  # x0, y0, side: the window of the 512-px photo around the face


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The tiny model's convolutions are far slower with 2 threads on a shared, loaded 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def drifted_frame(photo: np.ndarray, i: int) -> np.ndarray:
    """Frame i: the photo shifted by i * DRIFT (bilinear), seen through a fixed window."""
    x0, y0, side = WINDOW
    m = np.float32([[1, 0, DRIFT[0] * i], [0, 1, DRIFT[1] * i]])
    moved = cv2.warpAffine(photo, m, (photo.shape[1], photo.shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(moved[y0:y0 + side, x0:x0 + side])


def make_clip(path: Path, frames: int = FRAMES, audio: str | None = "aac", size_fix=None) -> None:
    """An H.264 clip of the drifting astronaut at FPS, with a 440 Hz sine when `audio` names a codec."""
    photo = cv2.imread(str(ROOT / "assets/photos/astronaut.png"))[:, :, ::-1]
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=FPS)
    first = drifted_frame(photo, 0) if size_fix is None else size_fix(drifted_frame(photo, 0))
    video.width, video.height, video.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
    video.codec_context.options = {"crf": "23"}
    sound = None
    if audio:
        sound = out.add_stream(audio, rate=16000)
        sound.layout = "mono"
    for i in range(frames):
        rgb = drifted_frame(photo, i) if size_fix is None else size_fix(drifted_frame(photo, i))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    if sound is not None:
        t = np.arange(16000 * frames // FPS) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        aframe = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        aframe.sample_rate, aframe.pts = 16000, 0
        for packet in list(sound.encode(aframe)) + list(sound.encode(None)):
            out.mux(packet)
    out.close()


def read_video(path: Path):
    """-> (frames as RGB arrays, video stream facts, audio packet payloads or None)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        facts = {"rate": v.average_rate, "codec": v.codec_context.name, "frames_header": v.frames,
                 "size": (v.codec_context.width, v.codec_context.height)}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = None
        if c.streams.audio:
            facts["audio_codec"] = c.streams.audio[0].codec_context.name
            audio = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    return frames, facts, audio


def tiny_restorer(upscale: float = 1) -> Restorer:
    return Restorer(model=build_model(load_config("tiny").model), device="cpu", upscale=upscale)


def frame_to_frame_change(frames: list[np.ndarray], box: np.ndarray, upscale: float = 1) -> float:
    """Mean absolute change of the face region between consecutive frames after undoing the drift."""
    h, w = frames[0].shape[:2]
    x0, y0, x1, y1 = (np.asarray(box) * upscale).round().astype(int)
    steady = []
    for i, f in enumerate(frames):
        back = np.float32([[1, 0, -DRIFT[0] * i * upscale], [0, 1, -DRIFT[1] * i * upscale]])
        steady.append(cv2.warpAffine(f, back, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)[y0:y1, x0:x1])
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(steady[:-1], steady[1:])]))


def test_video_keeps_timing_and_audio_and_smoothing_reduces_jitter(tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    make_clip(src)
    in_frames, in_facts, in_audio = read_video(src)
    assert len(in_frames) == FRAMES and in_audio

    restorer = tiny_restorer()
    smooth = restore_video(src, tmp_path / "out" / "smooth.mp4", restorer, smoothing=True, progress=False)
    plain = restore_video(src, tmp_path / "out" / "plain.mp4", restorer, smoothing=False, progress=False)

    for summary, name in ((smooth, "smooth"), (plain, "plain")):
        frames, facts, audio = read_video(tmp_path / "out" / f"{name}.mp4")
        assert summary.frames == len(frames) == FRAMES
        assert facts["rate"] == in_facts["rate"] == Fraction(FPS)
        assert facts["size"] == in_facts["size"] and facts["codec"] == "h264"
        assert summary.face_counts[1] >= FRAMES - 2  # the one face, found (nearly) everywhere
        # audio remuxed, not re-encoded: the very same packets
        assert facts["audio_codec"] == "aac" and audio == in_audio
        assert summary.audio == "aac copied"
    assert not list((tmp_path / "out").glob(".*partial*"))  # temporary files renamed away

    # the face region: where the face is in frame 0 (box from the window's coordinates), padded
    box = np.array([45.0, 35.0, 150.0, 165.0])
    changes = {}
    for name in ("smooth", "plain"):
        frames, _, _ = read_video(tmp_path / "out" / f"{name}.mp4")
        changes[name] = frame_to_frame_change(frames, box)
    changes["input"] = frame_to_frame_change(in_frames, box)
    with capsys.disabled():
        print(f"\nface frame-to-frame change after undoing the drift (mean abs, 0-255): "
              f"smoothed {changes['smooth']:.3f}, independent {changes['plain']:.3f}, "
              f"input clip {changes['input']:.3f}; {smooth.report()}")
    assert changes["smooth"] < changes["plain"]


def test_odd_size_is_padded_and_clip_without_audio_works(tmp_path):
    src = tmp_path / "odd.mkv"
    make_clip(src, frames=4, audio=None, size_fix=lambda rgb: np.ascontiguousarray(rgb[:94, :94]))
    summary = restore_video(src, tmp_path / "odd_out.mkv", tiny_restorer(upscale=1.5), progress=False)
    frames, facts, audio = read_video(tmp_path / "odd_out.mkv")
    # 94 x 1.5 = 141 -> padded to 142 (4:2:0 needs even sizes)
    assert len(frames) == 4 and facts["size"] == summary.size == (142, 142) and audio is None
    assert summary.padded and summary.audio == "none"
    # the padding repeats the last column/row: it equals its neighbour
    assert np.abs(frames[0][:, 141].astype(int) - frames[0][:, 140]).mean() < 3


def test_audio_is_reencoded_when_the_container_refuses_it(tmp_path):
    src = tmp_path / "pcm.mkv"
    make_clip(src, frames=3, audio="pcm_s16le")
    summary = restore_video(src, tmp_path / "pcm.webm", tiny_restorer(), progress=False)
    frames, facts, audio = read_video(tmp_path / "pcm.webm")
    assert len(frames) == 3 and facts["codec"] == "vp9"
    assert summary.audio.startswith("pcm_s16le re-encoded to") and facts["audio_codec"] in ("opus", "vorbis")
    assert audio


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 50, bytes(range(256)) * 40])
def test_bad_input_is_one_line_user_error(tmp_path, content):
    src = tmp_path / "broken.mp4"
    src.write_bytes(content)
    with pytest.raises(UserError) as info:
        restore_video(src, tmp_path / "out.mp4", tiny_restorer(), progress=False)
    assert "broken.mp4" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*partial*"))


def test_refuses_to_overwrite_input_and_bad_names(tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"x")
    with pytest.raises(UserError, match="overwrite the input"):
        restore_video(src, src, tiny_restorer(), progress=False)
    with pytest.raises(UserError, match="not a video file name"):
        restore_video(src, tmp_path / "clip.png", tiny_restorer(), progress=False)
    with pytest.raises(UserError, match="no such file"):
        restore_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", tiny_restorer(), progress=False)
    assert src.read_bytes() == b"x"


def test_is_video():
    assert is_video("a/clip.MP4") and is_video("x.mkv") and is_video("x.webm") and is_video("x.mov")
    assert not is_video("photo.png") and not is_video("anim.gif") and not is_video("noext")


def test_one_euro_filter_smooths_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuroFilter()  # the defaults
    truth = np.zeros((5, 2))
    noisy_out, noisy_in = [], []
    for i in range(100):
        x = truth + rng.normal(0, 1.0, truth.shape)
        noisy_in.append(x)
        noisy_out.append(f(x, i / 25, scale=100))
    jitter_in = np.abs(np.diff(noisy_in[20:], axis=0)).mean()
    jitter_out = np.abs(np.diff(noisy_out[20:], axis=0)).mean()
    assert jitter_out < 0.4 * jitter_in
    # a face that jumps by a whole face size gets there fast (the cutoff rises with speed)
    for i in range(100, 110):
        out = f(np.full((5, 2), 100.0), i / 25, scale=100)
    assert np.abs(out - 100).max() < 10
    # the same timestamp twice changes nothing
    assert np.array_equal(f(np.zeros((5, 2)), 109 / 25, scale=100), out)


def test_one_euro_filter_is_frame_rate_aware():
    """The same motion sampled at 25 and at 50 fps is smoothed to about the same curve."""
    outs = {}
    for fps in (25, 50):
        f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
        ts = np.arange(0, 1.0, 1 / fps)
        outs[fps] = [float(f(np.full((1, 2), 10.0 * (t > 0)), t)[0, 0]) for t in ts]
    # value at t = 0.4 s from both
    assert abs(outs[25][10] - outs[50][20]) < 0.35


def face(x: float, y: float, s: float = 40) -> Face:
    lm = np.array([[x + 0.3 * s, y + 0.4 * s], [x + 0.7 * s, y + 0.4 * s], [x + 0.5 * s, y + 0.6 * s],
                   [x + 0.35 * s, y + 0.8 * s], [x + 0.65 * s, y + 0.8 * s]], np.float32)
    return Face(np.array([x, y, x + s, y + s], np.float32), lm, 0.99)


def test_tracker_associates_bridges_misses_and_ends_tracks():
    tracker = FaceTracker(max_missed=2)
    out = tracker.update([face(0, 0), face(200, 0)], 0.0)
    ids = [t.id for t in tracker.tracks]
    assert len(out) == 2
    # detections come in the other order and slightly moved: same tracks, same order out
    out = tracker.update([face(202, 1), face(1, 1)], 0.04)
    assert [t.id for t in tracker.tracks] == ids and out[0].box[0] < 100 < out[1].box[0]
    # the second face is missed for two frames: still reported, at its last smoothed place
    last = out[1].landmarks.copy()
    for t in (0.08, 0.12):
        out = tracker.update([face(2, 2)], t)
        assert len(out) == 2 and np.array_equal(out[1].landmarks, last)
    out = tracker.update([face(3, 3)], 0.16)  # third miss: the track ends
    assert len(out) == 1 and [t.id for t in tracker.tracks] == ids[:1]
    # a far-away detection starts a new track
    out = tracker.update([face(3, 3), face(400, 300)], 0.2)
    assert len(out) == 2 and tracker.tracks[-1].id == max(ids) + 1
    assert box_iou(face(0, 0).box[None], face(20, 0).box[None])[0, 0] == pytest.approx(1 / 3)


def test_detect_every_k_frames_follows_the_face_by_flow(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=8, audio=None)
    seen = []

    class Spy(Restorer):
        def restore(self, rgb, **kw):
            seen.append(kw["faces"])
            return super().restore(rgb, **kw)

    spy = Spy(model=build_model(load_config("tiny").model), device="cpu", upscale=1)
    summary = restore_video(src, tmp_path / "out.mp4", spy, detect_every=4, progress=False)
    assert summary.frames == 8 and all(len(f) == 1 for f in seen)
    # eye positions follow the known drift on the flow frames too (within 1.5 px of frame 0 + drift)
    eye0 = seen[0][0].landmarks[0]
    for i, faces in enumerate(seen):
        expected = eye0 + np.array(DRIFT) * i
        assert np.abs(faces[0].landmarks[0] - expected).max() < 1.5, (i, faces[0].landmarks[0], expected)


def test_variable_frame_rate_timestamps_and_rotation_are_kept(tmp_path):
    """Irregular frame times come back unchanged; a 90-degree display rotation is applied."""
    src = tmp_path / "vfr.mkv"
    out = av.open(str(src), "w")
    video = out.add_stream("libx264", rate=25)
    video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
    video.set_display_rotation(90)  # counter-clockwise, as phones store portrait clips
    video.codec_context.time_base = video.time_base = Fraction(1, 25)
    pts = [0, 1, 3, 4, 9, 10]
    rgb = np.zeros((32, 64, 3), np.uint8)
    rgb[:, :8] = 255  # a white stripe on the left edge: at the bottom once turned upright
    for p in pts:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = p, Fraction(1, 25)
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    out.close()

    summary = restore_video(src, tmp_path / "vfr_out.mkv", tiny_restorer(), progress=False)
    with av.open(str(tmp_path / "vfr_out.mkv")) as c:
        frames = list(c.decode(video=0))
    assert summary.frames == len(frames) == len(pts) and summary.size == (32, 64)
    assert [round(f.time * 25) for f in frames] == pts
    first = frames[0].to_ndarray(format="rgb24")
    assert frames[0].rotation == 0 and first.shape == (64, 32, 3)
    assert first[-6:].mean() > 200 and first[:-10].mean() < 30


def test_truncated_clip_is_one_line_user_error(tmp_path):
    good = tmp_path / "good.mp4"
    make_clip(good, frames=4, audio=None)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # mp4 index (moov) is at the end
    with pytest.raises(UserError) as info:
        restore_video(cut, tmp_path / "out.mp4", tiny_restorer(), progress=False)
    assert str(info.value).startswith(str(cut)) and "\n" not in str(info.value)
    assert not (tmp_path / "out.mp4").exists()


def test_restore_cli_handles_a_video_in_a_folder(tmp_path, capsys):
    from mmrface.cli import main
    from mmrface.config import load_config
    from mmrface.models import build_model
    from mmrface.weights import save_weights

    cfg = load_config("tiny")
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, build_model(cfg.model).state_dict(), cfg.to_dict())
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "clip.mp4", frames=6)
    out = tmp_path / "out"
    code = main(["restore", "-i", str(src), "-o", str(out), "-s", "1", "--weights", str(weights), "-q",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    frames, _ = read_video(out / "clip.mp4")[:2]
    assert len(frames) == 6
    assert "1 written" in err
