"""Time series: a 3-D filter with a temporal window against filtering frame by frame.

Each clean image (Set12 from <data>, or the images of a folder given with
--data) becomes 8 frames shifted by up to 3 pixels (a jittering camera;
``numpy.roll``), noise of sigma 25 is added (seed = the image's index), and
the frames are denoised

* one by one, as 2-D images, with nlfilt's default patch 5 and window 11;
* as one volume (``channel_axis=None``) with patch (1, 5, 5) and window
  (15, 11, 11), which covers every frame;

with ``--clip`` the noisy frames are rounded and clipped to 8 bits first.  The
table gives the mean PSNR over the frames and the seconds per series, measured
side by side in one run.

    python benchmarks/time_series.py --write      # writes benchmarks/results/time_series.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy

import nlfilt

from harness import DATA, add_noise, load_images, machine, psnr, write

SHIFTS = [(0, 0), (1, 2), (-2, 1), (3, -1), (-1, -3), (2, 3), (-3, -2), (1, -2)]
SIGMA = 25.0
CROP = 256



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "set12",
                        help="folder of clean gray images")
    parser.add_argument("--clip", action="store_true", help="round and clip the noisy frames to 8 bits")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/time_series.md")
    args = parser.parse_args()
    lines = ["# Time series: 3-D filter against frame by frame\n",
             machine("time_series.py"),
             f"8 frames of each image ({CROP}x{CROP} top-left crop) shifted by up to 3 pixels, noise sigma "
             f"{SIGMA:g}{', rounded and clipped to 8 bits' if args.clip else ''}, sigma estimated by "
             "nlfilt.\n",
             "| image | noisy dB | frame by frame dB | s | volume dB | s | gain dB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    gains = []
    for index, (name, image) in enumerate(load_images(args.data)):
        if image.ndim == 3:
            image = image[..., :3].mean(axis=2)
        image = image[:CROP, :CROP]
        clean = numpy.stack([numpy.roll(image, shift, axis=(0, 1)) for shift in SHIFTS])
        noisy = add_noise(clean, SIGMA, index, clip=args.clip)
        started = time.perf_counter()
        frames = numpy.stack([nlfilt.denoise(frame, device="cpu") for frame in noisy])
        frame_seconds = time.perf_counter() - started
        started = time.perf_counter()
        volume = nlfilt.denoise(noisy, channel_axis=None, patch=(1, 5, 5), window=(15, 11, 11), device="cpu")
        volume_seconds = time.perf_counter() - started
        gains.append(psnr(volume, clean) - psnr(frames, clean))
        lines.append(f"| {name} | {psnr(noisy, clean):.2f} | {psnr(frames, clean):.2f} | "
                     f"{frame_seconds:.2f} | {psnr(volume, clean):.2f} | {volume_seconds:.2f} | "
                     f"{gains[-1]:+.2f} |")
        print(lines[-1], flush=True)
    if gains:
        lines.append(f"\nMean gain of the volume over frame by frame: {numpy.mean(gains):+.2f} dB "
                     f"(smallest {min(gains):+.2f} dB).")
        print(lines[-1])
    if args.write:
        write("time_series.md", "\n".join(lines))


if __name__ == "__main__":
    main()
