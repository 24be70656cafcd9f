"""A job's output as log entries: lines cut from a stream of bytes, and the entries not sent
yet, bounded and cut into messages; and ``clean_text``, the one way a worker cuts the text it
reports. Pure: no descriptors, no threads (see ``capture``)."""

from __future__ import annotations

from collections import deque
from typing import Any

from .protocol import Log

Entry = dict[str, Any]

MAX_LOG_LINE_CHARS = 4 * 1024  # longer output lines and log records are cut
LINE_BYTES = MAX_LOG_LINE_CHARS * 4  # a line with no end in sight is cut here
BATCH_CHARS = 256 * 1024  # text per message: far below the pipe's message limit


class Lines:
    """Splits one stream's bytes into lines; a line longer than LINE_BYTES is cut there."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._skipping = False  # the rest of a line already cut

    def feed(self, data: bytes) -> list[bytes]:
        lines = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False
            else:
                self._partial += data[start:end]
                lines.append(bytes(self._partial))
            self._partial.clear()
            start = end + 1
        if not self._skipping:
            self._partial += data[start:]
            if len(self._partial) > LINE_BYTES:
                lines.append(bytes(self._partial))
                self._partial.clear()
                self._skipping = True
        return lines

    def rest(self) -> list[bytes]:
        """The last line, if the output did not end with a newline."""
        if self._skipping or not self._partial:
            return []
        line = bytes(self._partial)
        self._partial.clear()
        return [line]


def clean_text(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` as valid UTF-8 (odd bytes escaped) cut to ``limit`` characters.

    Exception messages can carry undecodable file names or megabytes of data; neither may
    break the message that reports them.
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    cut = f"[… {len(text) - limit} characters cut …]"
    return cut + text[-limit:] if keep_end else text[:limit] + cut


def line_text(line: bytes) -> str:
    text = line.removesuffix(b"\r").decode("utf-8", "replace")
    return clean_text(text, MAX_LOG_LINE_CHARS)


class JobLog:
    """The entries of one job not sent yet: the newest ``max_lines`` of them, and a count of
    the older ones dropped (the store keeps only that many anyway)."""

    def __init__(self, job_id: str, max_lines: int) -> None:
        self.job_id = job_id
        self.entries: deque[Entry] = deque(maxlen=max_lines)
        self.dropped = 0

    def add(self, entry: Entry) -> None:
        if len(self.entries) == self.entries.maxlen:
            self.dropped += 1
        self.entries.append(entry)

    def take(self) -> list[Log]:
        """The pending entries as log messages, each within BATCH_CHARS of text."""
        messages: list[Log] = []
        batch: list[Entry] = []
        chars = 0
        for entry in self.entries:
            if batch and chars + len(entry["text"]) > BATCH_CHARS:
                messages.append(self._message(batch))
                batch, chars = [], 0
            batch.append(entry)
            chars += len(entry["text"])
        if batch or self.dropped:
            messages.append(self._message(batch))
        self.entries.clear()
        return messages

    def _message(self, entries: list[Entry]) -> Log:
        message = Log(self.job_id, entries, self.dropped)
        self.dropped = 0
        return message
