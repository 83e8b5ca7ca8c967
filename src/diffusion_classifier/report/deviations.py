"""The table of deviations from the authors' code (docs/deviations.md), read back so that it can be checked and
summarised: every setting it names (`section.key: value`) must hold in the profile of its column. A `paper` cell is in
one of three states: "= authors" (fully the authors' setting), "= authors except" (theirs but for a named detail) or
neither (differs); "= authors" may not name a difference ("except", "instead", ...: that is "= authors except"), and
a row that is not fully "= authors" must give a reason.

rows          the table as dicts (what, authors, cpu, paper, why)
named_values  the `section.key: value` settings a cell names
state         a row's paper state: SAME, EXCEPT or DIFFERS
mismatches    cells whose named settings differ from the profile's values, "= authors" cells that name a difference,
              and rows not fully "= authors" without a reason (empty = the table tells the truth)
summary_line  one generated sentence for SUMMARY.md
"""

import re
from pathlib import Path

from .. import profiles
from ..core.paths import project_root

HEADING = re.compile(r"^#{1,2} Deviations from the authors' code\s*$", re.M)
DOC = "docs/deviations.md"
COLUMNS = ("what", "authors", "cpu", "paper", "why")
SETTING = re.compile(r"`([a-z_]+)\.([a-z_]+): ([^`]+)`")
NO_REASON = ("", "—", "-")
SAME, EXCEPT, DIFFERS = "= authors", "= authors except", "differs"
# wording that names a difference: an "= authors" cell containing it must be marked "= authors except"
EXCEPT_LIKE = re.compile(r"\b(except|instead|but|unlike|differs?|different|whereas|not matched|apart from)\b", re.I)


def rows(path: Path | None = None) -> list[dict]:
    path = path or project_root() / DOC
    text = path.read_text()
    if not (m := HEADING.search(text)):
        raise ValueError(f"{path}: no section 'Deviations from the authors' code'")
    section = text[m.end() :].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]  # past the header and its rule
    out = []
    for ln in lines:
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS):
            raise ValueError(f"{path}: deviations row has {len(cells)} cells, expected {len(COLUMNS)}: {ln[:80]}")
        out.append(dict(zip(COLUMNS, cells)))
    return out


def named_values(cell: str) -> list[tuple[str, str, str]]:
    return SETTING.findall(cell)


def _same(value, text: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value) == text
    try:
        return float(value) == float(text)
    except ValueError:
        return False


def profile_for(row: dict, column: str) -> dict:
    """The settings a cell describes: the `cpu` profile (pneumonia), or `paper` (with PAPER_DIT on the DiT's row)."""
    if column == "cpu":
        return profiles.get_profile("cpu", "pneumonia")
    return profiles.get_profile("paper", "pneumonia", profiles.PAPER_DIT if "DiT" in row["what"] else None)


def state(row: dict) -> str:
    """SAME ("= authors"), EXCEPT ("= authors except": theirs but for a named detail) or DIFFERS: the paper cell's."""
    if EXCEPT in row["paper"]:
        return EXCEPT
    return SAME if SAME in row["paper"] else DIFFERS


def mismatches(table: list[dict]) -> list[str]:
    out = []
    for row in table:
        for column in ("cpu", "paper"):
            cfg = profile_for(row, column)
            for section, key, text in named_values(row[column]):
                if section not in cfg or key not in cfg[section]:
                    out.append(f"{row['what']} ({column}): `{section}.{key}` is not a setting")
                elif not _same(cfg[section][key], text.strip()):
                    out.append(f"{row['what']} ({column}): `{section}.{key}` is {cfg[section][key]!r}, not {text!r}")
        if state(row) == SAME and (m := EXCEPT_LIKE.search(row["paper"])):
            out.append(
                f"{row['what']} (paper): says '= authors' but names a difference ({m.group(0)!r}); "
                "mark it '= authors except'"
            )
        if state(row) != SAME and row["why"] in NO_REASON:
            out.append(f"{row['what']}: the paper profile differs from the authors' and the row gives no reason")
    return out


def summary_line(table: list[dict]) -> str:
    by = {k: [r["what"] for r in table if state(r) == k] for k in (SAME, EXCEPT, DIFFERS)}
    return (
        f"The deviations table (`docs/deviations.md`) has {len(table)} rows: the `paper` profile matches the "
        f"authors' code fully in {len(by[SAME])} ({'; '.join(by[SAME])}), except for a named detail in "
        f"{len(by[EXCEPT])} ({'; '.join(by[EXCEPT])}) and differs, with a reason, in {len(by[DIFFERS])} "
        f"({'; '.join(by[DIFFERS])}); "
        "the `cpu` profile differs in scale throughout (small models, 32/64 px, N = 51)."
    )
