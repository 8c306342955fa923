"""Every relative link of README.md points to a file of the repository, and an anchor into a docs page names one of
that page's headings (the documentation site itself is checked by `make docs`: mkdocs build --strict); every stock
method has its picture on the Explain page."""

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (MkDocs) gives a heading."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # no headings inside code blocks
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *#*$", text, re.M)}


def broken_links(md: Path) -> list[str]:
    """The relative links of ``md`` whose file is missing, or whose #anchor is not a heading of a Markdown target."""
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not a file of the repository
            continue
        path, _, anchor = target.partition("#")
        file = (md.parent / path).resolve() if path else md
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    return broken


def test_every_relative_link_of_the_readme_resolves():
    readme = ROOT / "README.md"
    assert len(LINK.findall(readme.read_text(encoding="utf-8"))) >= 10  # the front page links into the site
    assert broken_links(readme) == []


def test_the_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Which method when\n\n```\n# not a heading\n```\n")
    md = tmp_path / "README.md"
    md.write_text("[ok](docs/page.md#which-method-when) [gone](docs/gone.md) [bad](docs/page.md#not-a-heading) "
                  "![img](docs/x.png) [web](https://example.org/x.md) [self](#nowhere)\n")
    assert broken_links(md) == [
        f"docs/gone.md: no file {tmp_path / 'docs' / 'gone.md'}",
        "docs/page.md#not-a-heading: no heading #not-a-heading in page.md",
        f"docs/x.png: no file {tmp_path / 'docs' / 'x.png'}",
        "#nowhere: no heading #nowhere in README.md",
    ]


def test_the_readme_is_a_front_page():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024


def test_every_stock_method_has_its_picture_on_the_explain_page():
    from repcam.stock import METHODS

    page = (ROOT / "docs" / "explain.md").read_text(encoding="utf-8")
    pictured = set(re.findall(r"!\[[^\]]*\]\(methods/([\w-]+)\.png\)", page))
    assert pictured == set(METHODS), "rerun docs/make_method_figures.py and add the method to docs/explain.md"
    for name in METHODS:
        path = ROOT / "docs" / "methods" / f"{name}.png"
        assert path.is_file() and path.stat().st_size < 200_000, path
