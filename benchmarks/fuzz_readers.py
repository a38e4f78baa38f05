"""Fuzz the way ``nlfilt denoise`` opens an input file, with mutated PNG, TIFF, JPEG, BMP and WebP files.

Image files are untrusted input.  Each input (a mutation of seed files this script writes: the pixel types
and layouts nlfilt reads, multi-page TIFF stacks, ImageJ, OME and JPEG-compressed TIFF, animated PNG and
WebP) goes through what ``nlfilt denoise`` does before it filters: :func:`nlfilt.images.read_header`, the
plan and the size, time and memory check from the header (:func:`nlfilt.cli.options.check_plan`, default
options, on the CPU), and :func:`nlfilt.images.read_image`.  Every input must end as an image that matches
its header, or as a refusal in nlfilt's words (:class:`nlfilt.images.ImageError`, or the ValueError raised
by nlfilt's own checks); any other exception is a finding, and so are an input that takes over 5 seconds
(a watchdog thread that needs no GIL: :func:`faulthandler.dump_traceback_later`) and one that needs over
1 GiB (``RLIMIT_AS``: the allocation fails with MemoryError).  To nlfilt the machine has 2 GiB of memory,
so that its own memory check (half of it) is what keeps decoding under the limit.  A TIFF that nlfilt
would read in chunks (over 8192 x 8192 pixels) is counted as 'streamed' and not decoded here.

Run it by hand, not in CI: atheris (libFuzzer for Python, from PyPI) in a virtual environment of its own,
one format per process (one core each)::

    python3.11 -m venv /tmp/fuzzenv && /tmp/fuzzenv/bin/pip install atheris -e .
    /tmp/fuzzenv/bin/python benchmarks/fuzz_readers.py png -max_total_time=600
    nohup /tmp/fuzzenv/bin/python benchmarks/fuzz_readers.py tiff -max_total_time=600 > tiff.log 2>&1 &
    /tmp/fuzzenv/bin/python benchmarks/fuzz_readers.py --summary png tiff jpeg bmp webp

The format is one of png, tiff, jpeg, bmp, webp; the arguments after it go to libFuzzer
(``-max_total_time``, ``-runs``, ``-artifact_prefix`` ...; ``-rss_limit_mb=1024`` is added).  The seeds
and the corpus live in ``--workdir/FORMAT`` (default ``/tmp/nlfilt-fuzz``).  libFuzzer saves a finding as
``crash-*`` (in the current folder, or under ``-artifact_prefix``); a hang leaves its input in
``--workdir/FORMAT-input.EXT`` with the traceback of every thread on stderr.  Replay an input with
``python benchmarks/fuzz_readers.py FORMAT FILE``.  The outcomes (images, and refusals by stage and
message) are counted in ``--workdir/FORMAT-outcomes.json``, written every 5 seconds and through the last
seconds of ``-max_total_time``, and the first input of each refusal message is kept, with the message, in
``--workdir/FORMAT-examples``; ``--summary`` prints the counts.
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import json
import os
import random
import re
import resource
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, and no per-thread buffers under RLIMIT_AS
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("NLFILT_THREADS", "1")

import atheris  # noqa: E402 - after the thread settings

with atheris.instrument_imports(include=["nlfilt", "PIL", "tifffile", "imageio", "imagecodecs"]):
    import imageio.plugins.pillow  # noqa: F401 - imported here, so that its code is instrumented
    import imageio.plugins.tifffile_v3  # noqa: F401
    import imageio.v3 as iio
    import numpy
    import tifffile
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401
    from PIL import Image as PillowImage

    from nlfilt.cli import options as cli_options
    from nlfilt.cli.options import RunOptions, check_plan
    from nlfilt.cli.stream import should_stream
    from nlfilt.images import ImageError, read_header, read_image
    from nlfilt.methods import method

#: File extension of each format (the name a folder input would need).
EXTENSIONS = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg", "bmp": ".bmp", "webp": ".webp"}
#: Limits per input: seconds, and bytes of address space (the process's size before the first input is
#: well under it: about 0.2 GiB).
SECONDS = 5
ADDRESS_SPACE = 1 << 30
#: The memory nlfilt is told the machine has: its check refuses what needs over half of it.
MACHINE_MEMORY = 2 << 30
#: The nlfilt package folder: a ValueError raised there is one of nlfilt's refusals.
NLFILT = str(Path(cli_options.__file__).resolve().parents[1])


def seed_files(kind: str) -> dict[str, bytes]:
    """Small valid files of ``kind``: the pixel types, layouts and variants nlfilt reads."""
    rng = numpy.random.default_rng(7)

    def pixels(shape: tuple[int, ...], dtype: str) -> numpy.ndarray:
        if numpy.dtype(dtype).kind == "f":
            return rng.random(shape).astype(dtype)
        return rng.integers(0, numpy.iinfo(dtype).max, shape, endpoint=True).astype(dtype)

    def encoded(image: numpy.ndarray, **options: object) -> bytes:
        return iio.imwrite("<bytes>", image, extension=EXTENSIONS[kind], **options)

    gray, rgb, rgba = (20, 24), (20, 24, 3), (20, 24, 4)
    if kind == "png":
        import imagecodecs  # noqa: PLC0415 - the 16-bit colour PNG codec

        palette = PillowImage.fromarray(pixels(rgb, "uint8")).quantize(16)
        stream = io.BytesIO()
        palette.save(stream, format="PNG")
        return {"gray8": encoded(pixels(gray, "uint8")), "gray16": encoded(pixels(gray, "uint16")),
                "grayalpha8": encoded(pixels((20, 24, 2), "uint8")), "rgb8": encoded(pixels(rgb, "uint8")),
                "rgba8": encoded(pixels(rgba, "uint8")),
                "rgb16": imagecodecs.png_encode(pixels(rgb, "uint16")),
                "rgba16": imagecodecs.png_encode(pixels(rgba, "uint16")),
                "palette": stream.getvalue(),
                "animated": iio.imwrite("<bytes>", pixels((3, *rgb), "uint8"), extension=".png")}
    if kind == "tiff":
        def tiff(image: numpy.ndarray, **options: object) -> bytes:
            stream = io.BytesIO()
            tifffile.imwrite(stream, image, **options)
            return stream.getvalue()

        return {"gray8": tiff(pixels(gray, "uint8")), "gray16": tiff(pixels(gray, "uint16")),
                "gray32f": tiff(pixels(gray, "float32")), "gray64f": tiff(pixels(gray, "float64")),
                "int16": tiff(pixels(gray, "int16")), "rgb8": tiff(pixels(rgb, "uint8"), photometric="rgb"),
                "rgba16": tiff(pixels(rgba, "uint16"), photometric="rgb", extrasamples=[2]),
                "rgb-zlib": tiff(pixels(rgb, "uint8"), photometric="rgb", compression="zlib"),
                "rgb-jpeg": tiff(pixels((32, 32, 3), "uint8"), photometric="rgb", compression="jpeg"),
                "gray-tiled-lzw": tiff(pixels((32, 32), "uint16"), tile=(16, 16), compression="lzw"),
                "stack": tiff(pixels((5, *gray), "uint16"), photometric="minisblack"),
                "stack-rgb": tiff(pixels((2, *rgb), "uint8"), photometric="rgb"),
                "imagej": tiff(pixels((2, 3, *gray), "uint16"), imagej=True,
                               metadata={"axes": "TZYX", "spacing": 2.5, "unit": "um"}),
                "ome": tiff(pixels((3, *gray), "float32"), ome=True,
                            metadata={"axes": "ZYX", "PhysicalSizeX": 0.5}),
                "bigtiff": tiff(pixels(gray, "uint8"), bigtiff=True)}
    if kind == "jpeg":
        return {"gray": encoded(pixels(gray, "uint8")), "rgb": encoded(pixels(rgb, "uint8")),
                "rgb-progressive": encoded(pixels(rgb, "uint8"), progressive=True),
                "rgb-subsampled": encoded(pixels((32, 40, 3), "uint8"), quality=60, subsampling=2)}
    if kind == "bmp":
        return {"gray": encoded(pixels(gray, "uint8")), "rgb": encoded(pixels(rgb, "uint8")),
                "odd-width": encoded(pixels((21, 13, 3), "uint8"))}
    if kind == "webp":
        return {"rgb-lossless": encoded(pixels(rgb, "uint8"), lossless=True),
                "rgba-lossless": encoded(pixels(rgba, "uint8"), lossless=True, exact=True),
                "rgb-lossy": encoded(pixels(rgb, "uint8"), quality=80),
                "animated": iio.imwrite("<bytes>", pixels((2, *rgb), "uint8"), extension=".webp")}
    raise ValueError(f"unknown format {kind!r}; one of {', '.join(EXTENSIONS)}")


class Harness:
    """Opens each input as ``nlfilt denoise`` does and counts the outcomes."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.path = workdir / f"{kind}-input{EXTENSIONS[kind]}"
        self.outcomes_path = workdir / f"{kind}-outcomes.json"
        self.outcomes: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.inputs = 0
        self.started = self.saved = time.time()
        self.run = RunOptions.from_params({"device": "cpu"}, stack="frames", chunk=0)

    def __call__(self, data: bytes) -> None:
        if not self.inputs:  # libFuzzer's clock starts about now
            self.started = self.saved = time.time()
        self.path.write_bytes(data)
        faulthandler.dump_traceback_later(SECONDS, exit=True)
        try:
            outcome = self.open_input()
        finally:
            faulthandler.cancel_dump_traceback_later()
        self.outcomes[outcome] += 1
        self.inputs += 1
        if time.time() - self.saved > 5:
            self.save()

    def open_input(self) -> str:
        """'image', 'streamed' or the stage that refused the file; raises for anything else."""
        try:
            header = read_header(self.path)
        except ImageError as refusal:
            return self.refused("header", refusal)
        chosen = method(self.run.method)
        frames = max(1, header.frames)
        shape = header.colour_shape
        try:  # as nlfilt.cli.denoise._filter_job: the plan, then size, time and memory from the header
            streamed = chosen.streams and should_stream(self.path, header, self.run.chunk)
            plan = self.run.plan(shape, header.dtype, "cpu")
            check_plan(shape, plan, 10.0, streamed=streamed, frames=frames)
        except ValueError as refusal:
            if not raised_in_nlfilt(refusal):
                raise
            return self.refused("plan", refusal)
        if streamed:  # read in chunks by nlfilt.cli.stream, with dask: not opened here
            return "streamed"
        try:
            image = read_image(self.path, header, stacks=True)
        except ImageError as refusal:
            return self.refused("decode", refusal)
        expected = (header.frames, *shape) if header.frames else shape
        if image.colour.shape != expected or image.colour.dtype != header.dtype:
            raise AssertionError(f"decoded {image.colour.dtype} {image.colour.shape}, but the header said "
                                 f"{header.dtype} {expected}")
        if header.has_alpha != (image.alpha is not None):
            raise AssertionError("the alpha channel of the header and of the pixels differ")
        return "image"

    def refused(self, stage: str, refusal: Exception) -> str:
        """Count a refusal by its stage and its message without numbers and details; keep the first
        input of each message, with the message, in ``--workdir/FORMAT-examples``."""
        text = re.sub(r"\(.*", "(...)", str(refusal))
        key = f"{stage}: {re.sub(r'[0-9]+', 'N', text)[:110]}"
        if key not in self.messages:
            examples = self.path.parent / f"{self.kind}-examples"
            examples.mkdir(exist_ok=True)
            name = f"{len(self.messages):03d}{EXTENSIONS[self.kind]}"
            (examples / name).write_bytes(self.path.read_bytes())
            (examples / f"{name}.txt").write_text(f"{stage}: {refusal}\n")
        self.messages[key] += 1
        return f"refused ({stage})"

    def save(self) -> None:
        self.saved = time.time()
        self.outcomes_path.write_text(json.dumps({
            "format": self.kind, "inputs": self.inputs, "seconds": round(time.time() - self.started, 1),
            "outcomes": dict(self.outcomes), "messages": dict(self.messages.most_common())}, indent=1))


def raised_in_nlfilt(error: BaseException) -> bool:
    """Whether ``error`` was raised by nlfilt's own code (a refusal), not by a library under it."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(NLFILT)


#: Bytes of each format's signature (WebP: RIFF, the size, WEBP).
SIGNATURE_BYTES = {"png": 8, "tiff": 4, "jpeg": 3, "bmp": 2, "webp": 12}


def mend(kind: str, before: bytes, after: bytes, rng: random.Random) -> bytes:
    """A mutation ``after`` of ``before``, mostly kept in the format (its signature restored: the other
    formats' two-byte 'BM' would otherwise take over the corpus) and with its checksums mostly mended."""
    keep = SIGNATURE_BYTES[kind]
    if rng.random() < 0.9 and len(before) >= keep and len(after) >= keep:
        after = before[:keep] + after[keep:]
    return fix_checksums(kind, after) if rng.random() < 0.8 else after


def fix_checksums(kind: str, data: bytes) -> bytes:
    """Most mutations of a PNG break a chunk's CRC and of a WebP the RIFF size, which the codecs check
    first: recompute them, so that the mutation reaches the code behind the check."""
    if kind == "png" and data.startswith(b"\x89PNG\r\n\x1a\n"):
        out, position = bytearray(data[:8]), 8
        while position + 12 <= len(data):
            length = struct.unpack(">I", data[position:position + 4])[0]
            end = position + 12 + length
            if end > len(data):
                break
            body = data[position + 4:end - 4]
            out += data[position:end - 4] + struct.pack(">I", zlib.crc32(body))
            position = end
        return bytes(out + data[position:])
    if kind == "webp" and data[:4] == b"RIFF" and len(data) >= 12:
        return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]
    return data


def summary(kinds: list[str], workdir: Path) -> None:
    """Print the counted outcomes of each format's runs, and the refusals' messages."""
    columns = {"image": "images", "refused (header)": "refused: header", "refused (plan)": "refused: plan",
               "refused (decode)": "refused: decode", "streamed": "streamed"}
    print("| format | inputs | seconds | " + " | ".join(columns.values()) + " |")
    print("| --- |" + " ---: |" * (len(columns) + 2))
    messages: dict[str, dict[str, int]] = {}
    for kind in kinds:
        path = workdir / f"{kind}-outcomes.json"
        if not path.exists():
            print(f"| {kind} | no outcomes in {path} |" + " |" * (len(columns) + 1))
            continue
        record = json.loads(path.read_text())
        counts = record["outcomes"]
        cells = [record["inputs"], round(record["seconds"]), *(counts.get(key, 0) for key in columns)]
        print(f"| {kind} | " + " | ".join(map(str, cells)) + " |")
        messages[kind] = record["messages"]
    for kind, counted in messages.items():
        print(f"\n{kind}: refusals by message")
        for text, count in list(counted.items())[:12]:
            print(f"  {count:>8}  {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", nargs="?", choices=sorted(EXTENSIONS), help="the format to fuzz")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nlfilt-fuzz")
    parser.add_argument("--summary", nargs="+", metavar="FORMAT", help="print the outcomes counted so far")
    arguments, fuzzer_arguments = parser.parse_known_args()
    if arguments.summary:
        summary(arguments.summary, arguments.workdir)
        return
    if arguments.kind is None:
        parser.error("name a format")
    kind, workdir = arguments.kind, arguments.workdir
    corpus = workdir / kind
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seed_files(kind).items():
        (corpus / f"seed-{name}{EXTENSIONS[kind]}").write_bytes(data)
    cli_options.physical_memory = lambda: MACHINE_MEMORY
    harness = Harness(kind, workdir)
    replaying = any(not argument.startswith("-") for argument in fuzzer_arguments)
    if not replaying:
        fuzzer_arguments.append(str(corpus))
    if not any(argument.startswith("-rss_limit_mb") for argument in fuzzer_arguments):
        fuzzer_arguments.append("-rss_limit_mb=1024")
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    total = next((float(argument.split("=", 1)[1]) for argument in fuzzer_arguments
                  if argument.startswith("-max_total_time=")), None)

    def test_one_input(data: bytes) -> None:
        harness(data)
        if total is not None and time.time() - harness.started > total - 3:
            harness.save()  # libFuzzer ends the process without returning to Python

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        return mend(kind, data, atheris.Mutate(data, max_size), random.Random(seed))

    atheris.Setup([sys.argv[0], *fuzzer_arguments], test_one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
