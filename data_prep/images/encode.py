"""One sample on its way into a shard: check that it decodes, optionally shrink and re-encode it.

Encoded sources (image folders, ImageNet tars) keep their bytes unless `resize` is set; every image is
fully decoded once here, so a truncated or damaged file fails at sharding time, naming the file, instead
of in the middle of a training run. Pixel sources (npz, CIFAR, ImageNet16) are stored as lossless PNG.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from data_prep.images.base import Raw
from pipeline.errors import DataError

_JPEG_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CorruptImage(Exception):
    """A sample that cannot be used (the reason is the message); the writer names the file."""


class CorruptImageError(DataError):
    """A corrupt sample stopped the run (no --skip-corrupt)."""


def sniff(data: bytes) -> str | None:
    """The field extension from the content, not the file name (ImageNet has a PNG and CMYK files named .JPEG)."""
    if data[:2] == _JPEG_SOI:
        return "jpg"
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    return None


def short_side_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(w, h) scaled so that the shorter side is `short` (aspect ratio kept)."""
    w, h = size
    scale = short / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def prepare_sample(raw: Raw, resize: int | None, jpeg_quality: int) -> tuple[str, bytes]:
    """(field extension, encoded bytes) of a raw sample; CorruptImage when it does not decode.

    `resize`: images whose shorter side is longer are shrunk to it and re-encoded as JPEG; smaller ones
    are kept as they are (never upscaled).
    """
    if isinstance(raw, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(raw), "RGB")
        if resize is not None and min(img.size) > resize:
            return "jpg", _jpeg(img.resize(short_side_size(img.size, resize), Image.Resampling.BICUBIC), jpeg_quality)
        return "png", _png(img)
    ext = sniff(raw)
    if ext is None:
        raise CorruptImage("neither a JPEG nor a PNG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / ICC warnings are not corruption
            with Image.open(io.BytesIO(raw)) as img:
                if resize is not None and min(img.size) > resize:
                    size = short_side_size(img.size, resize)
                    if ext == "jpg":
                        img.draft("RGB", size)  # decode at the smallest DCT scale still >= size: 2-4x faster
                    out = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
                    return "jpg", _jpeg(out, jpeg_quality)
                img.load()  # full decode: truncated files raise here ("image file is truncated")
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise CorruptImage(f"{type(e).__name__}: {e}") from None
    return ext, raw


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
