"""The report model (entries of rows of tiles), its self-contained HTML page and the writer of a report folder.

Thumbnails are embedded as base64 JPEG, so ``index.html`` opens from disk with no server, no network and no
external file; every caption is HTML-escaped."""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from common.data.images import open_image
from common.io import PathLike, atomic_write, atomic_write_text

THUMB_SIDE = 128


@dataclass
class Tile:
    """One cell: an image (``path``) and/or a ``text`` (a caption, a class name), a short ``label`` (the rank) and
    ``hit`` when it is the right answer (drawn outlined)."""

    label: str
    path: PathLike | None = None
    text: str = ""
    hit: bool = False


@dataclass
class Row:
    """A titled line of tiles, e.g. "top 5" or "CIRR subset"."""

    title: str
    tiles: list[Tile]


@dataclass
class Entry:
    """One query: a heading, the query tile (reference image and caption, test image...) and its result rows."""

    title: str
    query: Tile
    rows: list[Row]


@dataclass
class Report:
    """A page: a title, lines of notes (model, split, how queries were picked) and the entries."""

    title: str
    entries: list[Entry]
    notes: list[str] = field(default_factory=list)


class Thumbnails:
    """Thumbnails of image files fitted to a ``side`` square (small images are enlarged), each read once per report;
    a file that cannot be read gives None."""

    def __init__(self, side: int = THUMB_SIDE):
        self.side = side
        self._images: dict[str, Image.Image | None] = {}
        self._uris: dict[str, str | None] = {}

    def image(self, path: PathLike) -> Image.Image | None:
        key = str(path)
        if key not in self._images:
            self._images[key] = self._read(Path(path))
        return self._images[key]

    def data_uri(self, path: PathLike) -> str | None:
        key = str(path)
        if key not in self._uris:
            image = self.image(path)
            self._uris[key] = None if image is None else "data:image/jpeg;base64," + _jpeg_base64(image)
        return self._uris[key]

    def _read(self, path: Path) -> Image.Image | None:
        try:
            image = open_image(path).convert("RGB")
        except OSError:  # missing (FileNotFoundError) or undecodable (ImageReadError): a placeholder tile
            return None
        return ImageOps.contain(image, (self.side, self.side))


def _jpeg_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body { font-family: sans-serif; margin: 16px; color: #222; background: #fafafa; }
h1 { font-size: 20px; } h2 { font-size: 15px; margin: 0 0 6px; }
.notes { color: #555; font-size: 13px; }
.entry { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; margin: 12px 0;
         display: flex; gap: 16px; align-items: flex-start; }
.rows { display: flex; flex-direction: column; gap: 6px; }
.row-title { font-size: 12px; color: #666; margin: 2px 0; }
.tiles { display: flex; gap: 6px; flex-wrap: wrap; align-items: flex-start; }
.tile { width: SIDEpx; margin: 0; border: 3px solid transparent; padding: 2px; font-size: 12px; }
.tile.hit { border-color: #1a9c3a; background: #e9f7ec; }
.tile.query { border-color: #888; }
.tile img { display: block; max-width: SIDEpx; max-height: SIDEpx; margin: auto; }
.missing { width: SIDEpx; height: 48px; background: #eee; color: #999; display: flex; align-items: center;
           justify-content: center; }
.label { font-weight: bold; } .text { overflow-wrap: anywhere; }
""".replace("SIDE", str(THUMB_SIDE))


def _tile_html(tile: Tile, thumbs: Thumbnails, extra_class: str = "") -> str:
    classes = " ".join(name for name in ("tile", extra_class, "hit" if tile.hit else "") if name)
    parts = [f'<figure class="{classes}">']
    if tile.path is not None:
        uri = thumbs.data_uri(tile.path)
        if uri is None:
            parts.append(f'<div class="missing" title="{html.escape(str(tile.path))}">no image</div>')
        else:
            parts.append(f'<img src="{uri}" alt="{html.escape(Path(tile.path).name)}">')
    parts.append(f'<figcaption><span class="label">{html.escape(tile.label)}</span>')
    if tile.text:
        parts.append(f'<div class="text">{html.escape(tile.text)}</div>')
    parts.append("</figcaption></figure>")
    return "".join(parts)


def render_html(report: Report, thumbs: Thumbnails) -> str:
    """The page of ``report`` as one HTML string, images inline."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{html.escape(report.title)}</h1>"]
    out += [f'<p class="notes">{html.escape(note)}</p>' for note in report.notes]
    for number, entry in enumerate(report.entries):
        out.append(f'<section class="entry" id="q{number}"><div>{_tile_html(entry.query, thumbs, "query")}</div>')
        out.append(f'<div class="rows"><h2>{html.escape(entry.title)}</h2>')
        for row in entry.rows:
            out.append(f'<div class="row"><div class="row-title">{html.escape(row.title)}</div><div class="tiles">')
            out += [_tile_html(tile, thumbs) for tile in row.tiles]
            out.append("</div></div>")
        out.append("</div></section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(report: Report, folder: PathLike) -> Path:
    """Write ``folder/index.html`` and ``folder/grid.png`` (each atomically), print and return the page's path."""
    from common.report.grid import render_grid

    folder = Path(folder)
    thumbs = Thumbnails()
    page = atomic_write_text(render_html(report, thumbs), folder / "index.html")
    grid = render_grid(report, thumbs)
    atomic_write(folder / "grid.png", lambda handle: grid.save(handle, format="PNG"))
    print(f"report written to {page} (grid: {folder / 'grid.png'})")
    return page
