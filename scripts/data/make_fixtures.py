#!/usr/bin/env python3
"""Writes the "bring your own data" fixtures with NumPy and Pillow: the first N Fashion-MNIST test images as a
PNG folder (ImageFolder layout, one folder per class) and as .npy / .npz, small JPEG and PNG variants, and hostile
files. The Swift tests read what this wrote (Tests/Fixtures/data/); they never run Python.

    PY=/work/peers/.venv/bin/python          # numpy and Pillow
    $PY scripts/data/make_fixtures.py                             # 64 images + variants -> Tests/Fixtures/data/
    $PY scripts/data/make_fixtures.py --count 1024 --out /tmp/fm1024 --images-only   # the 1,024-image check

Class folders are named "0_T-shirt-top", "1_Trouser", ...: sorted, they keep the dataset's class order (torchvision's
ImageFolder and AdvKit both label by sorted folder names), and no name holds a "/".
"""
import argparse
import gzip
import json
import os
import struct

import numpy as np
from PIL import Image

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def folder_name(k):
    return f"{k}_{CLASSES[k].replace('/', '-').replace(' ', '-')}"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    assert data[0] == 0 and data[1] == 0 and data[2] == 8, "uint8 IDX"
    rank = data[3]
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def write_images(x, y, out):
    """The PNG folder and the arrays of the images x (N, 28, 28) uint8 with labels y."""
    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, "png")
    for k in range(10):
        os.makedirs(os.path.join(png, folder_name(k)), exist_ok=True)
    for i, (img, label) in enumerate(zip(x, y)):
        Image.fromarray(img, mode="L").save(os.path.join(png, folder_name(int(label)), f"{i:05d}.png"))
    np.save(os.path.join(out, "uint8_nhw.npy"), x)                                        # (N, 28, 28) uint8
    np.save(os.path.join(out, "float32_nhwc.npy"), (x.astype(np.float32) / 255)[..., None])  # (N, 28, 28, 1)
    np.save(os.path.join(out, "labels.npy"), y.astype(np.int64))
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.write("\n".join(folder_name(k) for k in range(10)) + "\n")


def write_variants(x, y, out):
    """Other dtypes, orders and containers of the same images, JPEG and PNG kinds, and hostile files."""
    n = len(x)
    f32 = x.astype(np.float32) / 255
    np.savez(os.path.join(out, "stored.npz"), x=x, y=y.astype(np.uint8))             # stored members
    np.savez_compressed(os.path.join(out, "deflated.npz"), x_test=f32, y_test=y)       # deflated members
    # The first 8 images in other dtypes and orders (small files).
    np.save(os.path.join(out, "float64_nchw8.npy"), f32[:8].astype(np.float64)[:, None])  # (8, 1, 28, 28) float64
    np.save(os.path.join(out, "fortran_nhw8.npy"), np.asfortranarray(f32[:8]))            # column-major
    np.save(os.path.join(out, "bigendian_nhw8.npy"), f32[:8].astype(">f4"))               # big-endian
    np.save(os.path.join(out, "float16_nhw8.npy"), f32[:8].astype(np.float16))
    np.save(os.path.join(out, "onehot.npy"), np.eye(10, dtype=np.float32)[y])

    # JPEG and PNG kinds, with the pixels Pillow decodes, to compare AdvKit's libjpeg/libpng decoding with.
    kinds = os.path.join(out, "kinds")
    os.makedirs(kinds, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:32]
    rgb = np.stack([(xx * 8) % 256, (yy * 10) % 256, ((xx + yy) * 5) % 256], -1).astype(np.uint8)
    rgb[8:16, 8:16] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pixels = {}
    Image.fromarray(rgb, "RGB").save(os.path.join(kinds, "rgb.jpg"), quality=90)
    Image.fromarray(rgb, "RGB").save(os.path.join(kinds, "progressive.jpg"), quality=90, progressive=True)
    Image.fromarray(x[0], "L").save(os.path.join(kinds, "gray.jpg"), quality=95)
    Image.fromarray(rgb, "RGB").convert("CMYK").save(os.path.join(kinds, "cmyk.jpg"))
    Image.fromarray(rgb, "RGB").save(os.path.join(kinds, "rgb.png"))
    Image.fromarray(rgb, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(os.path.join(kinds, "palette.png"))
    rgba = np.concatenate([rgb, np.full((24, 32, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(os.path.join(kinds, "rgba.png"))
    Image.fromarray(x[1], "L").save(os.path.join(kinds, "gray.png"))
    Image.fromarray((x[2].astype(np.uint16) * 257)).save(os.path.join(kinds, "gray16.png"))
    for name in ["rgb.jpg", "progressive.jpg", "gray.jpg", "rgb.png", "palette.png", "rgba.png", "gray.png"]:
        img = Image.open(os.path.join(kinds, name))
        img = img.convert("L" if img.mode in ("L", "LA") else "RGB")
        pixels[name] = np.asarray(img).reshape(-1).tolist()
    pixels["gray16.png"] = np.asarray(Image.open(os.path.join(kinds, "gray16.png"))).astype(np.int64).reshape(-1).tolist()
    rgb_png = Image.open(os.path.join(kinds, "rgb.png"))
    pixels["rgb.png resized 12x16"] = np.asarray(rgb_png.resize((16, 12), Image.Resampling.BILINEAR)).reshape(-1).tolist()
    pixels["rgb.png resized 40x52"] = np.asarray(rgb_png.resize((52, 40), Image.Resampling.BILINEAR)).reshape(-1).tolist()
    pixels["rgb.png L"] = np.asarray(Image.open(os.path.join(kinds, "rgb.png")).convert("L")).reshape(-1).tolist()
    with open(os.path.join(kinds, "pixels.json"), "w") as f:
        json.dump(pixels, f)

    # Hostile files.
    bad = os.path.join(out, "hostile")
    os.makedirs(bad, exist_ok=True)
    # An object array: its data is a pickle (a harmless one here; AdvKit must refuse before reading it).
    np.save(os.path.join(bad, "pickled.npy"), np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with open(os.path.join(out, "png", folder_name(int(y[0])), f"{0:05d}.png"), "rb") as f:
        png = f.read()
    with open(os.path.join(bad, "truncated.png"), "wb") as f:
        f.write(png[: len(png) // 2])
    with open(os.path.join(kinds, "rgb.jpg"), "rb") as f:
        jpg = f.read()
    with open(os.path.join(bad, "truncated.jpg"), "wb") as f:
        f.write(jpg[: len(jpg) * 2 // 3])
    # A header lying about its size: shape (64, 28, 28) uint8 claims 50,176 bytes, the file holds 784.
    good = open(os.path.join(out, "uint8_nhw.npy"), "rb").read()
    header_end = 10 + struct.unpack("<H", good[8:10])[0]
    with open(os.path.join(bad, "lying_header.npy"), "wb") as f:
        f.write(good[:header_end] + good[header_end:header_end + 784])
    mixed = os.path.join(bad, "mixed_sizes")
    os.makedirs(mixed, exist_ok=True)
    Image.fromarray(x[0], "L").save(os.path.join(mixed, "a.png"))
    Image.fromarray(x[1], "L").resize((32, 30)).save(os.path.join(mixed, "b.png"))
    print(f"wrote {n} images and variants to {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "data"))
    p.add_argument("--images-only", action="store_true", help="only the PNG folder and the .npy files")
    a = p.parse_args()
    x = read_idx(os.path.join(a.data_dir, "t10k-images-idx3-ubyte.gz"))[: a.count]
    y = read_idx(os.path.join(a.data_dir, "t10k-labels-idx1-ubyte.gz"))[: a.count]
    out = os.path.normpath(a.out)
    write_images(x, y, out)
    if not a.images_only:
        write_variants(x, y, out)
    else:
        print(f"wrote {len(x)} images to {out}/png, {out}/uint8_nhw.npy, {out}/float32_nhwc.npy, {out}/labels.npy")


if __name__ == "__main__":
    main()
