"""What a batch of ``nlfilt denoise`` reads and writes: the files named or found in folders, each one
accounted for, and the output path of each.

Every name a batch is given or finds is either a :class:`Job` (an input file
and its output) or :class:`PassedOver` with the reason (a link that leads
nowhere, a link loop, a folder that cannot be listed, the same file reached a
second time...), which the command reports like the other skipped inputs.
Hidden names (nlfilt's partial outputs among them), files whose names are not
images' and, without ``--recursive``, sub-folders are not inputs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from nlfilt.images import IMAGE_EXTENSIONS
from nlfilt.video import VIDEO_EXTENSIONS, VIDEO_OUTPUTS


@dataclass
class Job:
    """One input file and the output path it is written to.

    ``partials``: the folder its partial output is written in (a cluster run's
    own, see :func:`nlfilt.images.make_partials_folder`); None: the output's
    folder.
    """

    source: Path
    target: Path
    partials: Path | None = None


#: Kinds of inputs that are passed over: (one, several), as the end-of-run summary counts them.
PASSED_OVER_KINDS = {
    "dangling": ("dangling link", "dangling links"),
    "loop": ("link loop", "link loops"),
    "folder link": ("link to a folder", "links to folders"),
    "unreadable": ("unreadable entry", "unreadable entries"),
    "special": ("special file", "special files"),
    "duplicate": ("file named twice", "files named twice"),
}


@dataclass(frozen=True)
class PassedOver:
    """An input named or found that is not denoised: where its output would go, the kind (a key of
    :data:`PASSED_OVER_KINDS`) and the reason, as a phrase for the report."""

    source: Path
    target: Path
    kind: str
    reason: str


@dataclass(frozen=True)
class Found:
    """A name met while expanding the inputs and its path relative to its input; ``kind`` and
    ``reason`` say why it cannot be read (None: a file to denoise)."""

    path: Path
    relative: Path
    kind: str | None = None
    reason: str | None = None


def expand_inputs(inputs: tuple[Path, ...], recursive: bool, exclude: Path | None = None) -> list[Found]:
    """Every file named, and every image file name found in a named folder, in order.

    Folders are listed in name order (sub-folders, with ``recursive``, where
    their names fall); hidden names are left out, and so is anything under
    ``exclude`` (the output folder, when it lies inside an input folder).
    Links to files are followed; links to folders met inside a folder are
    not (as ``find`` and ``cp -r`` do), and are reported when ``recursive``.
    """
    found: list[Found] = []
    for item in inputs:
        if item.is_dir():
            found.extend(_walk(item, Path(), recursive, exclude))
        else:
            found.append(_classify(item, Path(item.name)))
    return found


def _walk(folder: Path, relative: Path, recursive: bool, exclude: Path | None) -> Iterator[Found]:
    """The image and video file names in ``folder`` (and its sub-folders with ``recursive``),
    classified."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        yield Found(folder, relative, "unreadable", f"cannot list this folder ({exc.strerror})")
        return
    for entry in entries:
        if entry.name.startswith("."):  # hidden, nlfilt's partial outputs among them
            continue
        path, inner = folder / entry.name, relative / entry.name
        if exclude is not None and Path(os.path.realpath(path)).is_relative_to(exclude):
            continue
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                yield from _walk(path, inner, recursive, exclude)
            continue
        if entry.is_symlink() and _is_folder(path):
            if recursive:
                reason = (f"a symbolic link to the folder {os.readlink(path)}, not followed; name that "
                          "folder as an input to include it")
                yield Found(path, inner, "folder link", reason)
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
            yield _classify(path, inner)


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _classify(path: Path, relative: Path) -> Found:
    """``path`` as a file to denoise, or why it cannot be one."""
    try:
        status = os.stat(path)
    except OSError as exc:
        if not os.path.islink(path):
            return Found(path, relative, "unreadable", f"cannot be read ({exc.strerror})")
        if exc.errno == errno.ELOOP:
            return Found(path, relative, "loop", "a symbolic link loop: following it never reaches a file")
        if exc.errno == errno.ENOENT:
            return Found(path, relative, "dangling",
                         f"a dangling symbolic link: {os.readlink(path)} does not exist")
        return Found(path, relative, "unreadable",
                     f"a symbolic link that cannot be followed ({exc.strerror})")
    if not stat.S_ISREG(status.st_mode):
        return Found(path, relative, "special", "not a regular file (a pipe, socket or device)")
    return Found(path, relative)


def plan_jobs(inputs: tuple[Path, ...], output: Path, recursive: bool) -> tuple[list[Job], list[PassedOver]]:
    """Map inputs to outputs: (the jobs, the inputs passed over); raise click.UsageError for an impossible
    or unsafe plan.

    A file reached more than once (named twice, named and found in its
    folder, or through a link) is one job: the first; a later name whose
    output would be another file is passed over and says which job covers it.
    """
    # one file, perhaps named more than once (then it is one job)
    single_file = not any(item.is_dir() for item in inputs) and len({_file_identity(item)
                                                                     for item in inputs}) == 1
    to_folder = not single_file or output.is_dir() or str(output).endswith(("/", "\\")) or not output.suffix
    if to_folder and output.exists() and not output.is_dir():
        raise click.UsageError(f"output {output} is a file; several inputs or a folder need an output folder")
    if to_folder and not output.exists() and output.suffix.lower() in (*IMAGE_EXTENSIONS, *VIDEO_OUTPUTS):
        raise click.UsageError(f"several inputs or a folder need an output folder, and {output} names an "
                               "image file; give a folder (it is created if missing)")
    if to_folder:
        for item in inputs:
            if item.is_dir() and output.is_dir() and os.path.samefile(item, output):
                raise click.UsageError(f"the output folder {output} is the input folder {item}: the outputs "
                                       "would replace their inputs; give another folder (a new sub-folder of "
                                       "it will do)")
    jobs: list[Job] = []
    passed_over: list[PassedOver] = []
    first_job: dict[tuple[int, int], Job] = {}
    for found in expand_inputs(inputs, recursive, exclude=output.resolve() if to_folder else None):
        target = output / _output_name(found.relative) if to_folder else output
        if found.kind is not None:
            passed_over.append(PassedOver(found.path, target, found.kind, found.reason or ""))
            continue
        identity = _file_identity(found.path)
        first = first_job.get(identity) if identity is not None else None
        if first is None:
            job = Job(found.path, target)
            jobs.append(job)
            if identity is not None:
                first_job[identity] = job
        elif first.target.resolve() != target.resolve():
            reason = f"the same file as {first.source}, which is denoised once, to {first.target}"
            passed_over.append(PassedOver(found.path, target, "duplicate", reason))
    # an existing output that is an input, by whatever path ('..', symbolic or hard links): same file
    identities = {_file_identity(job.source) for job in jobs} - {None}
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.target.resolve()
        if _file_identity(target) in identities:
            raise click.UsageError(f"output {job.target} is the input file {job.source}; refusing to "
                                   "overwrite an input: choose another output")
        if target in seen:
            raise click.UsageError(f"inputs {seen[target]} and {job.source} would both be written to "
                                   f"{job.target}")
        seen[target] = job.source
    return jobs, passed_over


def _output_name(relative: Path) -> Path:
    """The output's name in an output folder: the input's, but a video in a container nlfilt does not
    write (MOV, AVI, WebM) as .mkv."""
    suffix = relative.suffix.lower()
    if suffix in VIDEO_EXTENSIONS and suffix not in VIDEO_OUTPUTS:
        return relative.with_suffix(".mkv")
    return relative


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, the same for all its names (links); None when absent."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def passed_over_summary(passed_over: list[PassedOver]) -> str:
    """The inputs passed over, counted by kind: '2 dangling links, 1 link loop'."""
    kinds = [item.kind for item in passed_over]
    return ", ".join(f"{kinds.count(kind)} {names[kinds.count(kind) > 1]}"
                     for kind, names in PASSED_OVER_KINDS.items() if kind in kinds)
