"""Byte-for-byte reproducible safetensors writing for the ONNX fixtures.

safetensors' own save_file keeps `__metadata__` in a Rust HashMap, so its key order (and so the file's
bytes) changes from run to run. This writer sorts tensors and metadata by name: the same tensors give
the same file. The layout is the format's: u64 little-endian header length, the JSON header (padded
with spaces to a multiple of 8 bytes), then the little-endian data in header order.
"""
import json
import struct

import numpy as np


def save_f32(path, tensors, metadata):
    """Writes `tensors` (name -> array, stored as F32) with string `metadata`, then reads it back to check."""
    header = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)

    from safetensors import safe_open   # the reference reader must agree
    with safe_open(path, "np") as f:
        assert f.metadata() == header["__metadata__"], "metadata did not round-trip"
        for name in tensors:
            got = f.get_tensor(name)
            assert got.dtype == np.float32 and np.array_equal(got, np.asarray(tensors[name], dtype=np.float32)), name
