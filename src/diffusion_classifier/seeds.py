"""One way to derive independent seeds: a named stream of a run's seed (e.g. the judge's draws in the
faithfulness tests, which must never coincide with the draws that made a map)."""

import hashlib


def derive(seed: int, *keys) -> int:
    """A seed in [0, 2**26) determined by (seed, *keys) alone; different keys give unrelated streams. 26 bits,
    because the scoring engine mixes a seed with image and draw indices into one 64-bit generator seed."""
    text = "/".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % (1 << 26)
