"""The PNG contact sheet of a report: one band per query, its query tile on the left and its rows of results,
the right answers outlined in green. Rows of text tiles (captions, class names) are as tall as their text."""
from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont

from common.report.page import Entry, Report, Row, Thumbnails, Tile

PAD = 6
TEXT_LINE = 13
HIT = (26, 156, 58)
QUERY = (136, 136, 136)
QUERY_TEXT_LINES = 5
DRAWABLE = str.maketrans({"→": "->", "✓": "+"})
"""Characters the default bitmap font lacks, drawn in ASCII."""


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=11)


def _lines(text: str, side: int) -> list[str]:
    return textwrap.wrap(text.translate(DRAWABLE), max(8, side // 6))


def _box_height(tile: Tile, side: int) -> int:
    """Height of the picture area of a tile: the thumbnail square, or the wrapped text (at most the square)."""
    if tile.path is not None:
        return side
    return min(side, max(1, len(_lines(tile.text, side))) * TEXT_LINE + 4)


def _row_height(row: Row, side: int) -> int:
    box = max((_box_height(tile, side) for tile in row.tiles), default=TEXT_LINE)
    return box + 2 * PAD + TEXT_LINE + 4


def _draw_tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, tile: Tile, x: int, y: int, side: int, box: int,
               thumbs: Thumbnails, text_lines: int, outline: tuple[int, int, int] | None) -> None:
    """A tile at (x, y): the thumbnail centred in a ``side`` x ``box`` area (or its text wrapped there), then the
    label and, under a thumbnail, ``text_lines`` lines of its text; ``outline`` frames it."""
    font = _font()
    image = thumbs.image(tile.path) if tile.path is not None else None
    below: list[str] = []
    if image is not None:
        sheet.paste(image, (x + PAD + (side - image.width) // 2, y + PAD + (box - image.height) // 2))
        below = _lines(tile.text, side)[:text_lines]
    else:
        inside = _lines(tile.text or ("no image" if tile.path is not None else ""), side)
        for line, text in enumerate(inside[: box // TEXT_LINE]):
            draw.text((x + PAD + 2, y + PAD + 2 + line * TEXT_LINE), text, fill=(40, 40, 40), font=font)
    for line, text in enumerate([tile.label.translate(DRAWABLE), *below]):
        draw.text((x + PAD, y + PAD + box + 2 + line * TEXT_LINE), text, fill=(0, 0, 0), font=font)
    if outline is not None:
        height = box + 2 * PAD + (1 + len(below)) * TEXT_LINE + 2
        draw.rectangle((x + 1, y + 1, x + side + 2 * PAD - 2, y + height), outline=outline, width=3)


def _entry_height(entry: Entry, side: int) -> int:
    rows = TEXT_LINE + sum(TEXT_LINE + _row_height(row, side) for row in entry.rows)
    query = side + 2 * PAD + (1 + QUERY_TEXT_LINES) * TEXT_LINE + 4
    return max(rows, query) + 2 * PAD


def render_grid(report: Report, thumbs: Thumbnails) -> Image.Image:
    """The contact sheet of ``report`` as an RGB image."""
    side = thumbs.side
    cell_width = side + 2 * PAD
    most_tiles = max((len(row.tiles) for entry in report.entries for row in entry.rows), default=1)
    width = (most_tiles + 1) * cell_width + 3 * PAD
    heights = [_entry_height(entry, side) for entry in report.entries]
    sheet = Image.new("RGB", (width, TEXT_LINE + 2 * PAD + sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((PAD, PAD), report.title.translate(DRAWABLE), fill=(0, 0, 0), font=font)
    y = TEXT_LINE + 2 * PAD
    for entry, height in zip(report.entries, heights):
        draw.line((0, y, width, y), fill=(200, 200, 200))
        _draw_tile(sheet, draw, entry.query, PAD, y + PAD, side, side, thumbs, QUERY_TEXT_LINES, QUERY)
        x0 = cell_width + 2 * PAD
        draw.text((x0, y + PAD), entry.title.translate(DRAWABLE), fill=(0, 0, 0), font=font)
        row_y = y + PAD + TEXT_LINE
        for row in entry.rows:
            draw.text((x0, row_y), row.title.translate(DRAWABLE), fill=(100, 100, 100), font=font)
            box = _row_height(row, side) - 2 * PAD - TEXT_LINE - 4
            for column, tile in enumerate(row.tiles):
                _draw_tile(sheet, draw, tile, x0 + column * cell_width, row_y + TEXT_LINE, side, box, thumbs, 0,
                           HIT if tile.hit else None)
            row_y += TEXT_LINE + _row_height(row, side)
        y += height
    return sheet
