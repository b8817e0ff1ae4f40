"""Incremental detokenization and stop-string handling for one sequence.

Decoding the whole completion on every step would be quadratic, and decoding token by token
breaks multi-byte characters that byte-level BPE splits across tokens. We decode a short
sliding window instead (the approach vLLM uses): text is released only when the window's text
grew and does not end in a replacement character, i.e. a half-decoded UTF-8 sequence.

Stop strings may straddle token boundaries, so text that could still be the start of a stop
string is held back from the stream until the next tokens decide it.
"""

from __future__ import annotations

from typing import Protocol


class _Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas, honouring stop strings."""

    def __init__(self, decoder: _Decoder, stop: tuple[str, ...] = ()) -> None:
        self._decoder = decoder
        self._stop = tuple(s for s in stop if s)
        self._max_stop = max((len(s) for s in self._stop), default=0)
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""  # all decoded text so far (before stop truncation)
        self._emitted = 0  # how much of ``text`` has been handed out
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self._decoder.decode(ids, skip_special_tokens=True)

    def add(self, ids: list[int]) -> str:
        """Account for the newest token in ``ids`` (the full completion) and return new text.

        After a stop string is seen, ``stopped`` is True and the returned text ends right
        before it.
        """
        if self.stopped:
            return ""
        prefix_text = self._decode(ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(ids)
        return self._release()

    def flush(self, ids: list[int]) -> str:
        """Return all remaining text at the end of the sequence (incomplete bytes included)."""
        if not self.stopped:
            prefix_text = self._decode(ids[self._prefix_offset : self._read_offset])
            new_text = self._decode(ids[self._prefix_offset :])
            if len(new_text) > len(prefix_text):
                self.text += new_text[len(prefix_text) :]
                self._prefix_offset = self._read_offset = len(ids)
        return self._release(final=True)

    def _release(self, final: bool = False) -> str:
        end = len(self.text)
        if self._stop and not self.stopped:
            # Only the tail can contain a stop string that was not there before.
            search_from = max(0, self._emitted - self._max_stop)
            hits = [i for i in (self.text.find(s, search_from) for s in self._stop) if i >= 0]
            if hits:
                self.stopped = True
                self.text = self.text[: min(hits)]
                end = len(self.text)
            elif not final:
                end -= self._held_back()
        out = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return out

    def _held_back(self) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        text = self.text
        for n in range(min(self._max_stop - 1, len(text)), 0, -1):
            suffix = text[-n:]
            if any(s.startswith(suffix) for s in self._stop):
                return n
        return 0
