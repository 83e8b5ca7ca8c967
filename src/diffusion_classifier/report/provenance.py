"""What ran, where, from which code: results/provenance.json, written by run_all.sh through this module's CLI.

    python -m diffusion_classifier.report.provenance start --profile cpu --seed 0 --tasks "pneumonia melanoma"
    python -m diffusion_classifier.report.provenance notebook 01_data <start epoch seconds>
    python -m diffusion_classifier.report.provenance finish
A partial run (run_all.sh --from/--to/--only) starts with --keep: the other notebooks' records stay, and each
notebook's record carries the commit it ran at, so a results folder assembled over several runs says so.
"""

import argparse
import datetime as dt
import importlib.metadata as md
import json
import platform
import subprocess
import sys
import time

import torch

from ..core.device import bf16_pays_off, default_device, device_name, forced_fp32
from ..core.paths import project_root, results_dir
from ..profiles import get_profile

PACKAGES = (
    "torch",
    "diffusers",
    "accelerate",
    "monai",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "seaborn",
    "matplotlib",
    "papermill",
    "safetensors",
    "transformers",
    "peft",
)


def git_commit() -> dict:
    """HEAD and whether the working tree differs from it, new files included (a notebook or module not yet committed
    makes a run dirty); results/ is left out, since a run rewrites it."""

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=normal", "--", ".", ":!results")),
    }


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            versions[p] = None
    device = device_name(default_device())
    cpu = getattr(torch, "cpu", None)
    cpu_bf16 = {
        "amx": bool(cpu and cpu._is_amx_tile_supported()),
        "avx512_bf16": bool(cpu and cpu._is_avx512_bf16_supported()),
        # DC_NO_BF16=1: 'auto' precision ran in fp32 although the CPU has bf16 (device.bf16_pays_off)
        "forced_fp32": forced_fp32(),
        "auto_precision": "bf16" if bf16_pays_off(default_device()) else "fp32",
    }
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "cpu_bf16": cpu_bf16,
        "gpus": torch.cuda.device_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": versions,
    }


def _path():
    return results_dir() / "provenance.json"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--profile", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tasks", default="")
    s.add_argument("--data-root", default="")
    s.add_argument("--keep", action="store_true", help="keep the records of notebooks this run does not execute")
    n = sub.add_parser("notebook")
    n.add_argument("name")
    n.add_argument("started", type=float, help="start time (seconds since the epoch)")
    n.add_argument("--parameters", default="{}")
    n.add_argument("--commit-at-start", default="", help="HEAD when the notebook started (run_all.sh passes it)")
    n.add_argument("--dirty-at-start", default="", help="'1' if the tree differed from HEAD when it started")
    sub.add_parser("finish")
    a = ap.parse_args(argv)
    if a.cmd == "start":
        old = json.loads(_path().read_text()) if a.keep and _path().exists() else {}
        rec = {
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "profile": a.profile,
            "seed": a.seed,
            "tasks": a.tasks.split(),
            "git": git_commit(),
            "environment": environment(),
            "settings": {t: get_profile(a.profile, t, {"seed": a.seed}) for t in a.tasks.split()},
            "notebooks": old.get("notebooks", []),
            "superseded": old.get("superseded", []),
        }
        _path().write_text(json.dumps(rec, indent=1))
    else:
        rec = json.loads(_path().read_text())
        if a.cmd == "notebook":
            # a re-run replaces the notebook's record; the earlier one moves to `superseded` (e.g. the from-scratch
            # training time stays on record when a later run only reloads the finished model)
            rec.setdefault("superseded", []).extend(n for n in rec["notebooks"] if n["name"] == a.name)
            rec["notebooks"] = [n for n in rec["notebooks"] if n["name"] != a.name]
            rec["notebooks"].append(
                {
                    "name": a.name,
                    "wall_s": round(time.time() - a.started, 1),
                    "git": {
                        **git_commit(),
                        "commit_at_start": a.commit_at_start or None,
                        "dirty_at_start": {"1": True, "0": False}.get(a.dirty_at_start),
                    },
                    "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "parameters": json.loads(a.parameters),
                }
            )
            rec["notebooks"].sort(key=lambda n: n["name"])
        else:
            rec["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            rec["total_wall_s"] = round(sum(n["wall_s"] for n in rec["notebooks"]), 1)
        _path().write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
