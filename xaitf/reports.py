"""Browsable results: ``report.html`` beside every ``report.md``, and ``<results>/index.html``.

* :func:`markdown_to_html`: a small converter for the Markdown subset xaitf's reports use
  (headings, paragraphs, pipe tables, images, links, inline and fenced code, bold/italic, flat
  lists). Self-contained pages: inline CSS, relative links, no JavaScript, nothing from the network.
* :func:`write_html_report`: ``<folder>/report.html`` from a report's Markdown text (atomic).
* :func:`update_index`: records a run folder in ``<root>/index.json`` and rewrites
  ``<root>/index.html`` (both atomic: temporary file + ``os.replace``; an ``flock`` on
  ``<root>/.index.lock`` keeps two concurrent updates from losing an entry). Studies are found by
  scanning ``<root>/<study>/<stamp>/report.md`` (a study folder is one holding a ``latest`` file),
  so studies run before the index existed appear too. Entries whose folder is gone are dropped.
* :func:`map_rgb`, :func:`image_rgb`, :func:`write_png`: small PNGs (inputs, maps) for tables.
* :func:`versions`: the versions of what produced a result (informational).

Nothing here imports TensorFlow.
"""
import html
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

from .cli import atomic_write

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1250px;margin:1.5em auto;
padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:1.6em;border-bottom:1px solid #eee}
h3{font-size:1.1em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;vertical-align:top;text-align:left}
th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}
code{background:#f2f2f2;padding:0 .2em;border-radius:3px;font-size:.92em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;border:1px solid #e3e3e3}
pre code{background:none;padding:0}
img{max-width:100%}
td img{height:56px;image-rendering:pixelated;vertical-align:middle}
td img.wide{height:auto;max-width:260px}
.muted{color:#666;font-size:.88em}
.small td,.small th{font-size:.85em;padding:.1em .4em}
"""


# -- versions -----------------------------------------------------------------------------------
def versions(extra=()):
    """Versions of xaitf, Python and the main libraries (those installed), as a dict."""
    from importlib import metadata

    import xaitf

    out = {"xaitf": xaitf.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "platform": platform.platform()}
    for dist in ("h5py", "tensorflow", "tensorflow-cpu", "tf-keras", "keras", "innvestigate", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


# -- Markdown subset -> HTML ---------------------------------------------------------------------
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*\\])\*(?![\s*])(.+?)(?<![\s\\])\*(?![\w*])")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_ITEM = re.compile(r"^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$")


def _attr(text):
    return html.escape(text, quote=True)


def inline(text):
    """Inline Markdown (code, images, links, bold, italic, ``\\|``) -> HTML; everything else escaped."""
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(_inline_plain(text[pos:m.start()]))
        out.append(f"<code>{html.escape(m.group(2).strip())}</code>")
        pos = m.end()
    out.append(_inline_plain(text[pos:]))
    return "".join(out)


def _inline_plain(text):
    slots = []

    def keep(fragment):
        slots.append(fragment)
        return f"\x00{len(slots) - 1}\x00"

    text = _IMAGE.sub(lambda m: keep(f'<img src="{_attr(m.group(2))}" alt="{_attr(m.group(1))}"'
                                     f' loading="lazy">'), text)
    text = _LINK.sub(lambda m: keep(f'<a href="{_attr(m.group(2))}">{html.escape(m.group(1))}</a>'), text)
    text = html.escape(text.replace("\\|", "|"), quote=False)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: slots[int(m.group(1))], text)


def _cells(line):
    """The cells of a pipe-table row (``\\|`` is a literal bar, not a separator)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def markdown_to_html(text, title="report", css=CSS, head_extra=""):
    """A complete HTML page from Markdown ``text`` (the subset described in the module docstring)."""
    lines = text.splitlines()
    body, para, i = [], [], 0

    def flush():
        if para:
            joined = " ".join(s.strip() for s in para)
            alone = _IMAGE.fullmatch(joined)
            if alone:    # a figure on its own: a link to the full-size file
                body.append(f'<p><a href="{_attr(alone.group(2))}">{inline(joined)}</a></p>')
            else:
                body.append("<p>" + inline(joined) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            body.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        m = _HEADING.match(stripped)
        if m:
            flush()
            level = len(m.group(1))
            body.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _RULE.match(lines[i + 1].strip()):
            flush()
            head = _cells(stripped)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out = ["<table>", "<thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head)
                   + "</tr></thead>", "<tbody>"]
            for r in rows:
                r = (r + [""] * len(head))[:max(len(head), len(r))]
                out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>")
            out.append("</tbody></table>")
            body.append("\n".join(out))
            continue
        m = _ITEM.match(line)
        if m and not para:
            ordered = m.group(2) is not None
            items = []
            while i < len(lines):
                m = _ITEM.match(lines[i])
                if m and (m.group(2) is not None) == ordered:
                    items.append(m.group(3))
                elif lines[i].strip() and items and lines[i].startswith((" ", "\t")):
                    items[-1] += " " + lines[i].strip()      # a wrapped item
                else:
                    break
                i += 1
            tag = "ol" if ordered else "ul"
            body.append(f"<{tag}>" + "".join(f"<li>{inline(t)}</li>" for t in items) + f"</{tag}>")
            continue
        if not stripped:
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{css}</style>\n{head_extra}</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def markdown_title(text, default="report"):
    for line in text.splitlines():
        m = _HEADING.match(line.strip())
        if m and len(m.group(1)) == 1:
            return m.group(2)
    return default


def write_html_report(folder, markdown_text, name="report.html"):
    """Write ``<folder>/report.html`` from the Markdown of its ``report.md`` (atomic); its path."""
    page = markdown_to_html(markdown_text, title=markdown_title(markdown_text))
    return atomic_write(Path(folder) / name, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))


def versions_markdown(v):
    """A two-column Markdown table of :func:`versions`."""
    rows = "\n".join(f"| {k} | `{val}` |" for k, val in v.items())
    return "| package | version |\n|---|---|\n" + rows


# -- small PNGs ----------------------------------------------------------------------------------
def image_rgb(x):
    """(H,W,C) float image (C 1 or 3) -> uint8 (H,W,3): [0, 1] clipped when it lies there, else
    min-max stretched."""
    a = np.asarray(x, np.float32)
    if a.ndim == 2:
        a = a[..., None]
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo < 0 or hi > 1:
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    a = np.nan_to_num(np.clip(a, 0, 1))
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return (a[..., :3] * 255 + 0.5).astype(np.uint8)


def map_rgb(m):
    """(H,W) attribution map -> uint8 (H,W,3), diverging: blue (negative), white (0), red
    (positive), scaled by the map's largest |value|; NaN (not computed) grey."""
    m = np.asarray(m, np.float32)
    if m.ndim == 3:
        m = m.sum(-1)
    nan = ~np.isfinite(m)
    lim = float(np.abs(m[~nan]).max()) if (~nan).any() else 0.0
    v = np.where(nan, 0, m) / (lim if lim > 0 else 1.0)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], -1)
    rgb = np.clip(rgb, 0, 1)
    rgb[nan] = 0.6
    return (rgb * 255 + 0.5).astype(np.uint8)


def write_png(path, rgb):
    """Write uint8 (H,W,3) as a PNG atomically; returns the path."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb, np.uint8))
    return atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))


# -- index ---------------------------------------------------------------------------------------
def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _first_table(md, rows=4):
    """The header and first ``rows`` rows of the first pipe table of a report's Markdown."""
    lines = md.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].strip().startswith("|") and _RULE.match(lines[i + 1].strip()):
            body = []
            for line in lines[i + 2:]:
                if not line.strip().startswith("|") or len(body) == rows:
                    break
                body.append(_cells(line))
            return _cells(lines[i]), body
    return None, []


def _study_entries(root):
    """Every published study run under ``root`` (``<root>/<study>/<stamp>/report.md``)."""
    out = []
    # a study's folder holds a ``latest`` file (xaitf.studies.common.StudySession.finish)
    for base in sorted(p for p in root.iterdir() if p.is_dir() and (p / "latest").is_file()):
        study = base.name
        for folder in sorted(base.iterdir()):
            if folder.name.startswith(".") or not (folder / "report.md").is_file():
                continue
            md = (folder / "report.md").read_text(errors="replace")
            res = _read_json(folder / "results.json")
            head, rows = _first_table(md)
            headline = {"table": [head] + rows} if head else {}
            if isinstance(res.get("seconds"), (int, float)):
                headline["seconds"] = res["seconds"]
            stamp = folder.name.split("_")[0]
            try:
                date = time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(stamp, "%Y%m%d-%H%M%S"))
            except ValueError:
                date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(folder.stat().st_mtime))
            out.append({"kind": "study", "name": study, "folder": str(folder.resolve()),
                        "title": markdown_title(md, study), "date": date, "headline": headline})
    return out


def _cell_link(folder, root):
    for name in ("report.html", "report.md"):
        if (folder / name).is_file():
            return os.path.relpath(folder / name, root)
    return None


def _headline_html(entry):
    h = entry.get("headline") or {}
    parts = []
    table = h.get("table")
    if table:
        head, *rows = table
        cells = "".join(f"<th>{inline(c)}</th>" for c in head[:4])
        body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r[:4]) + "</tr>" for r in rows)
        parts.append(f'<table class="small"><tr>{cells}</tr>{body}</table>')
    for k, v in h.items():
        if k == "table":
            continue
        if k == "methods" and isinstance(v, dict):
            with_metrics = any(r.get("metrics") for r in v.values())
            rows = "".join(
                f"<tr><td>{html.escape(m)}</td><td>{html.escape(str(r.get('done')))}</td>"
                f"<td>{_num(r.get('images_per_s'))}</td>"
                + (("<td>" + ", ".join(f"{html.escape(mk)} {_num(mv)}"
                                       for mk, mv in (r.get("metrics") or {}).items()) + "</td>")
                   if with_metrics else "") + "</tr>" for m, r in v.items())
            parts.append('<table class="small"><tr><th>method</th><th>done</th><th>images/s</th>'
                         + ("<th>metrics</th>" if with_metrics else "") + f"</tr>{rows}</table>")
        else:
            parts.append(f"<div>{html.escape(str(k))}: {_num(v) if isinstance(v, (int, float)) else html.escape(str(v))}</div>")
    return "".join(parts) or '<span class="muted">-</span>'


def _num(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render_index(root, entries):
    """The HTML of ``<root>/index.html``: one table per kind, newest first, relative links."""
    root = Path(root)
    sections = []
    for kind, heading in (("study", "Studies"), ("run", "Dataset runs")):
        rows = [e for e in entries if e["kind"] == kind]
        rows.sort(key=lambda e: e.get("date", ""), reverse=True)
        if not rows:
            sections.append(f"<h2>{heading}</h2><p class=\"muted\">none yet</p>")
            continue
        trs = []
        for e in rows:
            folder = Path(e["folder"])
            link = _cell_link(folder, root)
            label = html.escape(e.get("title") or e["name"])
            name = f'<a href="{_attr(link)}">{label}</a>' if link else label
            inside = folder.resolve().is_relative_to(root.resolve())
            where = html.escape(os.path.relpath(folder, root) if inside else str(folder))
            trs.append(f"<tr><td>{html.escape(e.get('date', ''))}</td><td>{name}<div class=\"muted\">"
                       f"{where}</div></td><td>{_headline_html(e)}</td></tr>")
        sections.append(f"<h2>{heading}</h2><table><thead><tr><th>date</th><th>report</th>"
                        f"<th>headline numbers</th></tr></thead><tbody>{''.join(trs)}</tbody></table>")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>xaitf results</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>xaitf results</h1><p class=\"muted\">{html.escape(str(root.resolve()))} | updated "
            f"{stamp} | studies: <code>python -m xaitf.studies NAME</code>, dataset runs: "
            f"<code>python -m xaitf run</code></p>\n" + "\n".join(sections) + "\n</body>\n</html>\n")


def update_index(root, entry=None):
    """Add ``entry`` (a run: ``{"kind": "run", "name", "folder", "title", "date", "headline"}``;
    studies are found by scanning) to ``<root>/index.json`` and rewrite ``<root>/index.html``.

    Both files are replaced atomically, under an ``flock`` on ``<root>/.index.lock``. Returns the
    path of ``index.html``.
    """
    import fcntl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        runs = [e for e in _read_json(root / INDEX_JSON).get("runs", [])
                if isinstance(e, dict) and e.get("folder")]
        if entry is not None:
            entry = dict(entry, folder=str(Path(entry["folder"]).resolve()))
            runs = [e for e in runs if e["folder"] != entry["folder"]] + [entry]
        runs = [e for e in runs if Path(e["folder"]).is_dir()]
        text = json.dumps({"runs": runs}, indent=2) + "\n"
        atomic_write(root / INDEX_JSON, lambda tmp: Path(tmp).write_text(text))
        page = render_index(root, _study_entries(root) + runs)
        return atomic_write(root / INDEX_HTML, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    finally:
        os.close(fd)


def main(argv=None):
    """``python -m xaitf.reports [ROOT]``: rebuild ``ROOT/index.html`` (default results/), print its path."""
    from . import cli

    p = cli.ArgumentParser(prog="python -m xaitf.reports",
                           description="Rebuild <root>/index.html: every study and run, newest first.")
    p.add_argument("root", nargs="?", default="results", help="results folder (default results/)")
    p.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    args = p.parse_args(argv)
    if Path(args.root).exists() and not Path(args.root).is_dir():
        raise cli.CliError(f"{args.root} exists and is not a folder")
    print(Path(update_index(args.root)).resolve())
    return 0


if __name__ == "__main__":
    from .cli import run

    run(main)
