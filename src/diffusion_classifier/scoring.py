"""The classification engine: the error tensor E[N, C, K].

For image i, draw k and class c: u = t(i, k), eps = eps(i, k), x_t = alpha(u) x0 + sigma(u) eps and
E[i, c, k] = mean over pixels of (eps_hat(x_t, u, c) - eps)^2 (eps_hat recovered from any prediction type).
The draw (u, eps) of (i, k) comes from a generator seeded by (seed, i, k) alone, so it never depends on the
batch size, the batch order, the chunking, the number of processes or how many draws are asked for; every
class of an image sees the same draws (a paired comparison).

The engine evaluates (image, draw, class) triples in large batches under inference_mode (bf16 autocast and
channels_last where they pay off), writes E to disk chunk by chunk (a killed run resumes at the last finished
chunk), shards chunks over processes with `accelerate`, and can stop drawing for an image once its majority
vote is decided (early stopping: exact, or sequential with a bounded chance of ending otherwise) or drop
classes between stages (successive elimination, Li et al.).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import decision
from .checkpointing import main_process_lock, read_json
from .device import autocast, default_device, resolve_precision
from .errors import CheckpointError

# Bump when the cache layout changes. 2: chunks carry the cache's fingerprint and image range.
CACHE_FORMAT = 2


@dataclass
class ScoreSettings:
    n_draws: int = 32
    t_sampling: str = "random"  # random: u ~ U(t_min, t_max) per draw; grid: K evenly spaced u, shuffled per image
    t_min: float = 0.0
    t_max: float = 1.0
    seed: int = 0
    batch_size: int = 512
    chunk_size: int = 64
    mixed_precision: str = "auto"
    # majority vote only: stop drawing for an image once its vote is decided (decision.vote_decided)
    early_stop: str = "off"  # off | exact (no class can still overtake) | sequential (flip chance <= alpha)
    early_stop_alpha: float = 0.001
    compile: bool = False  # torch.compile the forward pass: ~1.4x on CPU after a one-off compile of ~30-70 s
    round_size: int = 4  # draws per round between early-stopping checks
    stages: list = field(default_factory=list)  # successive elimination: [(draws, classes kept after), ...]

    @classmethod
    def from_profile(cls, cfg: dict, **changes) -> ScoreSettings:
        s = cfg["scoring"]
        base = cls(
            n_draws=s["n_draws"],
            t_sampling=s["t_sampling"],
            t_min=s["t_min"],
            t_max=s["t_max"],
            seed=cfg["seed"],
            batch_size=s["batch_size"],
            chunk_size=s["chunk_size"],
            mixed_precision=s["mixed_precision"],
            round_size=s["early_stop_rounds"],
            early_stop_alpha=s["early_stop_alpha"],
        )
        return cls(**{**asdict(base), **changes})

    def __post_init__(self):
        if self.early_stop not in ("off", "exact", "sequential"):
            raise ValueError(f"early_stop must be 'off', 'exact' or 'sequential', got {self.early_stop!r}")

    @property
    def stop_alpha(self) -> float:
        return self.early_stop_alpha if self.early_stop == "sequential" else 0.0

    def key(self) -> dict:
        """Settings that change E's values (batch and chunk size do not)."""
        key = {k: v for k, v in asdict(self).items() if k not in ("batch_size", "chunk_size", "compile")}
        if self.early_stop == "off":
            del key["round_size"], key["early_stop_alpha"]
        return key


@dataclass
class Scores:
    E: np.ndarray  # float32 (N, C, K); NaN where a draw or class was skipped (early stopping, elimination)
    U: np.ndarray  # float32 (N, K): the time u in [0, 1) of each draw

    @property
    def unet_evals(self) -> np.ndarray:
        """UNet evaluations spent on each image."""
        return np.isfinite(self.E).sum(axis=(1, 2))


# ----------------------------------------------------------------------------- draws


def _generator(seed: int, image: int, draw: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + image) * 100_003 + draw)


def draw_time(s: ScoreSettings, image: int, draw: int) -> float:
    if s.t_sampling == "random":
        v = torch.rand(1, generator=_generator(s.seed, image, draw), dtype=torch.float64).item()
    elif s.t_sampling == "grid":
        order = torch.randperm(s.n_draws, generator=_generator(s.seed, image, -1)).tolist()
        v = (order[draw] + 0.5) / s.n_draws
    else:
        raise ValueError(f"t_sampling must be 'random' or 'grid', got {s.t_sampling!r}")
    return s.t_min + (s.t_max - s.t_min) * v


def draw_noise(s: ScoreSettings, image: int, draw: int, shape) -> torch.Tensor:
    g = _generator(s.seed, image, draw)
    torch.rand(1, generator=g, dtype=torch.float64)  # the time's draw comes first from the same stream
    return torch.randn(tuple(shape), generator=g)


# ----------------------------------------------------------------------------- the engine


class ScoringEngine:
    def __init__(self, model, settings: ScoreSettings, device=None):
        self.device = torch.device(device) if device else default_device()
        self.model = model.to(self.device).eval()
        self.s = settings
        self.precision = resolve_precision(settings.mixed_precision, self.device)
        if self.device.type == "cuda" or self.precision == "bf16":
            self.model.to(memory_format=torch.channels_last)  # measured: +20-25% with bf16 on CPU
        # a compiled copy of the forward: the caller's model itself stays eager
        self.predict = torch.compile(self.model.predict) if settings.compile else self.model.predict

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model.encode(b.to(self.device)).float().cpu() for b in x.split(self.s.batch_size)])

    @torch.inference_mode()
    def pixel_errors(self, z0, image_ids, draws, classes, reduce=True, with_x0=False):
        """Evaluate the triples (j, draws[j][m], classes[j][m]) for local images j.

        z0: (n, ...) encoded images; image_ids: their global indices (for the draws);
        draws, classes: per local image, equal-length lists. Returns per triple the mean error (reduce) or
        the per-pixel squared error map, plus optionally the one-step x0 estimates; in triple order.
        """
        triples = [(j, k, c) for j in range(len(z0)) for k, c in zip(draws[j], classes[j])]
        out, x0s = [], []
        sched = self.model.schedule
        for b in range(0, len(triples), self.s.batch_size):
            batch = triples[b : b + self.s.batch_size]
            noise = {}
            for j, k, _ in batch:
                if (j, k) not in noise:
                    noise[(j, k)] = (
                        draw_time(self.s, int(image_ids[j]), k),
                        draw_noise(self.s, int(image_ids[j]), k, z0.shape[1:]),
                    )
            u = torch.tensor([noise[(j, k)][0] for j, k, _ in batch], dtype=torch.float32, device=self.device)
            eps = torch.stack([noise[(j, k)][1] for j, k, _ in batch]).to(self.device)
            x0 = z0[[j for j, _, _ in batch]].to(self.device)
            x_t = sched.add_noise(x0, eps, u)
            labels = torch.tensor([c for _, _, c in batch], device=self.device)
            if self.device.type == "cuda" or self.precision == "bf16":
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                pred = self.predict(x_t, u, labels)
            eps_hat, x0_hat = sched.eps_and_x0(pred.float(), x_t, u)
            err = (eps_hat - eps).pow(2)
            out.append((err.flatten(1).mean(1) if reduce else err.mean(1)).float().cpu())
            if with_x0:
                x0s.append(x0_hat.cpu())
        res = torch.cat(out) if out else torch.zeros(0)
        return (res, torch.cat(x0s)) if with_x0 else res

    def score_images(self, z0, image_ids, n_classes) -> tuple[np.ndarray, np.ndarray]:
        """E and U for a handful of images, with early stopping / elimination if asked."""
        n, K = len(z0), self.s.n_draws
        E = np.full((n, n_classes, K), np.nan, dtype=np.float32)
        U = np.array([[draw_time(self.s, int(i), k) for k in range(K)] for i in image_ids], dtype=np.float32)
        active = np.ones((n, n_classes), dtype=bool)
        if self.s.stages:
            bounds, keeps = np.cumsum([d for d, _ in self.s.stages]), [c for _, c in self.s.stages]
            if bounds[-1] != K:
                raise ValueError(f"elimination stages use {bounds[-1]} draws but n_draws is {K}")
        else:
            bounds, keeps = decision.round_ends(K, self.s.round_size if self.s.early_stop != "off" else K), None
        start = 0
        for r, stop in enumerate(bounds):
            todo = [j for j in range(n) if active[j].any()]
            draws = [
                [k for k in range(start, stop) for c in np.flatnonzero(active[j])] if j in todo else []
                for j in range(n)
            ]
            classes = [
                [c for k in range(start, stop) for c in np.flatnonzero(active[j])] if j in todo else []
                for j in range(n)
            ]
            errs = self.pixel_errors(z0, image_ids, draws, classes).numpy()
            pos = 0
            for j in todo:
                for k, c in zip(draws[j], classes[j]):
                    E[j, c, k] = errs[pos]
                    pos += 1
            if keeps is not None:  # successive elimination: keep the classes with the lowest mean error so far
                for j in todo:
                    m = np.where(active[j], np.nanmean(E[j, :, :stop], axis=1), np.inf)
                    active[j] = False
                    active[j, np.argsort(m, kind="stable")[: int(keeps[r])]] = True
            elif self.s.early_stop != "off":
                active[todo] &= ~decision.vote_decided(E[todo, :, :stop], K - stop, self.s.stop_alpha)[:, None]
            start = stop
        return E, U

    def score(
        self, x: torch.Tensor, n_classes: int, cache_dir=None, image_offset: int = 0, desc: str = "score"
    ) -> Scores:
        """Score images x (N, C, H, W) in [-1, 1]. With cache_dir, chunks are written there as they finish
        and reused on a re-run; with several processes each scores its share of chunks. The cache folder is
        locked while this runs (a second job gets a CheckpointError)."""
        cache = Path(cache_dir) if cache_dir else None
        with main_process_lock(cache) if cache is not None else nullcontext():
            return self._score(x, n_classes, cache, image_offset, desc)

    def _score(self, x, n_classes, cache, image_offset, desc) -> Scores:
        from accelerate import PartialState

        state = PartialState()
        N, cs, fingerprint = len(x), self.s.chunk_size, None
        if cache is not None:
            fingerprint, cs = self._open_cache(cache, x, n_classes)
        chunks = [(c0, min(c0 + cs, N)) for c0 in range(0, N, cs)]
        mine = chunks[state.process_index :: state.num_processes]
        results = {}
        bar = tqdm(total=N, desc=desc, unit="img", disable=not state.is_main_process, smoothing=0.1)
        for c0, c1 in mine:
            path = cache / f"chunk_{c0:07d}.npz" if cache is not None else None
            if path is not None and path.exists():
                _read_chunk(path, fingerprint, c0, c1, n_classes, self.s.n_draws)  # refuse a foreign chunk now
                bar.update((c1 - c0) * state.num_processes)
                continue
            ids = np.arange(c0, c1) + image_offset
            z0 = self.encode(x[c0:c1])
            E, U = self.score_images(z0, ids, n_classes)
            if path is not None:
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, E=E, U=U, fingerprint=np.array(fingerprint), start=c0, stop=c1)
                tmp.replace(path)  # atomic: a killed run never leaves a half chunk behind
            else:
                results[c0] = (E, U)
            bar.update(len(ids) * state.num_processes)
        bar.close()
        state.wait_for_everyone()
        if cache is None:
            if state.num_processes > 1:
                raise ValueError("several processes need a cache_dir to merge their shards")
            parts = [results[c0] for c0, _ in chunks]
        else:
            parts = [
                _read_chunk(cache / f"chunk_{c0:07d}.npz", fingerprint, c0, c1, n_classes, self.s.n_draws)
                for c0, c1 in chunks
            ]
        return Scores(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _open_cache(self, cache: Path, x: torch.Tensor, n_classes: int) -> tuple[str, int]:
        """A cache directory belongs to one (settings, model, data); anything else is refused, not mixed in.
        Returns its fingerprint (stamped into every chunk) and its chunk size: a folder keeps the chunking it was
        made with (E does not depend on it), so a re-run with another chunk size reuses it correctly."""
        from accelerate import PartialState

        info = {
            "format": CACHE_FORMAT,
            "settings": self.s.key(),
            "data_sha1": hashlib.sha1(x.numpy().tobytes()).hexdigest(),
            "model_sha1": model_fingerprint(self.model),
            "n_images": len(x),
            "n_classes": n_classes,
        }
        info = json.loads(json.dumps(info))  # as read back from disk (tuples become lists)
        fingerprint = hashlib.sha1(json.dumps(info, sort_keys=True).encode()).hexdigest()
        meta = cache / "scores.json"
        state = PartialState()
        cache.mkdir(parents=True, exist_ok=True)  # every process writes chunks here
        if state.is_main_process and not meta.exists():
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps({**info, "fingerprint": fingerprint, "chunk_size": self.s.chunk_size}, indent=1))
            tmp.replace(meta)  # atomic: the other processes never read half a file
        state.wait_for_everyone()
        old = read_json(meta)
        diff = [k for k in info if old.get(k) != info[k]]
        if diff:
            raise CheckpointError(
                f"{meta}: score cache was made with other {diff}; remove {cache} or use another directory"
            )
        if not isinstance(old.get("chunk_size"), int) or old["chunk_size"] < 1:
            raise CheckpointError(f"{meta}: no valid chunk_size; remove {cache} or use another directory")
        return fingerprint, old["chunk_size"]


def _read_chunk(path: Path, fingerprint: str, start: int, stop: int, n_classes: int, n_draws: int):
    """E and U of one cached chunk, refused unless it was written by this cache for exactly these images."""
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: z[k] for k in z.files}
    except Exception as exc:  # truncated or not an npz: zipfile, OSError, ValueError, EOFError
        raise CheckpointError(
            f"{path}: unreadable score chunk ({type(exc).__name__}); remove it to score it again"
        ) from None
    if not {"E", "U", "fingerprint", "start", "stop"} <= set(got) or str(got["fingerprint"]) != fingerprint:
        raise CheckpointError(
            f"{path}: written for another score cache (other model, data or settings); "
            f"remove {path.parent} or use another directory"
        )
    n = stop - start
    if (
        (int(got["start"]), int(got["stop"])) != (start, stop)
        or got["E"].shape != (n, n_classes, n_draws)
        or got["U"].shape != (n, n_draws)
    ):
        raise CheckpointError(
            f"{path}: holds images {int(got['start'])}-{int(got['stop'])} with E {got['E'].shape}, "
            f"expected {start}-{stop} with E {(n, n_classes, n_draws)}; remove it to score it again"
        )
    return got["E"], got["U"]


def model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes()[: 1 << 20])
    return h.hexdigest()


def cache_dir_for(root, split: str, settings: ScoreSettings, model, x: torch.Tensor) -> Path:
    """A cache folder named by what determines E, so changed settings, weights or data never reuse stale scores."""
    key = json.dumps(
        {
            "f": CACHE_FORMAT,
            "s": settings.key(),
            "m": model_fingerprint(model),
            "x": hashlib.sha1(x.numpy().tobytes()).hexdigest(),
        },
        sort_keys=True,
    )
    return Path(root) / f"{split}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
