#!/usr/bin/env python3
"""Check the book without mdbook: every page SUMMARY.md names exists, and every relative
link in every page points at an existing page and, with #anchor, at an existing heading
(ids made the way mdbook makes them). Exit 1 and name each broken link otherwise.

    python3 book/check-links.py            # from the repository root
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def prose_lines(text):
    """Lines outside fenced code blocks, with inline code removed."""
    fence = None
    for line in text.splitlines():
        s = line.lstrip()
        if fence is None and (s.startswith("```") or s.startswith("~~~")):
            fence = s[:3]
            continue
        if fence is not None:
            if s.startswith(fence):
                fence = None
            continue
        yield re.sub(r"`[^`]*`", "", line)


def heading_ids(text):
    ids, seen = set(), {}
    fence = None
    for line in text.splitlines():
        s = line.lstrip()
        if fence is None and (s.startswith("```") or s.startswith("~~~")):
            fence = s[:3]
            continue
        if fence is not None:
            if s.startswith(fence):
                fence = None
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).replace("`", "")
        base = "".join(
            c for c in title.strip().lower().replace(" ", "-") if c.isalnum() or c in "-_"
        )
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.add(base if n == 0 else f"{base}-{n}")
    return ids


def main():
    problems = []
    pages = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".md"):
                p = os.path.join(root, f)
                with open(p, encoding="utf-8") as fh:
                    pages[os.path.normpath(p)] = fh.read()
    summary = os.path.join(SRC, "SUMMARY.md")
    if summary not in pages:
        print("book/src/SUMMARY.md is missing")
        return 1
    for page, text in sorted(pages.items()):
        rel = os.path.relpath(page, SRC)
        for line in prose_lines(text):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                dest = page if path == "" else os.path.normpath(
                    os.path.join(os.path.dirname(page), path))
                if dest not in pages:
                    problems.append(f"{rel}: link to missing page {target}")
                    continue
                if anchor and anchor not in heading_ids(pages[dest]):
                    problems.append(f"{rel}: no heading #{anchor} in {os.path.relpath(dest, SRC)}")
    linked = {os.path.normpath(os.path.join(SRC, t.partition("#")[0]))
              for line in prose_lines(pages[summary]) for t in LINK.findall(line)}
    for page in sorted(set(pages) - linked - {summary}):
        problems.append(f"{os.path.relpath(page, SRC)}: not in SUMMARY.md")
    for p in problems:
        print(p)
    print(f"book: {len(pages)} pages, {len(problems)} broken links")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
