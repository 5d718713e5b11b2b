"""Real evaluation inputs for the benchmark models (helper of ``bench/models.py``).

Three sources, all deterministic for a given machine (sorted paths, fixed seeds):

* **magika**: the bytes of real files of this machine (Python's standard library and
  site-packages, /usr/share, /usr/include), turned into model inputs by the magika package's
  own feature extraction (imported from the pinned wheel, never re-implemented). Files are
  picked by extension, and the extension gives the ground-truth label (``EXT_LABELS``).
* **ocr_det / ocr_cls / ocr_rec**: images rendered with Pillow from real text (lines of the
  standard library's docstrings) in the TrueType fonts found on the machine, preprocessed
  exactly as RapidOCR's ``TextDetector`` / ``TextClassifier`` / ``TextRecognizer`` do. Their
  ``cv2.resize(INTER_LINEAR)`` is reproduced bit for bit by :func:`resize_linear` (fixed-point,
  checked against opencv-python-headless 5.0), so no OpenCV is needed.

Metrics computed from a model's raw outputs (:func:`task_metrics`) live here too, so that the
sanity figures of ``bench/models.py`` and the accuracy of compressed models in the comparison
scripts are the same code.
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
import string
import sys
import sysconfig
from collections import Counter
from functools import lru_cache
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

SEED = 20250917

# --------------------------------------------------------------------------- cv2-exact resize


def _linear_coeffs(ssize: int, dsize: int, clamp: bool) -> tuple[np.ndarray, ...]:
    """Source indices and 11-bit fixed-point weights of OpenCV's INTER_LINEAR along one axis.

    OpenCV computes ``f = float((d + 0.5) * scale - 0.5)`` in float32; along x a sample left
    of the image gets weight (1, 0) on column 0; along y the weights are kept and the row
    index is clamped (which matters for the rounding of the fixed-point sum)."""
    scale = ssize / dsize
    f = ((np.arange(dsize, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        low = s < 0
        f[low] = 0
        s[low] = 0
        high = s >= ssize - 1
        f[high] = 0
        s[high] = ssize - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    return np.clip(s, 0, ssize - 1), np.clip(s + 1, 0, ssize - 1), w0, 2048 - w0


def resize_linear(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(img, (width, height))`` (INTER_LINEAR) for a uint8 HxW or HxWxC image,
    bit-exact: horizontal pass in 11-bit fixed point, vertical pass with OpenCV's vectorised
    rounding ``((b0*(r0>>4))>>16 + (b1*(r1>>4))>>16 + 2) >> 2``."""
    if img.dtype != np.uint8:
        raise TypeError("resize_linear takes uint8 images")
    h0, w0 = img.shape[:2]
    if (h0, w0) == (height, width):
        return img.copy()
    x0, x1, a0, a1 = _linear_coeffs(w0, width, clamp=True)
    y0, y1, b0, b1 = _linear_coeffs(h0, height, clamp=False)
    src = img.astype(np.int64)
    xs = (1, -1) + (1,) * (img.ndim - 2)
    rows = src[:, x0] * a0.reshape(xs) + src[:, x1] * a1.reshape(xs)
    ys = (-1,) + (1,) * (img.ndim - 1)
    out = (((b0.reshape(ys) * (rows[y0] >> 4)) >> 16) + ((b1.reshape(ys) * (rows[y1] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- RapidOCR preprocessing
# Each function mirrors the named RapidOCR 1.4.4 method line by line (same numpy expressions,
# same dtypes), with cv2.resize replaced by its bit-exact twin above.


def det_preprocess(img: np.ndarray, limit_side_len: int, limit_type: str, mean, std) -> np.ndarray:
    """``ch_ppocr_det.utils.DetPreProcess.__call__`` without the batch axis: [3, H', W'] float32."""
    h, w = img.shape[:2]
    if limit_type == "max":
        ratio = (float(limit_side_len) / (h if h > w else w)) if max(h, w) > limit_side_len else 1.0
    else:
        ratio = (float(limit_side_len) / (h if h < w else w)) if min(h, w) < limit_side_len else 1.0
    resize_h = int(round(int(h * ratio) / 32) * 32)
    resize_w = int(round(int(w * ratio) / 32) * 32)
    img = resize_linear(img, resize_w, resize_h)
    out = (img.astype("float32") * (1 / 255.0) - np.array(mean)) / np.array(std)
    return out.transpose((2, 0, 1)).astype(np.float32)


def cls_preprocess(img: np.ndarray, cls_image_shape) -> np.ndarray:
    """``ch_ppocr_cls.text_cls.TextClassifier.resize_norm_img``: [3, 48, 192] float32."""
    img_c, img_h, img_w = cls_image_shape
    h, w = img.shape[:2]
    ratio = w / float(h)
    resized_w = img_w if math.ceil(img_h * ratio) > img_w else math.ceil(img_h * ratio)
    resized = resize_linear(img, resized_w, img_h).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    pad = np.zeros((img_c, img_h, img_w), dtype=np.float32)
    pad[:, :, :resized_w] = resized
    return pad


def rec_preprocess(img: np.ndarray, rec_img_shape, max_wh_ratio: float) -> np.ndarray:
    """``ch_ppocr_rec.text_recognize.TextRecognizer.resize_norm_img``: [3, 48, W] float32."""
    img_channel, img_height, img_width = rec_img_shape
    img_width = int(img_height * max_wh_ratio)
    h, w = img.shape[:2]
    ratio = w / float(h)
    resized_w = img_width if math.ceil(img_height * ratio) > img_width else math.ceil(img_height * ratio)
    resized = resize_linear(img, resized_w, img_height).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    pad = np.zeros((img_channel, img_height, img_width), dtype=np.float32)
    pad[:, :, 0:resized_w] = resized
    return pad


# --------------------------------------------------------------------------- text and fonts


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@lru_cache(maxsize=2)
def docstring_lines(max_len: int = 64) -> list[str]:
    """Distinct lines of the docstrings of the standard library's own modules (tests, idlelib
    and site-packages left out), in sorted-path order: printable ASCII, 8..max_len characters,
    at least 4 letters."""
    root = _stdlib_dir()
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__"}
    files = sorted(
        p for p in root.rglob("*.py") if not (set(p.relative_to(root).parts[:-1]) & skip)
    )
    allowed = set(string.ascii_letters + string.digits + string.punctuation + " ")
    seen: set[str] = set()
    out: list[str] = []
    for p in files:
        try:
            tree = ast.parse(p.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node, clean=True)
            if not doc:
                continue
            for line in doc.splitlines():
                line = " ".join(line.split())
                if not (8 <= len(line) <= max_len) or line in seen or not set(line) <= allowed:
                    continue
                if sum(c.isalpha() for c in line) < 4 or line.startswith((">>>", "...")):
                    continue
                seen.add(line)
                out.append(line)
    if not out:
        raise RuntimeError(f"no docstring text found under {root}")
    return out


FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")


@lru_cache(maxsize=2)
def find_fonts(limit: int = 12) -> list[str]:
    """Up to ``limit`` TrueType/OpenType fonts of the machine that draw ASCII, sorted by path
    and spread evenly over that list; ``[]`` when there are none (the caller then uses
    Pillow's built-in scalable font)."""
    from PIL import ImageFont

    paths: list[str] = []
    for d in FONT_DIRS:
        if os.path.isdir(d):
            for dp, dns, fns in os.walk(d):
                dns.sort()
                paths.extend(os.path.join(dp, f) for f in sorted(fns) if f.lower().endswith((".ttf", ".otf")))
    good = []
    for p in sorted(set(paths)):
        try:
            f = ImageFont.truetype(p, 24)
            # a symbol/CJK-only font draws 'A' and 'g' with identical or empty boxes
            ba, bg = f.getbbox("A"), f.getbbox("g")
            if ba[2] - ba[0] > 2 and ba != bg:
                good.append(p)
        except OSError:
            continue
    if len(good) > limit:
        good = [good[round(i * (len(good) - 1) / (limit - 1))] for i in range(limit)]
    return good


class FontBank:
    """Fonts by (index, size), cached; falls back to ``ImageFont.load_default(size)``."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self._cache: dict[tuple[int, int], object] = {}

    def __len__(self) -> int:
        return max(1, len(self.paths))

    def names(self) -> list[str]:
        return [os.path.basename(p) for p in self.paths] or ["Pillow built-in (load_default)"]

    def get(self, index: int, size: int):
        from PIL import ImageFont

        key = (index % len(self), size)
        if key not in self._cache:
            if self.paths:
                self._cache[key] = ImageFont.truetype(self.paths[key[0]], size)
            else:
                self._cache[key] = ImageFont.load_default(size=size)
        return self._cache[key]


def _colors(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(ink, paper): dark ink on light paper, or (1 in 8) light ink on dark paper."""
    paper = tuple(int(v) for v in rng.integers(200, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    if rng.random() < 0.125:
        paper, ink = ink, paper
    return ink, paper


def _to_bgr(im, rng: np.random.Generator, noise: float) -> np.ndarray:
    a = np.asarray(im.convert("RGB"), dtype=np.float32)
    if noise:
        a = a + rng.normal(0.0, noise, a.shape).astype(np.float32)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)[:, :, ::-1].copy()


def render_line(text: str, font, rng: np.random.Generator) -> np.ndarray:
    """One text line as a det crop looks: the text's box plus a margin of 10-45% of its height
    (RapidOCR's unclip ratio 1.6 gives about that), BGR uint8."""
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = font.getbbox(text)
    th = max(1, y1 - y0)
    my = round(th * rng.uniform(0.10, 0.45))
    mx = round(th * rng.uniform(0.10, 0.60))
    ink, paper = _colors(rng)
    im = Image.new("RGB", (x1 - x0 + 2 * mx, th + 2 * my), paper)
    ImageDraw.Draw(im).text((mx - x0, my - y0), text, font=font, fill=ink)
    return _to_bgr(im, rng, noise=float(rng.uniform(0, 6)))


def fit_text(text: str, font, max_width: float) -> str:
    """``text`` cut at a word boundary (or a character) so that it renders within max_width."""
    if font.getlength(text) <= max_width:
        return text
    words = text.split(" ")
    while len(words) > 1:
        words.pop()
        t = " ".join(words)
        if font.getlength(t) <= max_width:
            return t
    t = text
    while len(t) > 1 and font.getlength(t) > max_width:
        t = t[:-1]
    return t


def render_page(lines: list[str], fonts: FontBank, rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A size x size page: one or two columns of text lines in random fonts (14-40 px), ink and
    paper colours, indents and spacing, plus non-text rules and frames; returns the BGR image
    and the text boxes (x0, y0, x1, y1) of every drawn line."""
    from PIL import Image, ImageDraw

    ink, paper = _colors(rng)
    im = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(0, 4))):  # distractors: rules and frames
        xa, ya = (int(v) for v in rng.integers(0, size - 40, 2))
        xb, yb = xa + int(rng.integers(20, size - xa)), ya + int(rng.integers(1, 120))
        if rng.random() < 0.5:
            draw.line((xa, ya, xb, ya), fill=ink, width=int(rng.integers(1, 4)))
        else:
            draw.rectangle((xa, ya, xb, yb), outline=ink, width=int(rng.integers(1, 3)))
    boxes: list[tuple[int, int, int, int]] = []
    ncols = 2 if rng.random() < 0.3 else 1
    colw = size // ncols
    li = 0
    for c in range(ncols):
        y = int(rng.integers(8, 60))
        fidx = int(rng.integers(0, len(fonts)))
        fsize = int(rng.integers(14, 41))
        while True:
            if rng.random() < 0.25:  # a new paragraph: new font and size, extra space
                fidx = int(rng.integers(0, len(fonts)))
                fsize = int(rng.integers(14, 41))
                y += int(fsize * rng.uniform(0.3, 1.2))
            font = fonts.get(fidx, fsize)
            xa = c * colw + int(rng.integers(8, max(9, colw // 6)))
            text = fit_text(lines[li % len(lines)], font, c * colw + colw - 8 - xa)
            li += 1
            bx0, by0, bx1, by1 = draw.textbbox((xa, y), text, font=font)
            if by1 >= size - 6:
                break
            if bx1 - bx0 >= 4 and by1 - by0 >= 4:
                draw.text((xa, y), text, font=font, fill=ink)
                boxes.append((bx0, by0, bx1, by1))
            y = by1 + int(fsize * rng.uniform(0.35, 0.9))
    return _to_bgr(im, rng, noise=float(rng.uniform(0, 5))), boxes


# --------------------------------------------------------------------------- OCR sample sets


def ocr_det_samples(n: int, cfg: dict, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``n`` pages preprocessed for the detector: (x [n,3,S,S] float32, boxes [m,5] int32 rows
    of (sample, x0, y0, x1, y1) in input pixels, info)."""
    size = int(cfg["page_size"])
    lines = docstring_lines()
    fonts = FontBank(find_fonts())
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(lines))
    shuffled = [lines[i] for i in order]
    xs, boxes = [], []
    per_page = 40
    for i in range(n):
        page, bx = render_page(shuffled[(i * per_page) % len(shuffled):] + shuffled, fonts, rng, size)
        x = det_preprocess(page, cfg["limit_side_len"], cfg["limit_type"], cfg["mean"], cfg["std"])
        if x.shape[1:] != (size, size):  # the page size is a multiple of 32 >= limit: no resize
            raise RuntimeError(f"det preprocessing changed the page size to {x.shape}")
        xs.append(x)
        boxes.extend((i, *b) for b in bx)
    info = {"fonts": fonts.names(), "text_lines_available": len(lines), "text_lines_drawn": len(boxes)}
    return np.stack(xs), np.asarray(boxes, dtype=np.int32).reshape(-1, 5), info


def ocr_line_samples(n: int, cfg: dict, seed: int, task: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``n`` text-line crops: for ``cls`` (x [n,3,48,192], labels 0 upright / 1 rotated 180
    degrees, half each in a shuffled order; whole lines and 1-4 word fragments, long lines
    squeezed into the width as RapidOCR does), for ``rec`` (x [n,3,48,320], the drawn strings;
    lines cut until the crop's width/height ratio fits 320/48, so nothing is squeezed)."""
    lines = docstring_lines()
    fonts = FontBank(find_fonts())
    rng = np.random.default_rng([seed, 2 if task == "cls" else 3])
    order = rng.permutation(len(lines))
    c, h, w = cfg["image_shape"]
    xs, truth = [], []
    rot = rng.permutation(np.arange(n) % 2) if task == "cls" else None
    for i in range(n):
        text = lines[int(order[i % len(order)])]
        font = fonts.get(int(rng.integers(0, len(fonts))), int(rng.integers(14, 65)))
        if task == "cls" and rng.random() < 0.4:  # short fragments too: words, numbers
            words = text.split(" ")
            k = int(rng.integers(1, min(4, len(words)) + 1))
            text = " ".join(words[:k])
        img = render_line(text, font, rng)
        if task == "cls":
            # long lines are squeezed into 192 columns, as RapidOCR does with real crops
            if rot[i]:
                img = np.ascontiguousarray(img[::-1, ::-1])  # cv2.rotate(img, ROTATE_180)
            xs.append(cls_preprocess(img, (c, h, w)))
            truth.append(int(rot[i]))
        else:
            # a fixed input width w: cut the line until the crop's ratio fits w/h (RapidOCR
            # would widen the batch instead; it never squeezes a line)
            while img.shape[1] / img.shape[0] > w / h and " " in text:
                text = text.rsplit(" ", 1)[0]
                img = render_line(text, font, rng)
            while img.shape[1] / img.shape[0] > w / h:
                text = text[:-1]
                img = render_line(text, font, rng)
            xs.append(rec_preprocess(img, (c, h, w), w / h))
            truth.append(text)
    info = {"fonts": fonts.names(), "text_lines_available": len(lines)}
    t = np.asarray(truth, dtype=np.int64 if task == "cls" else str)
    return np.stack(xs), t, info


# --------------------------------------------------------------------------- magika

# File extension -> magika label, for formats where the extension is the ground truth on an
# ordinary Linux/Python machine. Ambiguous ones are left out on purpose: .txt (anything), .h (C
# or C++), .pem/.crt (magika tells certificates, "crt", from keys, "pem"), .pl (Perl's
# unicore tables are data), .jinja (templates of other languages), .mat (binary MAT files, not
# MATLAB source), .pyi, .in, .cfg. Test folders are not scanned (see SKIP_DIRS).
EXT_LABELS: dict[str, str] = {
    ".py": "python", ".pyc": "pythonbytecode", ".so": "elf", ".json": "json",
    ".html": "html", ".htm": "html", ".xml": "xml", ".css": "css", ".js": "javascript",
    ".md": "markdown", ".rst": "rst", ".c": "c", ".cpp": "cpp", ".cc": "cpp", ".hpp": "cpp",
    ".gz": "gzip", ".bz2": "bzip", ".xz": "xz", ".zip": "zip", ".jar": "jar", ".png": "png",
    ".gif": "gif", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp", ".ico": "ico", ".svg": "svg",
    ".wav": "wav", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".csv": "csv",
    ".sh": "shell", ".pm": "perl", ".tcl": "tcl", ".sql": "sql",
    ".cmake": "cmake", ".f90": "fortran", ".f": "fortran", ".npy": "npy", ".npz": "npz",
    ".ttf": "ttf", ".otf": "otf", ".proto": "proto",
    ".m4": "m4", ".ps": "postscript", ".pdf": "pdf", ".pkl": "pickle", ".pickle": "pickle",
    ".onnx": "onnx", ".exe": "pebin", ".dll": "pebin", ".tar": "tar", ".go": "go",
    ".rs": "rust", ".java": "java", ".rb": "ruby", ".lua": "lua", ".php": "php",
    ".ts": "typescript", ".diff": "diff", ".patch": "diff", ".ipynb": "ipynb", ".tex": "latex",
    ".bib": "bib", ".bat": "batch", ".ps1": "powershell", ".vue": "vue", ".scss": "scss",
}
NAME_LABELS: dict[str, str] = {"Makefile": "makefile", "Dockerfile": "dockerfile", "CMakeLists.txt": "cmake"}
# Test suites hold deliberately malformed or exotic files (invalid TOML, odd WAV encodings,
# broken certificates) whose extension is not their content type.
SKIP_DIRS = frozenset({"test", "tests", "testing", "testdata", "test_data"})


def file_roots(exclude: Iterable[Path] = ()) -> list[Path]:
    """Where the magika sample files come from: this Python's stdlib, its site-packages and
    include folder, and /usr/share and /usr/include where they exist. (The base interpreter's
    own site-packages, below the stdlib, is skipped by :func:`_walk` unless it is this one.)"""
    paths = sysconfig.get_paths()
    cands = [paths["stdlib"], paths["purelib"], paths["platlib"], paths["include"], "/usr/share", "/usr/include"]
    out: list[Path] = []
    for c in cands:
        p = Path(c).resolve()
        if p.is_dir() and p not in out:
            out.append(p)
    return out


def _walk(root: Path, skip: list[Path]) -> Iterable[Path]:
    """Regular files below root, depth first in sorted order; no symlinks, no SKIP_DIRS."""
    stack = [root]
    while stack:
        d = stack.pop()
        if any(d == s or s in d.parents for s in skip):
            continue
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_symlink():
                    continue
                if e.is_dir():
                    if e.name not in SKIP_DIRS:
                        subdirs.append(Path(e.path))
                elif e.is_file():
                    yield Path(e.path)
            except OSError:
                continue
        stack.extend(reversed(subdirs))


def _label_of(p: Path) -> str | None:
    return NAME_LABELS.get(p.name) or EXT_LABELS.get(p.suffix.lower())


def import_magika(vendor_dir: Path):
    """The ``magika.Magika`` class of the vendored (pinned) package."""
    if str(vendor_dir) not in sys.path:
        sys.path.insert(0, str(vendor_dir))
    import magika

    if Path(magika.__file__).resolve().parent.parent != vendor_dir.resolve():
        raise RuntimeError(f"a different magika is imported ({magika.__file__}); run in a venv without magika or with the pinned one")
    return magika


def magika_samples(model_dir: Path, vendor_dir: Path, per_label: int, seed: int, exclude: list[Path], progress: Callable[[str], None] = lambda s: None) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """Features of real files through magika's own extraction, ``per_label`` files per label
    at most, files whose content magika decides without its model (empty, tiny, whitespace)
    left out, duplicate feature vectors left out. Returns (bytes [n,2048] int32, labels [n]
    int64 indices into the model's label space, one record per file, info)."""
    magika = import_magika(vendor_dir)
    m = magika.Magika(model_dir=model_dir)
    space = list(m._target_labels_space)
    unknown = sorted({lb for lb in (*EXT_LABELS.values(), *NAME_LABELS.values()) if lb not in space})
    if unknown:
        raise RuntimeError(f"labels not in magika's label space: {unknown}")
    roots = file_roots()
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    base_site = Path(sysconfig.get_paths()["stdlib"]).resolve() / "site-packages"
    exclude = [*exclude, *([base_site] if base_site != purelib else [])]
    by_label: dict[str, list[Path]] = {}
    scanned = 0
    for r in roots:
        progress(f"scanning {r}")
        for p in _walk(r, exclude):
            scanned += 1
            lb = _label_of(p)
            if lb:
                by_label.setdefault(lb, []).append(p)
    cfg = m._model_config
    feats, labels, records = [], [], []
    seen: set[bytes] = set()
    skipped = Counter()
    for lb in sorted(by_label):
        cands = sorted(set(by_label[lb]))
        rng = np.random.default_rng([seed, space.index(lb)])
        taken = 0
        for i in rng.permutation(len(cands)):
            if taken >= per_label:
                break
            p = cands[int(i)]
            try:
                _, fs = m._get_result_or_features_from_path(p)
            except OSError:
                skipped["unreadable"] += 1
                continue
            if fs is None:  # decided without the model (empty, < 8 bytes, whitespace)
                skipped["no model input"] += 1
                continue
            row = [*fs.beg[: cfg.beg_size], *fs.end[-cfg.end_size:]]
            key = hashlib.sha256(np.asarray(row, dtype=np.int32).tobytes()).digest()
            if key in seen:
                skipped["duplicate content"] += 1
                continue
            seen.add(key)
            feats.append(row)
            labels.append(space.index(lb))
            records.append({"path": str(p), "label": lb, "size": p.stat().st_size})
            taken += 1
    x = np.asarray(feats, dtype=np.int32)
    info = {
        "roots": [str(r) for r in roots],
        "files_scanned": scanned,
        "candidates_per_label": {k: len(v) for k, v in sorted(by_label.items())},
        "skipped": dict(skipped),
        "features": f"magika {magika.__version__} Magika._get_result_or_features_from_path (beg {cfg.beg_size} + end {cfg.end_size} bytes of the first/last {cfg.block_size}, whitespace-stripped, padding {cfg.padding_token})",
    }
    return x, np.asarray(labels, dtype=np.int64), records, info


def magika_dl_labels(model_dir: Path, vendor_dir: Path, paths: list[str]) -> list[str]:
    """The magika package's own raw model prediction (``prediction.dl.label``) per file, 64
    files a call (one call runs them all as one batch: 3.4 GB for 900 files)."""
    magika = import_magika(vendor_dir)
    m = magika.Magika(model_dir=model_dir)
    out: list[str] = []
    for i in range(0, len(paths), 64):
        res = m.identify_paths([Path(p) for p in paths[i:i + 64]])
        out.extend(str(r.prediction.dl.label) if r.ok else "error" for r in res)
    return out


# --------------------------------------------------------------------------- metrics


def classification_metrics(logits: np.ndarray, labels: np.ndarray | None, names: list[str] | None = None) -> dict:
    pred = logits.argmax(axis=-1)
    out: dict = {"n": int(pred.shape[0])}
    if labels is not None:
        out["top1_accuracy"] = float((pred == labels).mean())
    if names:
        out["predicted_labels"] = dict(Counter(names[int(i)] for i in pred).most_common())
        if labels is not None:
            per = {}
            for lb in np.unique(labels):
                sel = labels == lb
                per[names[int(lb)]] = [int((pred[sel] == lb).sum()), int(sel.sum())]
            out["per_label_correct"] = per
    return out


def det_metrics(prob: np.ndarray, boxes: np.ndarray, thresh: float = 0.3) -> dict:
    """DB probability maps [n,1,H,W] against the drawn text boxes.

    line_recall: share of lines whose core (the box shrunk by 25% of its height on every
    side, as DB's shrunk text kernel) has at least half of its pixels above ``thresh``
    (RapidOCR's binarisation threshold). pixel_precision: share of above-threshold pixels that
    fall inside a text box grown by 25% of its height."""
    pos = prob[:, 0] > thresh
    inside = np.zeros_like(pos)
    hit = 0
    for s, x0, y0, x1, y1 in boxes:
        m = max(1, int(0.25 * (y1 - y0)))
        core = pos[s, y0 + m:y1 - m, x0 + m:x1 - m]
        hit += int(core.size > 0 and core.mean() >= 0.5)
        inside[s, max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = True
    npos = int(pos.sum())
    return {
        "n": int(prob.shape[0]),
        "lines": len(boxes),
        "line_recall": hit / max(1, len(boxes)),
        "pixel_precision": float((pos & inside).sum() / npos) if npos else 0.0,
        "text_prob": float(prob[:, 0][inside].mean()) if inside.any() else 0.0,
        "background_prob": float(prob[:, 0][~inside].mean()) if (~inside).any() else 0.0,
    }


def ctc_decode(probs: np.ndarray, charset: list[str]) -> list[str]:
    """RapidOCR's ``CTCLabelDecode`` (argmax, merge repeats, drop blank 0)."""
    idx = probs.argmax(axis=2)
    out = []
    for row in idx:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        out.append("".join(charset[int(i)] for i in row[keep]))
    return out


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def rec_metrics(probs: np.ndarray, truth: np.ndarray, charset: list[str]) -> dict:
    """Exact-line accuracy and character accuracy (1 - edit distance / length), both with
    spaces removed (the Chinese PP-OCR model often merges or drops spaces)."""
    texts = ctc_decode(probs, charset)
    exact, dist, total = 0, 0, 0
    for t, g in zip(texts, truth, strict=True):
        t, g = t.replace(" ", ""), str(g).replace(" ", "")
        exact += int(t == g)
        dist += _edit_distance(t, g)
        total += len(g)
    return {"n": len(texts), "line_accuracy": exact / max(1, len(texts)), "char_accuracy": 1 - dist / max(1, total)}
