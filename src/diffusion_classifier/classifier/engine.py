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
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..core import seeds
from ..core.checkpoints import main_process_lock, read_json
from ..core.device import autocast, default_device, resolve_precision
from ..core.errors import CheckpointError
from . import rules

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
    # majority vote only: stop drawing for an image once its vote is decided (rules.vote_decided)
    early_stop: str = "off"  # off | exact (no class can still overtake) | sequential (flip chance <= alpha)
    early_stop_alpha: float = 0.001
    # torch.compile the forward pass, after a one-off compile; what it gains: the "engine + torch.compile" row of
    # results/benchmarks/scoring.csv (benchmarks/scoring.py)
    compile: bool = False
    round_size: int = 4  # draws per round between early-stopping checks
    stages: list = field(default_factory=list)  # successive elimination: [(draws, classes kept after), ...]

    @classmethod
    def from_profile(cls, cfg: dict, **changes) -> ScoreSettings:
        sc = cfg["scoring"]
        base = cls(
            n_draws=sc["n_draws"],
            t_sampling=sc["t_sampling"],
            t_min=sc["t_min"],
            t_max=sc["t_max"],
            seed=cfg["seed"],
            batch_size=sc["batch_size"],
            chunk_size=sc["chunk_size"],
            mixed_precision=sc["mixed_precision"],
            round_size=sc["round_size"],
            early_stop_alpha=sc["early_stop_alpha"],
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
class DrawErrors:
    """What scoring returns: errors (lower is better), not class scores; rules.py turns them into decisions."""

    E: np.ndarray  # float32 (N, C, K); NaN where a draw or class was skipped (early stopping, elimination)
    U: np.ndarray  # float32 (N, K): the time u in [0, 1) of each draw

    @property
    def unet_evals(self) -> np.ndarray:
        """UNet evaluations spent on each image."""
        return np.isfinite(self.E).sum(axis=(1, 2))


# ----------------------------------------------------------------------------- draws


def _generator(seed: int, image: int, draw: int) -> torch.Generator:
    return torch.Generator().manual_seed(seeds.draw_seed(seed, image, draw))


def draw_time(settings: ScoreSettings, image: int, draw: int) -> float:
    if settings.t_sampling == "random":
        v = torch.rand(1, generator=_generator(settings.seed, image, draw), dtype=torch.float64).item()
    elif settings.t_sampling == "grid":
        order = torch.randperm(settings.n_draws, generator=_generator(settings.seed, image, -1)).tolist()
        v = (order[draw] + 0.5) / settings.n_draws
    else:
        raise ValueError(f"t_sampling must be 'random' or 'grid', got {settings.t_sampling!r}")
    return settings.t_min + (settings.t_max - settings.t_min) * v


def draw_noise(settings: ScoreSettings, image: int, draw: int, shape) -> torch.Tensor:
    g = _generator(settings.seed, image, draw)
    torch.rand(1, generator=g, dtype=torch.float64)  # the time's draw comes first from the same stream
    return torch.randn(tuple(shape), generator=g)


# ----------------------------------------------------------------------------- draw policies
# How many draws an image gets: the engine draws in rounds and, after each, a policy switches (image, class) pairs
# off in `active` (n, C). E_so_far holds the errors of the rounds drawn so far (NaN where skipped).


class EveryDraw:
    """All K draws for every class: one round."""

    def round_ends(self, K: int) -> list[int]:
        return [K]

    def update(self, E_so_far, active, round_index: int, draws_left: int):
        pass


@dataclass
class EarlyStop:
    """Majority vote only: an image stops once its vote is decided (rules.vote_decided), checked every
    round_size draws; alpha 0 = exact (no class can still overtake), else sequential (flip chance <= alpha)."""

    round_size: int
    alpha: float

    def round_ends(self, K: int) -> list[int]:
        return rules.round_ends(K, self.round_size)

    def update(self, E_so_far, active, round_index: int, draws_left: int):
        todo = np.flatnonzero(active.any(1))
        active[todo] &= ~rules.vote_decided(E_so_far[todo], draws_left, self.alpha)[:, None]


@dataclass
class SuccessiveElimination:
    """Li et al.: stages of (draws, classes kept after); after each stage keep the classes with the lowest mean
    error so far."""

    stages: list

    def round_ends(self, K: int) -> list[int]:
        ends = np.cumsum([d for d, _ in self.stages]).tolist()
        if ends[-1] != K:
            raise ValueError(f"elimination stages use {ends[-1]} draws but n_draws is {K}")
        return ends

    def update(self, E_so_far, active, round_index: int, draws_left: int):
        keep = int(self.stages[round_index][1])
        for j in np.flatnonzero(active.any(1)):
            m = np.where(active[j], np.nanmean(E_so_far[j], axis=1), np.inf)
            active[j] = False
            active[j, np.argsort(m, kind="stable")[:keep]] = True


def draw_policy(settings: ScoreSettings):
    if settings.stages:
        return SuccessiveElimination(settings.stages)
    if settings.early_stop != "off":
        return EarlyStop(settings.round_size, settings.stop_alpha)
    return EveryDraw()


# ----------------------------------------------------------------------------- the engine


def _why(exc: BaseException) -> str:
    """A compile failure's reason in one line: the backend's own exception where dynamo wraps it
    (BackendCompilerFailed says only "backend='inductor' raised:" on its first line), else the message."""
    inner = getattr(exc, "inner_exception", None) or exc
    lines = [line for line in str(inner).splitlines() if line.strip()]
    return f"{type(inner).__name__}: {lines[0][:200] if lines else ''}"


class CompiledOrEager:
    """torch.compile(forward), falling back for good to the eager forward, with a warning that says why, when
    compiling fails: at torch.compile itself, or lazily at a call (a missing compiler, an unsupported op, a failed
    recompilation for a new batch shape). A failure the eager forward repeats (bad input) or out of memory is
    raised as it is, not blamed on the compiler. `error` holds the reason once it has fallen back."""

    def __init__(self, forward):
        self.forward, self.error = forward, None
        try:
            self.compiled = torch.compile(forward)
        except Exception as exc:
            self._fall_back(exc)

    def _fall_back(self, exc):
        self.error = _why(exc)
        warnings.warn(f"torch.compile failed ({self.error}); scoring eagerly", stacklevel=4)

    def __call__(self, *args):
        if self.error is not None:
            return self.forward(*args)
        try:
            return self.compiled(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # inductor raises many types (BackendCompilerFailed, OSError, ...)
            out = self.forward(*args)  # raises if the eager forward fails too: then it was not the compiler
            self._fall_back(exc)
            return out


class ScoringEngine:
    def __init__(self, model, settings: ScoreSettings, device=None):
        self.device = torch.device(device) if device else default_device()
        self.model = model.to(self.device).eval()
        self.settings = settings
        self.precision = resolve_precision(settings.mixed_precision, self.device)
        if self.device.type == "cuda" or self.precision == "bf16":
            # the layout bf16 CPU and GPU convolution kernels prefer (engine speeds: results/benchmarks/scoring.csv)
            self.model.to(memory_format=torch.channels_last)
        # a compiled copy of the forward: the caller's model itself stays eager
        self.predict = CompiledOrEager(self.model.predict) if settings.compile else self.model.predict

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.model.encode(b.to(self.device)).float().cpu() for b in x.split(self.settings.batch_size)]
        )

    @torch.inference_mode()
    def _squared_errors(self, z0, image_ids, todo: np.ndarray):
        """Yield (triples, per-pixel squared eps errors) batch by batch for the (image, class, draw) triples where
        the boolean mask todo (n, C, K) is set, in (image, draw, class) order. triples: (m, 3) rows (j, c, k)."""
        jkc = np.argwhere(np.asarray(todo, dtype=bool).transpose(0, 2, 1))  # (image, draw, class) order
        sched = self.model.schedule
        for b in range(0, len(jkc), self.settings.batch_size):
            batch = jkc[b : b + self.settings.batch_size]
            noise = {}  # one (u, eps) per (image, draw), shared by its classes
            for j, k, _ in batch.tolist():
                if (j, k) not in noise:
                    image = int(image_ids[j])
                    noise[(j, k)] = (
                        draw_time(self.settings, image, k),
                        draw_noise(self.settings, image, k, z0.shape[1:]),
                    )
            u = torch.tensor([noise[(j, k)][0] for j, k, _ in batch.tolist()], dtype=torch.float32, device=self.device)
            eps = torch.stack([noise[(j, k)][1] for j, k, _ in batch.tolist()]).to(self.device)
            x_t = sched.add_noise(z0[batch[:, 0]].to(self.device), eps, u)
            labels = torch.as_tensor(batch[:, 2], device=self.device)
            if self.device.type == "cuda" or self.precision == "bf16":
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                pred = self.predict(x_t, u, labels)
            eps_hat, _ = sched.eps_and_x0(pred.float(), x_t, u)
            yield batch[:, [0, 2, 1]], (eps_hat - eps).pow(2)

    def evaluate(self, z0, image_ids, todo: np.ndarray, E: np.ndarray) -> np.ndarray:
        """Write E[j, c, k] = mean over pixels of the squared eps error for every (j, c, k) where the boolean mask
        todo (n, C, K) is set; E (n, C, K) is filled in place and returned. z0: (n, ...) encoded images;
        image_ids: their global indices, which (with the draw index) seed each draw."""
        for jck, err in self._squared_errors(z0, image_ids, todo):
            E[jck[:, 0], jck[:, 1], jck[:, 2]] = err.flatten(1).mean(1).float().cpu().numpy()
        return E

    def mean_error_maps(self, z0, image_ids, todo: np.ndarray) -> np.ndarray:
        """(n, C, *spatial) per-pixel squared eps error (mean over channels), averaged over the draws set in the
        boolean mask todo (n, C, K) of each image and class (every class of an image must have the same draws)."""
        maps = {}
        for jck, err in self._squared_errors(z0, image_ids, todo):
            for (j, c, k), m in zip(jck.tolist(), err.mean(1).float().cpu().numpy()):
                maps[(j, k, c)] = m
        n, C, _ = todo.shape
        out = np.zeros((n, C, *z0.shape[2:]), dtype=np.float32)
        for j in range(n):
            draws = np.flatnonzero(todo[j, 0])
            if len(draws) and not (todo[j] == todo[j, :1]).all():
                raise ValueError(f"image {j}: every class needs the same draws for a mean error map")
            if len(draws):
                out[j] = np.stack([[maps[(j, k, c)] for c in range(C)] for k in draws]).mean(0)
        return out

    def score_images(self, z0, image_ids, n_classes) -> tuple[np.ndarray, np.ndarray]:
        """E and U for a handful of images, drawn in rounds; the settings' policy (every draw, early stopping or
        successive elimination) decides after each round which (image, class) pairs go on."""
        n, K = len(z0), self.settings.n_draws
        E = np.full((n, n_classes, K), np.nan, dtype=np.float32)
        U = np.array([[draw_time(self.settings, int(i), k) for k in range(K)] for i in image_ids], dtype=np.float32)
        policy = draw_policy(self.settings)
        active = np.ones((n, n_classes), dtype=bool)
        start = 0
        for r, stop in enumerate(policy.round_ends(K)):
            todo = np.zeros(E.shape, dtype=bool)
            todo[:, :, start:stop] = active[:, :, None]
            self.evaluate(z0, image_ids, todo, E)
            policy.update(E[:, :, :stop], active, r, K - stop)
            start = stop
        return E, U

    def score(
        self, x: torch.Tensor, n_classes: int, cache_dir=None, image_offset: int = 0, desc: str = "score"
    ) -> DrawErrors:
        """Score images x (N, C, H, W) in [-1, 1]. With cache_dir, chunks are written there as they finish
        and reused on a re-run; with several processes each scores its share of chunks. The cache folder is
        locked while this runs (a second job gets a CheckpointError)."""
        cache = Path(cache_dir) if cache_dir else None
        with main_process_lock(cache) if cache is not None else nullcontext():
            return self._score(x, n_classes, cache, image_offset, desc)

    def _score(self, x, n_classes, cache, image_offset, desc) -> DrawErrors:
        state = PartialState()
        N, cs, fingerprint = len(x), self.settings.chunk_size, None
        if cache is not None:
            fingerprint, cs = self._open_cache(cache, x, n_classes)
        chunks = [(c0, min(c0 + cs, N)) for c0 in range(0, N, cs)]
        mine = chunks[state.process_index :: state.num_processes]
        results = {}
        bar = tqdm(total=N, desc=desc, unit="img", disable=not state.is_main_process, smoothing=0.1)
        for c0, c1 in mine:
            path = cache / f"chunk_{c0:07d}.npz" if cache is not None else None
            if path is not None and path.exists():
                _read_chunk(path, fingerprint, c0, c1, n_classes, self.settings.n_draws)  # refuse a foreign chunk now
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
                _read_chunk(cache / f"chunk_{c0:07d}.npz", fingerprint, c0, c1, n_classes, self.settings.n_draws)
                for c0, c1 in chunks
            ]
        return DrawErrors(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _open_cache(self, cache: Path, x: torch.Tensor, n_classes: int) -> tuple[str, int]:
        """A cache directory belongs to one (settings, model, data); anything else is refused, not mixed in.
        Returns its fingerprint (stamped into every chunk) and its chunk size: a folder keeps the chunking it was
        made with (E does not depend on it), so a re-run with another chunk size reuses it correctly."""
        info = {
            "format": CACHE_FORMAT,
            "settings": self.settings.key(),
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
            tmp.write_text(
                json.dumps({**info, "fingerprint": fingerprint, "chunk_size": self.settings.chunk_size}, indent=1)
            )
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
