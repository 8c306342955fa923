"""MkDocs hooks (mkdocs.yml ``hooks:``): serve the repository's benchmark result files inside the site, and drop the
Sphinx roles (``:class:``) of the docstrings from the API reference.

The pages link to them as ``../benchmarks/results/<file>``, the path that works when one reads docs/*.md in the
repository. Here the files are added to the site under ``benchmarks/results/`` and those links are rewritten to
it, so ``mkdocs build --strict`` checks them like any other link (a missing result file fails the build).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
SERVED = "benchmarks/results"  # repository folder served at the same path in the site (its top level only)
SUFFIXES = (".md", ".csv")
# Sphinx roles in the docstrings (":class:`~a.B`"), which mkdocstrings leaves as text before the code span
ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):(<code>)~?")


def on_files(files: Files, config) -> Files:
    for path in sorted((ROOT / SERVED).iterdir()):
        if path.is_file() and path.suffix in SUFFIXES:
            files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri.startswith(SERVED):
        return markdown
    # pages live at the top of docs/, so ../benchmarks/results/ in the repository is benchmarks/results/ in the site
    return markdown.replace(f"](../{SERVED}/", f"]({SERVED}/")


def on_page_content(html: str, page, config, files) -> str:
    return ROLE.sub(r"\1", html)
