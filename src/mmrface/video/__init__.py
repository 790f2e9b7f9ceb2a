"""Video restoration: streamed decode/encode with audio kept (io), face tracks with smoothed
landmarks (track), and the frame loop (restore_video). Needs PyAV (`pip install 'mmrface[video]'`),
imported only when a video is actually opened."""

from mmrface.video.io import VIDEO_EXTENSIONS, is_video
from mmrface.video.restore_video import VideoSummary, restore_video

__all__ = ["VIDEO_EXTENSIONS", "VideoSummary", "is_video", "restore_video"]
