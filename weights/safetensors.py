"""The safetensors format (Hugging Face's `model.safetensors`) read and written with torch alone.

A file is three parts, and nothing in it is executed when read:

    8 bytes          n, the length of the header, unsigned little-endian
    n bytes          JSON: {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
                            "__metadata__": {str: str}}   (optional; transformers wants {"format": "pt"})
    the rest         every tensor's raw little-endian bytes, C order, at [begin, end) after the header

  * `load_file`   path -> {name: tensor}, every entry checked against the file's size
  * `save_file`   {name: tensor} -> path, written atomically, tensors 8-byte aligned as the reference writer
"""

import json
import math
import os
import sys
from pathlib import Path

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER = 100 * 2 ** 20  # the reference library's own limit on the header


def check_byte_order():
    """Tensors are stored little-endian and copied as raw memory: refuse on a big-endian host."""
    if sys.byteorder != "little":
        raise RuntimeError("weights.safetensors copies raw little-endian bytes; this host is big-endian")


def read_header(f, path):
    """The parsed JSON header of an open file -> (entries without '__metadata__', metadata, data start)."""
    size = os.fstat(f.fileno()).st_size
    n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
    if not 0 < n <= min(MAX_HEADER, size - 8):
        raise ValueError(f"{path}: not a safetensors file (header length {n}, file size {size} bytes)")
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file (its header is not JSON: {e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def load_file(path):
    """A safetensors file -> {name: tensor} on the CPU, in the file's dtypes. Raises a ValueError naming the
    file and tensor for an unknown dtype, or offsets that disagree with the shape or run past the file."""
    check_byte_order()
    tensors = {}
    with open(path, "rb") as f:
        header, _, start = read_header(f, path)
        body = os.fstat(f.fileno()).st_size - start
        for name, entry in header.items():
            dtype, shape = DTYPES.get(entry.get("dtype")), entry.get("shape")
            begin, end = entry.get("data_offsets", (0, -1))
            if dtype is None:
                raise ValueError(f"{path}: tensor {name!r} has dtype {entry.get('dtype')!r}; known: {sorted(DTYPES)}")
            nbytes = math.prod(shape) * dtype.itemsize
            if end - begin != nbytes or not 0 <= begin <= end <= body:
                raise ValueError(f"{path}: tensor {name!r} of shape {shape} {entry['dtype']} needs {nbytes} bytes, "
                                 f"its offsets [{begin}, {end}) hold {end - begin} of the {body} in the file")
            if nbytes == 0:
                tensors[name] = torch.empty(shape, dtype=dtype)
                continue
            f.seek(start + begin)
            raw = bytearray(nbytes)  # a fresh, aligned buffer the tensor keeps alive
            f.readinto(raw)
            tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(shape)
    return tensors


def save_file(tensors, path, metadata=None):
    """{name: tensor} -> a safetensors file (CPU copies, contiguous), written to path.tmp then renamed, so a
    crash never leaves a torn file. metadata: {str: str}, e.g. {"format": "pt"} for transformers."""
    check_byte_order()
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    header, offset = ({"__metadata__": metadata} if metadata else {}), 0
    for name, t in tensors.items():
        if t.dtype not in NAMES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {t.dtype}, which safetensors cannot hold")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # padded with spaces (still JSON) so the tensors start 8-byte aligned
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for t in tensors.values():
            f.write(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, through the buffer protocol
    os.replace(tmp, path)
