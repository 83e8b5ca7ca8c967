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
