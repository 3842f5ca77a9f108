"""Browsable results (xaitf.reports): the Markdown -> HTML converter, report.html beside every
study's report.md, and results/index.html (every study and run, relative links that exist)."""
import json
import os
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from xaitf import reports
from xaitf.studies import common as C


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.links, self.text, self.script = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.script |= tag == "script"
        self.links += [a[k] for k in ("href", "src") if a.get(k)]

    def handle_data(self, data):
        self.text.append(data)


def parse(text):
    p = Page()
    p.feed(text)
    return p


def check_links(page_path):
    p = parse(Path(page_path).read_text())
    assert not p.script
    for link in p.links:
        assert "://" not in link and not os.path.isabs(link), link
        assert (Path(page_path).parent / unquote(link)).exists(), link
    return p


def test_markdown_subset():
    md = ("# Title *x*\n\nIntro with `a | b` code, **bold**, a [link](b.json) and 2 * 3 * 4.\n\n"
          "## Table\n\n| method | value |\n|---|---|\n| grad \\| ig | 0.5 |\n| `x<y` | ![m](m.png) |\n\n"
          "- one\n- two\n  wrapped\n\n1. first\n2. second\n\n```\n<raw> & code\n```\n")
    html = reports.markdown_to_html(md, title="T")
    p = parse(html)
    for tag in ("h1", "h2", "table", "th", "td", "code", "strong", "a", "img", "ul", "ol", "li", "pre"):
        assert tag in p.tags, tag
    assert p.tags.count("tr") == 3 and p.tags.count("li") == 4
    assert "<td>grad | ig</td>" in html                     # escaped bar: one cell
    assert "<code>a | b</code>" in html and "<code>x&lt;y</code>" in html
    assert "<pre><code>&lt;raw&gt; &amp; code</code></pre>" in html
    assert "2 * 3 * 4" in html                               # no stray italics
    assert "<li>two wrapped</li>" in html
    assert p.links == ["b.json", "m.png"] and not p.script


def test_png_helpers(tmp_path):
    m = np.array([[-2.0, 0.0], [1.0, np.nan]], np.float32)
    rgb = reports.map_rgb(m)
    assert rgb[0, 0].tolist() == [0, 0, 255] and rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0].tolist() == [255, 128, 128] and rgb[1, 1].tolist() == [153, 153, 153]
    img = reports.image_rgb(np.array([[[0.0], [1.0]]], np.float32))
    assert img.shape == (1, 2, 3) and img[0, 1].tolist() == [255, 255, 255]
    path = reports.write_png(tmp_path / "a.png", rgb)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(path)), rgb)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def fake_study_module(name):
    """A study module that writes a figure, results.json and a report through xaitf.studies.common."""
    mod = types.ModuleType(f"fake_{name}")

    def run(args):
        folder = C.run_folder(args.out, name)
        from PIL import Image

        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "fig.png")
        C.write_json(folder, "results", {"seconds": 1.5, "folder": folder})
        t = C.Table(["quantity", "xaitf", "study"])
        t.add("accuracy", 0.91234, 0.9)
        t.add("a | b", 1, 2)
        C.write_report(folder, f"Study {name}", [("Numbers", t), ("Figure", C.image_link(folder / "fig.png", folder))],
                       preamble=["Command: `x`."])
        return {"folder": folder}

    mod.run = run
    return mod


def test_studies_write_report_html_and_the_index(tmp_path, monkeypatch, capsys):
    from xaitf import studies
    from xaitf.studies.__main__ import main

    monkeypatch.setitem(studies.STUDIES, "fake", "fake_fake")
    monkeypatch.setitem(sys.modules, "fake_fake", fake_study_module("fake"))
    out = tmp_path / "results"
    assert main(["fake", "--out", str(out)]) == 0
    assert main(["fake", "--out", str(out)]) == 0          # a second run: both are listed
    folders = sorted(p for p in (out / "fake").iterdir() if p.is_dir())
    assert len(folders) == 2
    for folder in folders:
        page = check_links(folder / "report.html")
        html = (folder / "report.html").read_text()
        assert "fig.png" in page.links and "results.json" in page.links
        assert "<td>a | b</td>" in html and "Settings and versions" in html and "numpy" in html
        assert C.PARTIAL not in html
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    printed = capsys.readouterr().out
    assert f"index: {out / 'index.html'}" in printed
    index = check_links(out / "index.html")
    assert sum(l.endswith("report.html") for l in index.links) == 2
    text = (out / "index.html").read_text()
    assert "Study fake" in text and "0.9123" in text and "seconds: 1.5" in text
    assert sorted(p.name for p in out.iterdir()) == [".index.lock", "fake", "index.html", "index.json"]


def test_index_keeps_runs_drops_missing_folders_and_is_atomic(tmp_path):
    root = tmp_path / "results"
    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "report.html").write_text("<html></html>")
        runs.append(folder)
        reports.update_index(root, {"kind": "run", "name": name, "folder": str(folder),
                                    "title": f"run {name}", "date": f"2026-01-0{len(runs)} 00:00:00",
                                    "headline": {"images": 3, "methods": {"grad": {
                                        "done": "3/3", "images_per_s": 12.5, "metrics": {}}}}})
    check_links(root / "index.html")
    text = (root / "index.html").read_text()
    assert text.index("run b") < text.index("run a")          # newest first
    assert "12.5" in text and "3/3" in text
    for p in runs[0].iterdir():
        p.unlink()
    runs[0].rmdir()
    reports.update_index(root)
    assert "run a" not in (root / "index.html").read_text()
    assert [e["name"] for e in json.loads((root / "index.json").read_text())["runs"]] == ["b"]
    assert not [p for p in root.iterdir() if ".part" in p.name]
