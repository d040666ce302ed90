"""Progress on stderr: tqdm's bar on a terminal, plain lines in a log file.

A job's stderr is usually a log (`> {log} 2>&1` in every rule). tqdm redraws its bar with carriage
returns, which a log keeps as one ever longer line; there, the same text is written as a line of
its own every `log_interval` seconds (and once at the end), with no bar and no padding:

    inception: 4000/10000 (40%) [06:40<10:00, 10.00img/s]
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _Lines:
    """A stream for tqdm that turns its `\\r<text><padding>` redraws into `<text>\\n` lines."""

    def __init__(self, stream):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None)

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()  # tqdm pads a redraw with spaces and clears with "\r"
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, *, log_interval: float = 30.0, stream=None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)` on `stream` (default stderr): a bar on a terminal, else a line
    every `log_interval` seconds and a last one when it closes."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.update(leave=True, mininterval=log_interval)  # leave: the final count gets its line
    kwargs.setdefault("bar_format", LOG_FORMAT)
    return tqdm(iterable, file=_Lines(stream), **kwargs)
