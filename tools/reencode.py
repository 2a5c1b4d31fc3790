"""Re-encoding a video for training: a smaller short side and frequent keyframes, so that decoding a clip is
cheap (docs/performance.md). Used by `python -m tools.prepare --reencode` and measured by `tools.bench --data`."""

import os
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

from data import VideoError

ENCODER = {"preset": "fast", "crf": "23"}  # x264, as bench.py's generated videos
SHORT_SIDE = 320  # VideoMAE's Kinetics copies
GOP = 12  # keyframe interval, frames: a seek lands at most 11 frames before a clip (a 16 x 4 clip spans 61)


def scaled_size(width, height, short_side):
    """(width, height) with the short side at min(short_side, its own) and the aspect kept, both even (4:2:0)."""
    scale = min(short_side / min(width, height), 1.0)
    return tuple(max(2, round(side * scale) // 2 * 2) for side in (width, height))


def _transcode(source, container, short_side, gop):
    """Every frame of `source`'s first video stream, scaled, into a new libx264 stream of `container`
    at the source's frame rate, timestamps renumbered (frame i at i / rate): -> frames written."""
    with av.open(str(source)) as src:
        if not src.streams.video:
            raise VideoError(source, "no video stream")
        stream = src.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        out, reformatter, count = None, VideoReformatter(), 0
        for frame in src.decode(stream):
            if out is None:  # the first frame gives the size even where the header has none
                out = container.add_stream("libx264", rate=rate)
                out.width, out.height = scaled_size(frame.width, frame.height, short_side)
                out.pix_fmt, out.options = "yuv420p", {**ENCODER, "g": str(gop)}
                out.codec_context.thread_count = 1  # one process per core already
            frame = reformatter.reformat(frame, out.width, out.height, "yuv420p")
            frame.pts, frame.pict_type = None, av.video.frame.PictureType.NONE
            container.mux(out.encode(frame))
            count += 1
        if out is not None:
            container.mux(out.encode())
        return count


def reencode(source, output, short_side=SHORT_SIDE, gop=GOP):
    """source -> H.264 MP4 at `output` (see `_transcode`); written to <name>.partial and renamed when complete,
    so `output` is either absent or whole, and a torn file left by a killed run has no video extension: no
    folder scan (`data.find_videos`) takes it for a video. Raises on a video that does not decode."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        with av.open(str(partial), "w", format="mp4") as container:
            if _transcode(source, container, short_side, gop) == 0:
                raise VideoError(source, "no frame could be decoded")
    except BaseException:  # an error or an interrupt: leave nothing half-written behind
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
