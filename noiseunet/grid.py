"""Labelled image grids: one row per prompt, the prompt written on the left, optional right/wrong marks; grids
stacked under one another (a titled block per task family)."""

from PIL import Image, ImageDraw, ImageFont

GOOD, BAD = (40, 200, 80), (230, 40, 40)


def image_grid(
    rows: list[list[Image.Image]],
    labels: list[str],
    marks: list[list[bool]] | None = None,
    cell: int = 96,
    label_width: int = 260,
    title: str | None = None,
) -> Image.Image:
    """A grid with ``rows[i]`` drawn after ``labels[i]``; ``marks[i][j]`` draws a green (True) or red frame."""
    columns = max(len(row) for row in rows)
    pad, top = 4, 24 if title else 0
    grid = Image.new("RGB", (label_width + columns * (cell + pad) + pad, top + len(rows) * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    if title:
        draw.text((pad, 6), title, fill="black", font=font)
    for i, (row, label) in enumerate(zip(rows, labels)):
        y = top + pad + i * (cell + pad)
        draw.text((pad, y + cell // 2 - 6), label, fill="black", font=font)
        for j, image in enumerate(row):
            x = label_width + pad + j * (cell + pad)
            grid.paste(image.resize((cell, cell), Image.NEAREST), (x, y))
            if marks is not None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline=GOOD if marks[i][j] else BAD, width=3)
    return grid


def stack(images: list[Image.Image], title: str | None = None, gap: int = 8) -> Image.Image:
    """``images`` one above the other on white, left-aligned, ``gap`` pixels apart, under an optional title."""
    top = 24 if title else 0
    width = max(image.width for image in images)
    canvas = Image.new("RGB", (width, top + sum(image.height for image in images) + gap * (len(images) - 1)), "white")
    if title:
        ImageDraw.Draw(canvas).text((4, 6), title, fill="black", font=ImageFont.load_default())
    y = top
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + gap
    return canvas
