"""fastnn.data: the notMNIST loader, the font-rendering generator and the regression sets."""
import io
import os
import tarfile

import numpy as np
import pytest

from fastnn import data as fdata

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _png(seed):
    arr = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return arr, buf.getvalue()


def _make_tree(root, per_letter=3, bad=True):
    want = []
    for li, letter in enumerate(fdata.LETTERS):
        os.makedirs(os.path.join(root, "notMNIST_small", letter))
        for k in range(per_letter):
            arr, raw = _png(li * 100 + k)
            with open(os.path.join(root, "notMNIST_small", letter, f"img{k}.png"), "wb") as f:
                f.write(raw)
            want.append((letter, k, arr))
    if bad:  # like the originals: a truncated PNG
        with open(os.path.join(root, "notMNIST_small", "C", "broken.png"), "wb") as f:
            f.write(_png(999)[1][:40])
    return want


def test_loader_reads_tarball_and_skips_unreadable(tmp_path):
    src = tmp_path / "src"
    want = _make_tree(str(src))
    tar = tmp_path / "notMNIST_small.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(src / "notMNIST_small", arcname="notMNIST_small")
    x, y, info = fdata.load_notmnist(str(tar), cache_dir=str(tmp_path / "cache"), verbose=False)
    assert x.shape == (30, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert info["skipped"] == 1
    assert np.bincount(y).tolist() == [3] * 10
    by_label = {(fdata.LETTERS[l], i): img for i, (img, l) in enumerate(zip(x, y))}
    got_a = sorted(img.tobytes() for (l, _), img in by_label.items() if l == "A")
    assert got_a == sorted(arr.tobytes() for letter, _, arr in want if letter == "A")
    # second call comes from the cache, same data
    x2, y2, info2 = fdata.load_notmnist(str(tar), cache_dir=str(tmp_path / "cache"), verbose=False)
    assert info2["cached"] and np.array_equal(x, x2) and np.array_equal(y, y2)


def test_loader_reads_folder(tmp_path):
    _make_tree(str(tmp_path), per_letter=2, bad=False)
    x, y, info = fdata.load_notmnist(str(tmp_path), cache_dir=str(tmp_path / "c"), verbose=False)
    assert len(x) == 20 and info["skipped"] == 0


def test_loader_rejects_bad_sources(tmp_path):
    with pytest.raises(fdata.DataError, match="no such file"):
        fdata.load_notmnist(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(fdata.DataError, match="no folders A..J"):
        fdata.load_notmnist(str(tmp_path / "empty"))
    tar = tmp_path / "other.tar.gz"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "readme.txt").write_text("hi")
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tmp_path / "x", arcname="x")
    with pytest.raises(fdata.DataError, match="no folders A..J"):
        fdata.load_notmnist(str(tar))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    with pytest.raises(fdata.DataError, match="not a readable tar"):
        fdata.load_notmnist(str(junk))


@pytest.fixture(scope="module")
def fonts():
    f = fdata.usable_fonts()
    if len(f) < 3:
        pytest.skip("fewer than 3 usable fonts on this machine")
    return f


def test_generator_is_deterministic_and_font_disjoint(fonts):
    a = fdata.generate_notmnist(seed=3, variants=2, fonts=fonts)
    b = fdata.generate_notmnist(seed=3, variants=2, fonts=fonts)
    for split in ("train", "val", "test"):
        assert np.array_equal(a[split][0], b[split][0]) and np.array_equal(a[split][1], b[split][1])
        assert a[split][0].shape[1:] == (28, 28) and a[split][0].dtype == np.uint8
        assert set(np.unique(a[split][1])) == set(range(10))
    f = a["fonts"]
    assert not set(f["train"]) & set(f["test"]) and not set(f["train"]) & set(f["val"])
    assert not set(f["val"]) & set(f["test"])
    assert len(f["train"]) + len(f["val"]) + len(f["test"]) == len(fonts)
    c = fdata.generate_notmnist(seed=4, variants=2, fonts=fonts)
    assert c["fonts"]["test"] != f["test"] or not np.array_equal(c["train"][0], a["train"][0])


def test_generator_images_look_like_notmnist(fonts):
    glyphs = fonts[0][1]
    assert glyphs.shape == (10, 28, 28)
    for g in glyphs:
        ys, xs = np.nonzero(g > 32)
        # white on black, fitted to the box: touches two opposite edges, background black
        assert g.max() >= 200 and (ys.min() <= 1 and ys.max() >= 26 or xs.min() <= 1 and xs.max() >= 26)
        assert g[0, 0] == 0 or g[27, 27] == 0


def test_font_without_letters_is_dropped(tmp_path):
    bogus = tmp_path / "bogus.ttf"
    bogus.write_bytes(b"\x00" * 100)
    assert fdata.render_font(str(bogus)) is None


def test_regression_data():
    x, y = fdata.linear_data(n=1000, seed=0)
    coef = np.linalg.lstsq(x, y, rcond=None)[0].ravel()
    assert np.allclose(coef, [5, 3], atol=0.01) and x.std() > 50
    x, y = fdata.toy_data(seed=0)
    assert x.min() == 50 and x.max() == 150 and len(x) == 10001
    assert abs(np.std(y - fdata.toy_function(x)) - 0.2) < 0.01
    (xtr, ytr), (xte, yte) = fdata.diabetes_data(seed=0)
    assert xtr.shape[1] == 10 and len(xtr) + len(xte) == 442
    (xtr2, _), _ = fdata.diabetes_data(seed=0)
    assert np.array_equal(xtr, xtr2)
