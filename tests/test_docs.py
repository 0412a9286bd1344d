"""The front page and docs/ keep their word on where things are: every relative link and #anchor in
README.md and docs/*.md leads to an existing file and heading, and every `python -c` snippet in them
compiles and imports only modules that exist (imported, never run)."""
import ast
import glob
import importlib
import os
import re
import shlex
import unicodedata

import pytest
from conftest import ROOT

PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose(text):
    """The text outside fenced code blocks, inline code spans and indented code blocks."""
    text = FENCE.sub("", text)
    text = re.sub(r"(?m)^(?: {4}|\t).*$", "", text)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)


def slug(heading):
    """GitHub's anchor of a heading: its rendered text (links by their text, code spans by their content,
    no emphasis markers), lower case, every character but letters, digits, spaces, hyphens and
    underscores dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"(\*+|`+)", "", text).strip().lower()
    kept = (c for c in text if c in " -_" or unicodedata.category(c)[0] == "L" or unicodedata.category(c) == "Nd")
    return "".join(kept).replace(" ", "-")


def anchors(path):
    """The anchors of a Markdown file's headings, numbered as GitHub numbers repeated ones (-1, -2, ...)."""
    seen, out = {}, set()
    for line in FENCE.sub("", open(path, encoding="utf-8").read()).splitlines():
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def links(path):
    return LINK.findall(prose(open(path, encoding="utf-8").read()))


def snippets(path):
    """The code of every `python -c "..."` command in a page, as the shell would pass it."""
    out = []
    for line in open(path, encoding="utf-8").read().splitlines():
        if "python -c " not in line:
            continue
        lexer = shlex.shlex(line[line.index("python -c "):], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        out.append(list(lexer)[2])
    return out


def test_the_anchor_rule_is_githubs():
    assert slug("Coarse to fine (`--levels`)") == "coarse-to-fine---levels"
    assert slug("The default: Gram + spectrum, then the refinement") == "the-default-gram--spectrum-then-the-refinement"
    assert slug("Tests (`tests/test_texnet.py`)") == "tests-teststest_texnetpy"
    assert slug("Speed: [bench.py](x.md), **2.38x**") == "speed-benchpy-238x"


def test_the_pages_are_found_and_link_somewhere():
    assert len(PAGES) > 10
    assert sum(len(links(p)) for p in PAGES) > 100


def broken_links(page):
    """Each relative link of a page whose file or heading does not exist, with the reason."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not checked here
            continue
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
        if not os.path.exists(dest):
            broken.append(f"{target}: no file {os.path.relpath(dest, ROOT)}")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(dest, ROOT)}")
    return broken


def test_a_missing_file_or_heading_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `flag` (x)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-flag-x) [no file](gone.md) [no heading](other.md#a-flag)\n"
                    "![picture](other.md) [self](#title) [web](https://example.org/x#y)\n"
                    "`[in code](gone.md)`\n\n```\n[in a block](gone.md)\n```\n\n# Title\n")
    assert broken_links(str(page)) == [f"gone.md: no file {os.path.relpath(tmp_path / 'gone.md', ROOT)}",
                                       f"other.md#a-flag: no heading #a-flag in {os.path.relpath(tmp_path / 'other.md', ROOT)}"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page)


def test_python_snippets_compile_and_import_existing_modules():
    codes = [(p, c) for p in PAGES for c in snippets(p)]
    assert codes  # the pages do hold snippets, so the check below is not vacuous
    for page, code in codes:
        tree = compile(code, f"<python -c in {os.path.relpath(page, ROOT)}>", "exec", ast.PyCF_ONLY_AST)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        importlib.import_module(f"{node.module}.{alias.name}")
