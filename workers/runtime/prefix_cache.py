"""A bounded cache of prompt prefixes' KV tensors, shared across requests.

Prompts are cut into blocks of ``BLOCK`` tokens; the key of a prefix of ``k`` blocks is a
chained BLAKE2 digest of those blocks (so two prompts share a key exactly when they share those
tokens, whatever follows). After a prompt is prefilled, the KV of its longest block-aligned
prefix that leaves at least one token to compute is stored, and every block boundary of it
becomes a key. A later prompt looks up its longest cached boundary and prefills only the rest
on top of a copy of the cached rows (see ``Engine._prefill_hits``).

The bound is in bytes of KV tensors; the least recently used entry goes first. Only the model
thread touches the cache, so there is no lock.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
from array import array
from dataclasses import dataclass, field

import torch

BLOCK = 16


@dataclass(eq=False)
class Entry:
    """The KV of one cached prefix: per layer (keys, values), each [1, heads, tokens, dim]."""

    id: int
    tokens: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    digests: list[bytes] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


def _digests(prompt: list[int], blocks: int) -> list[bytes]:
    out, running = [], b""
    for b in range(blocks):
        chunk = array("q", prompt[b * BLOCK : (b + 1) * BLOCK]).tobytes()
        running = hashlib.blake2b(running + chunk, digest_size=16).digest()
        out.append(running)
    return out


class PrefixCache:
    """LRU map from block-aligned prompt prefixes to their KV tensors."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._index: dict[bytes, Entry] = {}  # digest of k blocks -> an entry holding them
        self._entries: collections.OrderedDict[int, Entry] = collections.OrderedDict()
        self._ids = itertools.count()
        self.queried_tokens = 0
        self.hit_tokens = 0

    @staticmethod
    def cacheable(prompt_len: int) -> int:
        """Tokens of a prompt that can be cached: whole blocks, leaving one token to compute."""
        return (prompt_len - 1) // BLOCK * BLOCK

    def lookup(self, prompt: list[int]) -> tuple[Entry, int] | None:
        """The longest cached prefix of ``prompt`` (entry, tokens), counted in the hit rate."""
        self.queried_tokens += len(prompt)
        blocks = self.cacheable(len(prompt)) // BLOCK
        digests = _digests(prompt, blocks)
        for b in range(blocks, 0, -1):
            entry = self._index.get(digests[b - 1])
            if entry is not None:
                self._entries.move_to_end(entry.id)
                self.hit_tokens += b * BLOCK
                return entry, b * BLOCK
        return None

    def insert(self, prompt: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store the cacheable prefix of ``prompt``; ``layers`` hold at least that many tokens."""
        tokens = self.cacheable(len(prompt))
        if tokens == 0 or self.max_bytes <= 0:
            return
        digests = _digests(prompt, tokens // BLOCK)
        known = self._index.get(digests[-1])
        if known is not None:
            self._entries.move_to_end(known.id)
            return
        kept = [(k[:, :, :tokens].clone(), v[:, :, :tokens].clone()) for k, v in layers]
        entry = Entry(next(self._ids), tokens, kept, digests)
        if entry.nbytes > self.max_bytes:
            return
        self._entries[entry.id] = entry
        self.bytes += entry.nbytes
        for digest in digests:
            self._index[digest] = entry
        while self.bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self.bytes -= entry.nbytes
        for digest in entry.digests:
            if self._index.get(digest) is entry:
                del self._index[digest]

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        self.__init__(self.max_bytes)  # type: ignore[misc]

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0
