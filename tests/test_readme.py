"""The README is a front page a student reads in five minutes; the rest lives in docs/, linked from it."""
import re

from conftest import ROOT

FRONT_PAGE_LINES = 120  # issue 25: the README's front page at most this long


def relative_links(path):
    """Every relative link target in a markdown file, without its #anchor."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#")[0] for t in targets if not re.match(r"\w+://", t) and not t.startswith("#")]


def test_the_readme_is_a_short_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= FRONT_PAGE_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_link_in_the_readme_and_the_docs_exists():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in relative_links(page):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links {target}, which does not exist"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t).resolve() for t in relative_links(ROOT / "README.md")}
    pages = sorted((ROOT / "docs").glob("*.md"))
    orphans = [page.name for page in pages if page.resolve() not in linked]
    assert pages and not orphans, f"docs pages the README does not link: {orphans}"
