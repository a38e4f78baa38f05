"""Series: the collaborative filter across frames against frame by frame, bm4d and the volume NLM.

Each clean image (Set12 gray, Set5 colour, from <data>) becomes a series of
``--frames`` frames of a ``--size`` x ``--size`` view moving 2 pixels down
and 3 right per frame (a camera panning over a still scene; crops, no
wrap-around), noise of each sigma is added (seed = the image's index), rounded
and clipped to 8 bits unless ``--float``, and the series is denoised

* frame by frame with the default method (``nlfilt.denoise_collaborative``
  of each frame; sigma estimated per frame);
* as a series (``nlfilt.denoise_collaborative`` of the stack, sigma the
  median of the frames' estimates; :mod:`nlfilt.series`);
* by bm4d (PyPI ``bm4d``, given the true sigma; the frames as the third
  axis of its volume; a colour series channel by channel in the YCbCr-like
  opponent space would need its own transform, so colour runs bm4d on each
  RGB channel);
* as one volume by the windowed NLM filter (``nlfilt.denoise`` with patch
  (1, 5, 5) and window (15, 11, 11), sigma estimated), gray only.

The table gives the mean PSNR over the frames, the seconds per frame, and
the series method's cost-model estimate against its time; all measured side
by side in one run.

    python benchmarks/video.py --write        # writes benchmarks/results/video.md
    python benchmarks/video.py --sets set12 --sigmas 25 --limit 4 --peers bm4d

``--clip`` measures real video files instead (needs ``nlfilt[video]``): for
the first image of each set, the noisy series (sigma 25, 8-bit) is encoded as
a video file as a camera would leave it (H.264 at qp 0, 4:2:0 chroma, with an
AAC sound track) and ``nlfilt denoise clip.mp4 -o out.mkv`` runs as a user
runs it (a new process, the defaults: a series, sigma estimated, H.264 at
CRF 12), then with ``--lossless`` and with ``--stack frames``; the PSNR is
against the clean series through the same 4:2:0 encode, and the time is the
command's wall time per frame (start-up included).

    python benchmarks/video.py --clip --write   # writes benchmarks/results/video_clip.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy

import nlfilt
from nlfilt.cost import estimate_collaborative_seconds

from harness import DATA, add_noise, load_images, machine, psnr, write

STEP = (2, 3)


def pan(image: numpy.ndarray, frames: int, size: int) -> numpy.ndarray:
    """``frames`` crops of ``size`` x ``size`` (or as large as fit) of ``image``, each moved by ``STEP``."""
    height = min(size, image.shape[0] - STEP[0] * (frames - 1))
    width = min(size, image.shape[1] - STEP[1] * (frames - 1))
    return numpy.stack([image[STEP[0] * t:STEP[0] * t + height, STEP[1] * t:STEP[1] * t + width]
                        for t in range(frames)])


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def run_bm4d(noisy: numpy.ndarray, sigma: float) -> numpy.ndarray:
    import bm4d  # noqa: PLC0415 - an optional peer

    def one(volume):  # (T, H, W) -> bm4d's (H, W, T) in [0, 1]
        return numpy.moveaxis(bm4d.bm4d(numpy.moveaxis(volume, 0, -1) / 255.0, sigma / 255.0), -1, 0) * 255

    if noisy.ndim == 3:
        return one(noisy)
    return numpy.stack([one(noisy[..., channel]) for channel in range(noisy.shape[-1])], axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["set12", "set5"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[15.0, 25.0, 50.0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=192, help="side of the moving view")
    parser.add_argument("--limit", type=int, default=0, help="the first N images of each set (0: all)")
    parser.add_argument("--peers", nargs="*", default=["bm4d", "volume"], choices=["bm4d", "volume"])
    parser.add_argument("--float", action="store_true", help="unclipped float noise instead of 8 bits")
    parser.add_argument("--clip", action="store_true", help="real video files through the command line")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/video.md")
    args = parser.parse_args()
    if args.clip:
        return clips(args)
    versions = []
    if "bm4d" in args.peers:
        from importlib.metadata import version  # noqa: PLC0415

        versions.append(f"bm4d {version('bm4d')}")
    lines = ["# Series: the collaborative filter across frames\n", machine("video.py", *versions),
             f"{args.frames} frames of a {args.size}x{args.size} view of each image moving by {STEP} "
             f"pixels per frame, noise {'as floats' if args.float else 'rounded and clipped to 8 bits'}; "
             "nlfilt estimates sigma, bm4d is given it.  dB: mean over the frames; s: seconds per frame.\n"]
    def table_row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    summary = [table_row(["set", "sigma", "frame by frame dB", "series dB", "gain",
                          *(f"{peer} dB" for peer in args.peers), "s frame by frame", "s series",
                          *(f"s {peer}" for peer in args.peers)]), "| --- " * (7 + 2 * len(args.peers)) + "|"]
    detail = [table_row(["set", "image", "sigma", "frames dB", "series dB", *(f"{p} dB" for p in args.peers),
                         "series s/frame", "estimate / time"]), "| --- " * (7 + len(args.peers)) + "|"]
    print("\n".join(lines + detail), flush=True)
    for set_name in args.sets:
        images = load_images(DATA / set_name)[:args.limit or None]
        for sigma in args.sigmas:
            rows = []
            for index, (name, image) in enumerate(images):
                clean = pan(image, args.frames, args.size)
                noisy = add_noise(clean, sigma, index, clip=not args.float)
                axis = {"channel_axis": -1} if clean.ndim == 4 else {"channel_axis": None}
                frames, frame_seconds = timed(lambda noisy=noisy: numpy.stack(
                    [nlfilt.denoise_collaborative(frame, device="cpu") for frame in noisy]))
                together, series_seconds = timed(nlfilt.denoise_collaborative, noisy, device="cpu", **axis)
                row = [psnr(frames, clean, clip=True), psnr(together, clean, clip=True)]
                seconds = [frame_seconds, series_seconds]
                for peer in args.peers:
                    if peer == "bm4d":
                        result, spent = timed(run_bm4d, noisy, sigma)
                    elif clean.ndim == 3:
                        result, spent = timed(nlfilt.denoise, noisy, channel_axis=None, patch=(1, 5, 5),
                                              window=(15, 11, 11), device="cpu")
                    else:
                        result, spent = None, None
                    row.append(numpy.nan if result is None else psnr(result, clean, clip=True))
                    seconds.append(numpy.nan if spent is None else spent)
                shape = together.shape if together.ndim == 4 else (*together.shape, 1)
                estimate = estimate_collaborative_seconds(shape) / series_seconds
                rows.append(row + [s / args.frames for s in seconds])
                detail.append(f"| {set_name} | {name} | {sigma:g} | "
                              + " | ".join("–" if numpy.isnan(v) else f"{v:.2f}" for v in row)
                              + f" | {series_seconds / args.frames:.2f} | {estimate:.2f} |")
                print(detail[-1], flush=True)
            mean = [float(numpy.nanmean(column)) if not numpy.isnan(column).all() else numpy.nan
                    for column in numpy.array(rows, dtype=float).T]
            count = 2 + len(args.peers)
            cells = ["–" if numpy.isnan(value) else f"{value:.2f}" for value in mean]
            summary.append(f"| {set_name} | {sigma:g} | {cells[0]} | {cells[1]} | {mean[1] - mean[0]:+.2f} | "
                           + " | ".join(cells[2:count] + cells[count:]) + " |")
            print(summary[-1], flush=True)
    text = "\n".join(lines + summary + ["\nPer image:\n"] + detail)
    print(text)
    if args.write:
        write("video.md", text)


def encode(path: Path, frames: numpy.ndarray, rate: int = 25) -> None:
    """``frames`` (T, H, W[, 3], uint8) as H.264 at qp 0 in 4:2:0 (gray frames too, with neutral chroma,
    as cameras write them), with a 440 Hz tone."""
    import av  # noqa: PLC0415 - nlfilt[video]

    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=rate, options={"qp": "0"})
        colour = frames.ndim == 4
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        sound = output.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24" if colour else "gray")
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            output.mux(video.encode(frame))
        output.mux(video.encode())
        samples = 48000 * len(frames) // rate
        tone = (0.2 * numpy.sin(2 * numpy.pi * 440 * numpy.arange(samples) / 48000)).astype(numpy.float32)
        for start in range(0, samples, 1024):
            piece = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="flt", layout="mono")
            piece.sample_rate, piece.pts = 48000, start
            output.mux(sound.encode(piece))
        output.mux(sound.encode())


def decode(path: Path, colour: bool) -> numpy.ndarray:
    """The frames of ``path`` as (T, H, W[, 3]) floats."""
    import av  # noqa: PLC0415 - nlfilt[video]

    with av.open(str(path)) as container:
        return numpy.stack([frame.to_ndarray(format="rgb24" if colour else "gray").astype(float)
                            for frame in container.decode(video=0)])


def clips(args: argparse.Namespace) -> None:
    """The ``--clip`` table: video files in and out through ``nlfilt denoise``."""
    sigma = 25.0
    lines = ["# Video files through the command line\n", machine("video.py"),
             f"{args.frames} frames of a {args.size}x{args.size} view of the first image of each set moving "
             f"by {STEP} pixels per frame, noise sigma {sigma:g} rounded and clipped to 8 bits, encoded as "
             "H.264 qp 0 in 4:2:0 (gray ones too) with an AAC track; `nlfilt denoise clip.mp4 -o out.mkv` "
             "in a new process. dB: against the clean frames through the same encode; s/frame: the command's "
             "wall time per frame.\n",
             "| set | image | noisy dB | frame by frame dB | series dB | series --lossless dB | gain | "
             "s/frame frames | s/frame series |", "| --- " * 9 + "|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for set_name in args.sets:
            name, image = load_images(DATA / set_name)[0]
            clean = pan(image, args.frames, args.size)
            colour = clean.ndim == 4
            noisy = add_noise(clean, sigma, 0, clip=True).astype(numpy.uint8)
            encode(folder / "clean.mp4", numpy.round(clean).astype(numpy.uint8))
            encode(folder / "clip.mp4", noisy)
            reference = decode(folder / "clean.mp4", colour)
            cells, seconds = [psnr(decode(folder / "clip.mp4", colour), reference, clip=True)], []
            runs = (("frames", ["--stack", "frames"]), ("series", []), ("lossless", ["--lossless"]))
            for label, extra in runs:
                out = folder / f"{label}.mkv"
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "nlfilt", "denoise", str(folder / "clip.mp4"), "-o",
                                str(out), "--device", "cpu", "--quiet", "--overwrite", *extra], check=True)
                seconds.append((time.perf_counter() - started) / args.frames)
                cells.append(psnr(decode(out, colour), reference, clip=True))
            lines.append(f"| {set_name} | {name} | " + " | ".join(f"{value:.2f}" for value in cells)
                         + f" | {cells[2] - cells[1]:+.2f} | {seconds[0]:.2f} | {seconds[1]:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.write:
        write("video_clip.md", text)


if __name__ == "__main__":
    main()
