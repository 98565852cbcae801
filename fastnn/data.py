"""Data for the validation workloads: notMNIST (loader and a font-rendering generator) and the
regression sets.

notMNIST is the letters A-J rendered in many fonts as 28x28 grey images. The original archives
(notMNIST_small / notMNIST_large: folders A..J of PNGs, a few unreadable) load with
``load_notmnist``; where they are not at hand, ``generate_notmnist`` renders the same kind of data
from the fonts on this machine, split by font so the test set measures generalisation to unseen
typefaces.
"""
import hashlib
import io
import os
import subprocess
import tarfile

import numpy as np

LETTERS = "ABCDEFGHIJ"
FONT_DIRS = ["/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts"),
             os.path.expanduser("~/.local/share/fonts")]
FONT_EXTS = (".ttf", ".otf", ".pfb", ".ttc")


class DataError(ValueError):
    """Data that cannot be used: missing, empty, or without the A..J layout."""


# ---------------------------------------------------------------- notMNIST loader

def _decode_png(data):
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L")
        if im.size != (28, 28):
            raise ValueError(f"size {im.size}")
        return np.asarray(im, dtype=np.uint8)


def _iter_folder(root):
    """(letter, name, bytes) for files under root/**/<A..J>/."""
    found = False
    for dirpath, dirnames, filenames in os.walk(root):
        letter = os.path.basename(dirpath)
        if letter in LETTERS and len(letter) == 1:
            found = True
            for fn in sorted(filenames):
                with open(os.path.join(dirpath, fn), "rb") as f:
                    yield letter, os.path.join(dirpath, fn), f.read()
        dirnames.sort()
    if not found:
        raise DataError(f"{root}: no folders A..J found (expected the notMNIST layout <root>/A/*.png ...)")


def _iter_tar(path):
    found = False
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{path}: not a readable tar archive ({e})") from e
    with tf:
        for m in tf:
            if not m.isfile():
                continue
            parts = m.name.split("/")
            if len(parts) >= 2 and parts[-2] in LETTERS and len(parts[-2]) == 1:
                found = True
                f = tf.extractfile(m)
                yield parts[-2], m.name, f.read() if f else b""
    if not found:
        raise DataError(f"{path}: the archive has no folders A..J (expected notMNIST_small/A/*.png ...)")


def load_notmnist(path, cache_dir=None, verbose=True):
    """Images (N, 28, 28) uint8 and labels (N,) int64 (0 = 'A' ... 9 = 'J') from a notMNIST folder
    or .tar.gz. Unreadable files are skipped and counted (``info['skipped']``). The decoded arrays
    are cached as .npz (in cache_dir, default beside the data) and reused while the source is unchanged.
    """
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    st = os.stat(path)
    key = hashlib.sha1(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    cache_dir = cache_dir or (os.path.dirname(path) if os.path.isfile(path) else path)
    cache = os.path.join(cache_dir, f".notmnist-{key}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        return z["x"], z["y"], {"skipped": int(z["skipped"]), "source": path, "cached": True}
    items = _iter_tar(path) if os.path.isfile(path) else _iter_folder(path)
    xs, ys, skipped = [], [], []
    for letter, name, data in items:
        try:
            xs.append(_decode_png(data))
            ys.append(LETTERS.index(letter))
        except Exception:  # the originals contain a few truncated/empty PNGs
            skipped.append(name)
    if not xs:
        raise DataError(f"{path}: no readable images")
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    if verbose and skipped:
        print(f"notMNIST: skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}")
    try:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez_compressed(cache, x=x, y=y, skipped=len(skipped))
    except OSError:
        pass
    return x, y, {"skipped": len(skipped), "source": path, "cached": False}


# ---------------------------------------------------------------- notMNIST-style generator

def find_fonts():
    """Font files on this machine: system font folders, fontconfig's list, matplotlib's bundled fonts."""
    paths = set()
    for d in FONT_DIRS:
        for dirpath, _, filenames in os.walk(d):
            for fn in filenames:
                if fn.lower().endswith(FONT_EXTS):
                    paths.add(os.path.realpath(os.path.join(dirpath, fn)))
    try:
        out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, timeout=20)
        for line in out.stdout.splitlines():
            if line.lower().endswith(FONT_EXTS) and os.path.exists(line):
                paths.add(os.path.realpath(line))
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import matplotlib
        d = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
        for fn in os.listdir(d):
            if fn.lower().endswith(FONT_EXTS):
                paths.add(os.path.realpath(os.path.join(d, fn)))
    except (ImportError, OSError):
        pass
    return sorted(paths)


def _render_large(font, ch, canvas=128):
    from PIL import Image, ImageDraw
    im = Image.new("L", (canvas * 2, canvas * 2), 0)
    ImageDraw.Draw(im).text((canvas // 2, canvas // 2), ch, fill=255, font=font)
    return im


def _fit28(im, jitter_rng=None):
    """Crop to the ink, fit into 28x28 keeping the aspect ratio, optionally jitter with a small affine map."""
    from PIL import Image
    bbox = im.getbbox()
    if bbox is None:
        return None
    glyph = im.crop(bbox)
    w, h = glyph.size
    if jitter_rng is not None:
        angle = jitter_rng.uniform(-8, 8)
        shear = jitter_rng.uniform(-0.15, 0.15)
        glyph = glyph.transform((int(w + abs(shear) * h) + 1, h), Image.AFFINE,
                                (1, shear, -shear * h if shear > 0 else 0, 0, 1, 0), resample=Image.BILINEAR)
        glyph = glyph.rotate(angle, resample=Image.BILINEAR, expand=True)
        bb = glyph.getbbox()
        if bb is None:
            return None
        glyph = glyph.crop(bb)
        w, h = glyph.size
    scale = 28.0 / max(w, h)
    if jitter_rng is not None:
        scale *= jitter_rng.uniform(0.85, 1.0)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    glyph = glyph.resize((nw, nh), Image.LANCZOS)
    out = Image.new("L", (28, 28), 0)
    ox, oy = (28 - nw) // 2, (28 - nh) // 2
    if jitter_rng is not None:
        ox = min(max(0, ox + int(jitter_rng.integers(-1, 2))), 28 - nw)
        oy = min(max(0, oy + int(jitter_rng.integers(-1, 2))), 28 - nh)
    out.paste(glyph, (ox, oy))
    return np.asarray(out, dtype=np.uint8)


def render_font(path, size=96):
    """The ten letters A..J of one font as (10, 28, 28) uint8, or None when the font cannot render
    them all as distinct glyphs (missing letters, symbol fonts, unreadable files)."""
    from PIL import ImageFont
    try:
        font = ImageFont.truetype(path, size)
    except Exception:
        return None
    try:
        notdef = _render_large(font, "\ue000").tobytes()  # a private-use code point: the font's 'missing' glyph
        larges = [_render_large(font, ch) for ch in LETTERS]
    except Exception:
        return None
    if any(im.tobytes() == notdef for im in larges):
        return None
    out = [_fit28(im) for im in larges]
    if any(o is None for o in out):
        return None
    out = np.stack(out)
    if len({o.tobytes() for o in out}) < len(LETTERS):
        return None
    if min(int((o > 64).sum()) for o in out) < 12:  # hairline or nearly blank renders
        return None
    return out


def usable_fonts(paths=None, verbose=False):
    """(path, clean glyphs) for each font that renders A..J, dropping exact duplicates of another font."""
    paths = find_fonts() if paths is None else paths
    seen, out = set(), []
    for p in paths:
        g = render_font(p)
        if g is None:
            continue
        h = hashlib.sha1(g.tobytes()).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        out.append((p, g))
    if verbose:
        print(f"fonts: {len(out)} usable of {len(paths)} found")
    return out


def generate_notmnist(seed=0, variants=4, split=(0.8, 0.1, 0.1), max_fonts=None, fonts=None, progress=False):
    """notMNIST-style data rendered from the machine's fonts.

    Each usable font gives the clean letters plus ``variants - 1`` jittered copies of each. Fonts are
    shuffled with ``seed`` and split train/val/test by font, so no typeface appears in two splits.
    Returns {"train": (x, y), "val": (x, y), "test": (x, y), "fonts": {split: [paths]}}.
    """
    from PIL import ImageFont  # noqa: F401  (fail early with a clear ImportError)
    fonts = usable_fonts() if fonts is None else fonts
    if len(fonts) < 3:
        raise DataError(f"only {len(fonts)} usable fonts found; install some (scripts/install_fonts.sh) "
                        "or pass --data-dir with the real notMNIST")
    order = np.random.default_rng(seed).permutation(len(fonts))
    if max_fonts:
        order = order[:max_fonts]
    n = len(order)
    n_test = max(1, int(round(split[2] * n)))
    n_val = max(1, int(round(split[1] * n)))
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    out = {"fonts": {}}
    it = parts.items()
    for name, idx in it:
        xs, ys = [], []
        for fi in idx:
            path, clean = fonts[fi]
            for li in range(len(LETTERS)):
                xs.append(clean[li])
                ys.append(li)
            if variants > 1:
                from PIL import ImageFont as IF
                font = IF.truetype(path, 96)
                for li, ch in enumerate(LETTERS):
                    large = _render_large(font, ch)
                    for v in range(variants - 1):
                        rng = np.random.default_rng([seed, int(fi), li, v])
                        img = _fit28(large, rng)
                        if img is not None:
                            xs.append(img)
                            ys.append(li)
        out[name] = (np.stack(xs), np.asarray(ys, dtype=np.int64))
        out["fonts"][name] = [fonts[i][0] for i in idx]
    return out


# ---------------------------------------------------------------- regression data

def linear_data(n=10_000, seed=0):
    """y = 5 x1 + 3 x2 + noise with x ~ 100 * N(0, 1): raw scale, as people first try it."""
    rng = np.random.default_rng(seed)
    x = 100.0 * rng.standard_normal((n, 2))
    y = 5 * x[:, :1] + 3 * x[:, 1:] + rng.standard_normal((n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def toy_function(x):
    return np.sin(x / 15 - 4) + 2 + np.sin(x / 10 - 5)


def toy_data(seed=0, per_unit=100, noise=0.2):
    """sin(x/15 - 4) + 2 + sin(x/10 - 5) on x in [50, 150] with N(0, noise) added; per_unit samples per unit step."""
    rng = np.random.default_rng(seed)
    x = np.linspace(50, 150, 100 * per_unit + 1)
    y = toy_function(x) + noise * rng.standard_normal(x.shape)
    return x[:, None].astype(np.float32), y[:, None].astype(np.float32)


WIDE_WEIGHTS_DATA = "y = x w + 0.5 + N(0, 0.5^2), 16 standard normal features, w ~ U(-3, 3); 4096 train / 1024 test"


def wide_weights_data(seed=0, n=4096, n_test=1024, features=16, noise=0.5):
    """Linear regression data whose weights are O(1) (WIDE_WEIGHTS_DATA): ((x, y), (x_test, y_test)), float32."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-3, 3, features)
    x = rng.standard_normal((n + n_test, features))
    y = x @ w + 0.5 + noise * rng.standard_normal(n + n_test)
    x, y = x.astype(np.float32), y[:, None].astype(np.float32)
    return (x[:n], y[:n]), (x[n:], y[n:])


def diabetes_data(seed=0, test_fraction=0.2):
    """scikit-learn's bundled diabetes data (442 x 10, offline) with a fixed train/test split."""
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    x, y = d.data.astype(np.float32), d.target.astype(np.float32)[:, None]
    idx = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = idx[:n_test], idx[n_test:]
    return (x[tr], y[tr]), (x[te], y[te])
