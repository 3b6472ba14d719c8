"""The documentation holds together: README.md links every page of docs/, and every relative link in
README.md, docs/*.md, CONTRIBUTING.md and references/README.md points at a file that exists (and, with a
#fragment, at one of its headings)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside fenced code blocks."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return LINK.findall(text)


def anchors(path: Path) -> set[str]:
    """GitHub's ids for a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    seen: dict[str, int] = {}
    ids = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        ids.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def test_readme_links_every_docs_page():
    assert PAGES, "docs/ has pages"
    linked = {(ROOT / target.split("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert [p.name for p in PAGES if p.resolve() not in linked] == []


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    broken = []
    for source in [ROOT / "README.md", *PAGES, ROOT / "CONTRIBUTING.md", ROOT / "references" / "README.md"]:
        for target in links(source):
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked here
                continue
            file, _, fragment = target.partition("#")
            path = (source.parent / file).resolve() if file else source
            if not path.exists():
                broken.append(f"{source.relative_to(ROOT)}: {target}")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                broken.append(f"{source.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_every_docs_page_starts_with_its_purpose_and_a_link_back():
    for page in PAGES:
        title, blank, purpose, back = page.read_text().splitlines()[:4]
        assert title.startswith("# ") and blank == "" and purpose, page.name
        assert back == "[Back to the README](../README.md)", page.name
