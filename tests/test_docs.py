"""The front door and the docs: short, linked, and naming what exists."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "diffusion_classifier"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def broken_links(md: Path) -> list[str]:
    """Relative link targets in a Markdown file that do not exist (web links are not followed)."""
    out = []
    for target in LINK.findall(md.read_text()):
        if not re.match(r"[a-z]+://", target) and not (md.parent / target).exists():
            out.append(f"{md.name}: {target}")
    return out


def long_lines(md: Path, limit: int = 200) -> list[int]:
    return [i for i, line in enumerate(md.read_text().splitlines(), 1) if len(line) > limit]


def test_readme_is_a_front_door():
    """README ≤ 150 lines, none over 200 characters (a README that regrows into a lab notebook fails)."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 150
    assert long_lines(readme) == []


def test_every_relative_link_in_readme_and_docs_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 5
    assert [b for p in pages for b in broken_links(p)] == []


def test_a_broken_link_is_found(tmp_path):
    """The link check can fail: a page linking to a missing file is reported, an existing one is not."""
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [gone](missing.csv) [web](https://example.org/a.md) [anchor](there.md#x)")
    assert broken_links(page) == ["page.md: missing.csv"]


def listed_modules(doc: str) -> set[str]:
    """The modules a package docstring's tree lists, as paths under the package: `    name  ...` at the top,
    `    stage/  ...` opening a subpackage and `        name  ...` inside it."""
    listed, stage = set(), None
    for line in doc.splitlines():
        if m := re.match(r"^ {4}([a-z_]+)(/?) ", line):
            stage = m[1] if m[2] else None
            if not m[2]:
                listed.add(f"{m[1]}.py")
        elif (m := re.match(r"^ {8}([a-z_]+) ", line)) and stage:
            listed.add(f"{stage}/{m[1]}.py")
    return listed


def test_package_docstring_lists_every_module():
    """The package docstring is the map of the code: a module added without a line there fails, and so does a line
    naming a module that is not there (every .py under the package, in its subpackage)."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    listed = listed_modules(doc)
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert modules - listed == set() and listed - modules == set()


def test_the_module_list_check_can_fail():
    """A missing line and a line for a module that is not there are both seen."""
    doc = "Top\n\n    profiles  settings\n    core/     plumbing\n        paths  where\n        ghost  gone\n"
    assert listed_modules(doc) == {"profiles.py", "core/paths.py", "core/ghost.py"}


# A number that reads as a result: a decimal like 0.963 (AUC, accuracy, p, rho), "p = ...", minutes, a percentage
# or a speed-up ratio. Budgets ("≤ 90 min") and "95% CI" are not results.
RESULT = re.compile(
    r"(?<![\w.])[-−+]?0\.\d{2,}|\bp = \d|(?<!≤ )\b\d+(?:\.\d+)?\s*min\b|\b\d+(?:\.\d+)?\s?%(?! CI)|\b\d+\.\d+x\b"
)
SOURCE = re.compile(r"results/|\w+\.(?:csv|json)\b|SUMMARY\.md|DETAILS\.md")


def typed_results(text: str) -> list[str]:
    return [m.group(0) for m in RESULT.finditer(text)]


def unsourced_paragraphs(text: str) -> list[str]:
    """Paragraphs that quote a result without naming the committed file it comes from (code blocks: settings)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return [p[:120] for p in re.split(r"\n\s*\n", prose) if typed_results(p) and not SOURCE.search(p)]


def test_readme_types_no_result():
    """The README quotes no result (they drift: it once said 75.3 min where provenance said 75.1); it links
    SUMMARY.md and the docs instead."""
    assert typed_results((ROOT / "README.md").read_text()) == []


def test_docs_name_the_source_of_every_result_they_quote():
    """docs/*.md may quote a committed number only in a paragraph that names the file it comes from (a table under
    results/, provenance.json, SUMMARY.md or DETAILS.md), so a reader can check it there."""
    found = {p.name: unsourced_paragraphs(p.read_text()) for p in sorted((ROOT / "docs").glob("*.md"))}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_result_rules_can_fail():
    assert typed_results("AUC 0.963 (p = 0.052), 75.3 min, 23.8 %, 1.18x") == [
        "0.963",
        "p = 0",
        "75.3 min",
        "23.8 %",
        "1.18x",
    ]
    assert typed_results("budget ≤ 90 min; 95% CI; N = 51; 32 px") == []
    assert unsourced_paragraphs("AUC 0.963.\n\nAUC 0.963 (classification.csv).\n\n```\n--alpha 0.001\n```") == [
        "AUC 0.963."
    ]


def test_every_registered_marker_is_used_and_the_fast_command_names_them():
    """The README's fast command leaves out the markers pyproject registers; a marker registered but put on no test
    (so the fast command would still run those tests) fails here."""
    import tomllib

    markers = [m.split(":")[0] for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
               ["ini_options"]["markers"]]  # fmt: skip
    sources = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert set(markers) == {"notebooks", "slow", "browser", "multiprocess"}
    assert [m for m in markers if f"pytest.mark.{m}" not in sources] == []
    readme = (ROOT / "README.md").read_text()
    assert all(f"not {m}" in readme for m in markers)
