"""A look-alike of Flickr's "This photo is no longer available" placeholder, drawn here.

The real image is Flickr's and is not downloaded by tests. This one has what matters to the
check: Flickr's size at the default photo size (500x374), a flat light grey card, a dark
picture icon in the middle and a line of grey text under it. pipeline.placeholder documents
how a user adds the real one's fingerprint.
"""
import io

from PIL import Image, ImageDraw, ImageFont

SIZE = (500, 374)


def placeholder(size=SIZE) -> Image.Image:
    """The look-alike placeholder, RGB."""
    width, height = size
    image = Image.new("RGB", size, (225, 225, 225))
    draw = ImageDraw.Draw(image)
    cx, cy = width // 2, int(height * 0.42)
    w, h = width // 5, height // 5   # the picture icon: a frame, a sun, two mountains
    draw.rounded_rectangle((cx - w // 2, cy - h // 2, cx + w // 2, cy + h // 2), radius=6, outline=(120, 120, 120),
                           width=5, fill=(205, 205, 205))
    draw.ellipse((cx - w // 4 - 8, cy - h // 4 - 8, cx - w // 4 + 8, cy - h // 4 + 8), fill=(120, 120, 120))
    draw.polygon([(cx - w // 2 + 6, cy + h // 2 - 6), (cx - w // 8, cy - 2), (cx + w // 8, cy + h // 2 - 6)],
                 fill=(120, 120, 120))
    draw.polygon([(cx - w // 10, cy + h // 2 - 6), (cx + w // 5, cy - h // 6), (cx + w // 2 - 6, cy + h // 2 - 6)],
                 fill=(140, 140, 140))
    font = ImageFont.load_default(size=max(10, width // 24))
    text = "This photo is no longer available"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (right - left)) // 2, cy + h // 2 + height // 12), text, fill=(110, 110, 110), font=font)
    return image


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()
