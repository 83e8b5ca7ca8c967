"""Write results/SUMMARY.md (the four claims on one page, `claims.page`), results/DETAILS.md (every other generated
table and sentence, `details.details`) and results/figures/claims.png from results/tables/*.csv and
provenance.json (nothing in them is typed by hand).

python -m diffusion_classifier.report.summary
"""

from ..core.paths import results_dir
from . import claims, figures
from .details import _headline, _provenance, _provenance_line, details


def _tasks(prov: dict) -> list[str]:
    return [t for t in prov.get("tasks", []) if t in prov.get("settings", {})]


def build() -> str:
    """SUMMARY.md: the four claims first."""
    prov = _provenance()
    tasks = _tasks(prov)
    return claims.page(results_dir(), tasks, *_headline(prov, tasks), _provenance_line(prov, superseded=False))


def main():
    res = results_dir()
    prov = _provenance()
    tasks = _tasks(prov)
    rows = claims.claims_table(res, tasks, *_headline(prov, tasks))
    figures.claims_forest(rows, tasks, res / "figures" / "claims.png", margin=claims.AUC_MARGIN)
    (res / "SUMMARY.md").write_text(build())
    (res / "DETAILS.md").write_text(details())


__all__ = ["build", "details", "main"]

if __name__ == "__main__":
    main()
