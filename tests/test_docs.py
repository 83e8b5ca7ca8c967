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


def test_package_docstring_lists_every_module():
    """The package docstring is the map of the code: a module added without a line there fails."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    listed = set(re.findall(r"^ {4}([a-z_]+) ", doc, re.M))
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert modules - listed == set() and listed - modules == set()
