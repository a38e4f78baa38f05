"""The JSON-lines report of ``nlfilt denoise --report``: appended, one whole line per write."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from nlfilt.images import folder_problem


class Report:
    """An append-only JSON-lines report.

    Each run first writes a header line (``{"run": <local time>, "nlfilt":
    <version>, ...}``), then one object per input.  A file is opened with
    ``O_APPEND`` and each line goes out in a single ``write`` call, so
    earlier runs' lines are kept and the lines of runs writing the same
    report at once never interleave within a line.  ``-`` writes to stdout.
    The report's folder is created when missing, as the outputs' are.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._descriptor: int | None = None
        if path is None or str(path) == "-":
            return
        problem = folder_problem(Path(path).parent)
        if problem:
            raise click.BadParameter(f"cannot write {path}: its folder {problem}", param_hint="--report")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # as -o creates its folders
            self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise click.BadParameter(f"cannot write {path}: {exc.strerror}", param_hint="--report") from None

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line."""
        if self.path is None:
            return
        line = json.dumps(record, default=str) + "\n"
        if self._descriptor is None:
            sys.stdout.write(line)
            sys.stdout.flush()
            return
        data = line.encode("utf-8")
        while data:  # a regular file takes the whole line at once; the loop covers short writes
            written = os.write(self._descriptor, data)
            data = data[written:]

    def header(self, version: str, command: str, inputs: Any, output: Any, options: dict[str, Any]) -> None:
        """Write the line that opens a run: when, which nlfilt, what was asked."""
        self.write({"run": datetime.now().astimezone().isoformat(timespec="seconds"), "nlfilt": version,
                    "command": command, "inputs": [str(item) for item in inputs], "output": str(output),
                    "options": options})

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
