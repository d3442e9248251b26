"""The Open Inference Protocol (KServe V2 / Triton HTTP) codec: typed tensors in JSON, plus the
binary tensor data extension that ``tritonclient`` uses by default.

Pure numpy: parses ``POST /v2/models/{name}/infer`` bodies into model feeds and encodes the
outputs; the HTTP routes live in :mod:`edgekit.serve.v2_routes`. Inputs must have the model's exact
datatype (as on Triton); no preprocessing is applied (the outputs are :meth:`EdgeModel.run`'s).

Datatypes as KServe and Triton read them: ``BYTES`` (onnxruntime string tensors) is a JSON list
of strings, or in binary each element as a 4-byte little-endian length and its UTF-8 bytes;
``FP16`` travels only as binary data (JSON has no half-precision numbers), so FP16 ``data`` in
JSON and FP16 outputs asked for as JSON are refused with 400. An input carries either ``data``
or ``binary_data_size``, not both.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import InputError

__all__ = [
    "V2_DTYPES",
    "BYTES",
    "HEADER_LENGTH",
    "InferRequest",
    "v2_datatype",
    "default_model_name",
    "check_model_name",
    "tensor_metadata",
    "parse_infer_request",
    "encode_infer_response",
]

#: Open Inference Protocol datatypes -> numpy dtypes (little-endian, as on the wire).
V2_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}  # fmt: skip
_BY_NUMPY = {dt.newbyteorder("="): name for name, dt in V2_DTYPES.items()}
#: The datatype of string tensors (not in :data:`V2_DTYPES`: elements vary in size).
BYTES = "BYTES"
#: Header giving the length of the JSON part of a body carrying binary tensor data.
HEADER_LENGTH = "inference-header-content-length"


def v2_datatype(dtype: np.dtype[Any] | None) -> str:
    """The V2 datatype name of a numpy dtype (``"BYTES"`` for anything else)."""
    if dtype is None:
        return BYTES
    return _BY_NUMPY.get(np.dtype(dtype).newbyteorder("="), BYTES)


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_model_name(name: str) -> None:
    """Raise :class:`InputError` unless ``name`` is a valid served / Triton model name."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(
            f"model name {name!r} is not valid",
            hint="use letters, digits, '_', '-' and '.', starting with a letter or digit",
        )


def default_model_name(path: str | os.PathLike[str]) -> str:
    """The served / packaged name of a model file: its stem, limited to ``[A-Za-z0-9_.-]``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(path))[0])
    return stem.lstrip("._-") or "model"


def tensor_metadata(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """``[{"name", "datatype", "shape"}]`` of model inputs/outputs (-1 for dynamic dims)."""
    return [
        {
            "name": s.name,
            "datatype": v2_datatype(s.dtype),
            "shape": [-1 if d is None else int(d) for d in s.shape],
        }
        for s in specs
    ]


@dataclass
class InferRequest:
    """A parsed infer request: feeds, the outputs asked for and how to send them."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[tuple[str, bool]]  # (name, binary)


def _bad(message: str) -> InputError:
    return InputError(message, hint="see the Open Inference Protocol (KServe V2) request format")


def _obj(x: Any, what: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise _bad(f"{what} must be a JSON object")
    return x


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in raw
    ):
        raise _bad(f"input {name!r}: 'shape' must be a list of non-negative integers")
    return tuple(raw)


def _flatten(data: Any) -> list[Any]:
    """Row-major flattening of nested JSON lists (the protocol allows both forms)."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _input_datatype(spec: Any) -> str:
    """The V2 datatype an input is sent as (:class:`InputError` for types it cannot carry)."""
    if spec.dtype is not None:
        return v2_datatype(spec.dtype)
    if spec.is_string:
        return BYTES
    raise InputError(
        f"input {spec.name!r} has type {spec.type}, which the Open Inference Protocol route "
        "does not carry",
        hint="serve a model with numeric or string inputs",
    )


def _fp16_as_json(kind: str, name: str) -> InputError:
    """The refusal of FP16 ``data`` in JSON (``kind`` "input" or "output"), as on KServe."""
    hint = (
        "send it as binary tensor data ('binary_data_size', binary_data=True in the clients)"
        if kind == "input"
        else 'ask for it as binary data: "parameters": {"binary_data": true} on the output, '
        'or the request parameter "binary_data_output": true'
    )
    return InputError(
        f"{kind} {name!r} is FP16, which travels only as binary data (JSON has no "
        "half-precision numbers)",
        hint=hint,
    )


def _tensor(
    raw: Any, binary: memoryview, offset: int, specs: dict[str, Any]
) -> tuple[str, np.ndarray, int]:
    t = _obj(raw, "each input")
    name = t.get("name")
    if not isinstance(name, str):
        raise _bad("each input needs a 'name' string")
    spec = specs.get(name)
    if spec is None:
        raise InputError(
            f"unknown input name {name!r}",
            hint=f"the model's inputs are {', '.join(map(repr, specs))}",
        )
    shape = _shape(t.get("shape"), name)
    datatype = t.get("datatype")
    want = _input_datatype(spec)
    if datatype != want:
        raise InputError(f"input {name!r} needs datatype {want}, got {datatype!r}")
    count = math.prod(shape)
    params = t.get("parameters") or {}
    size = _obj(params, f"input {name!r} 'parameters'").get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _bad(f"input {name!r}: 'binary_data_size' must be a non-negative integer")
        if "data" in t:
            raise _bad(f"input {name!r} has both 'data' and binary data ('binary_data_size')")
        arr = _binary_tensor(name, want, count, shape, binary[offset:], size)
        return name, arr.reshape(shape), offset + size
    if "data" not in t:
        raise _bad(f"input {name!r} has neither 'data' nor binary data")
    if want == "FP16":
        raise _fp16_as_json("input", name)
    flat = _flatten(t["data"])
    if len(flat) != count:
        raise _bad(f"input {name!r}: {len(flat)} values do not fit shape {list(shape)}")
    arr = _strings(name, flat) if want == BYTES else _numbers(name, datatype, flat)
    return name, arr.reshape(shape), offset


def _binary_tensor(
    name: str, datatype: str, count: int, shape: tuple[int, ...], rest: memoryview, size: int
) -> np.ndarray:
    """An input's ``size`` bytes of binary data from the start of ``rest`` as a flat array."""
    if datatype != BYTES:
        dtype = V2_DTYPES[datatype]
        if size != count * dtype.itemsize:
            raise _bad(
                f"input {name!r}: {size} bytes of binary data do not hold shape {list(shape)} "
                f"of {datatype} ({count * dtype.itemsize} bytes)"
            )
    if size > len(rest):
        raise _bad(f"input {name!r}: the body ends inside its binary data")
    if datatype == BYTES:
        return _binary_strings(name, count, rest[:size])
    return np.frombuffer(rest[:size], dtype=V2_DTYPES[datatype])


def _binary_strings(name: str, count: int, buf: memoryview) -> np.ndarray:
    """``count`` BYTES elements (4-byte little-endian length, then the bytes) filling ``buf``,
    as UTF-8 text (onnxruntime's string tensors hold text)."""
    if count * 4 > len(buf):  # every element needs its length: refused before allocating
        raise _bad(f"input {name!r}: {len(buf)} bytes of BYTES data cannot hold {count} "
                   "elements")  # fmt: skip
    out = np.empty(count, dtype=object)
    pos, end = 0, len(buf)
    for i in range(count):
        n = int.from_bytes(buf[pos : pos + 4], "little") if pos + 4 <= end else -1
        pos += 4
        if n < 0 or pos + n > end:
            raise _bad(f"input {name!r}: BYTES element {i} runs past its binary data")
        try:
            out[i] = str(buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError:
            raise InputError(
                f"input {name!r}: BYTES element {i} is not UTF-8 text",
                hint="onnxruntime string tensors hold text; encode it as UTF-8",
            ) from None
        pos += n
    if pos != end:
        raise _bad(f"input {name!r}: {end - pos} bytes of its binary data follow its {count} "
                   "BYTES elements")  # fmt: skip
    return out


def _strings(name: str, flat: list[Any]) -> np.ndarray:
    """JSON BYTES data: a (nested) list of strings, as a flat object array of ``str``."""
    if not all(isinstance(v, str) for v in flat):
        raise InputError(f"input {name!r}: BYTES data must be strings")
    try:
        "".join(flat).encode()
    except UnicodeEncodeError:
        raise InputError(f"input {name!r}: BYTES data holds unpaired surrogates (\\ud800 ...)",
                         hint="send valid Unicode text") from None  # fmt: skip
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return arr


def _numbers(name: str, datatype: str, flat: list[Any]) -> np.ndarray:
    """JSON numeric data as a flat array of ``datatype`` (no silent float -> int or bool)."""
    dtype = V2_DTYPES[datatype]
    numeric = (int, float)
    if dtype.kind != "b" and any(isinstance(v, bool) or not isinstance(v, numeric) for v in flat):
        raise InputError(f"input {name!r}: {datatype} data must be numbers")
    if dtype.kind == "b" and any(not isinstance(v, bool) for v in flat):
        raise InputError(f"input {name!r}: BOOL data must be true/false")
    if dtype.kind in "iu" and any(isinstance(v, float) for v in flat):
        raise InputError(f"input {name!r}: {datatype} data must be integers")
    try:
        return np.asarray(flat, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"input {name!r}: values do not fit {datatype}: {exc}") from None


def parse_infer_request(
    body: bytes, header_length: int | None, inputs: Sequence[Any], outputs: Sequence[Any]
) -> InferRequest:
    """Parse an infer body (JSON, then binary tensors when ``header_length`` is given).

    ``inputs`` / ``outputs`` are the model's :class:`~edgekit.runtime.model.InputSpec` lists. Every
    mistake raises :class:`InputError` (answered with 400).
    """
    if header_length is not None and not 0 <= header_length <= len(body):
        raise _bad(f"{HEADER_LENGTH} {header_length} is outside the body ({len(body)} bytes)")
    cut = len(body) if header_length is None else header_length
    try:
        req = json.loads(bytes(body[:cut]))
    except (ValueError, RecursionError) as exc:
        raise _bad(f"malformed JSON: {exc}") from None
    req = _obj(req, "the request")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad("'id' must be a string")
    params = _obj(req.get("parameters") or {}, "'parameters'")
    binary_default = params.get("binary_data_output", False) is True
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("'inputs' must be a non-empty list of tensors")
    specs = {s.name: s for s in inputs}
    feeds: dict[str, np.ndarray] = {}
    binary, offset = memoryview(body)[cut:], 0
    for raw in raw_inputs:
        name, arr, offset = _tensor(raw, binary, offset, specs)
        if name in feeds:
            raise _bad(f"input {name!r} is given twice")
        feeds[name] = arr
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data belong to no input")
    known = [s.name for s in outputs]
    wanted: list[tuple[str, bool]] = []
    raw_outputs = req.get("outputs")
    if raw_outputs is None:
        wanted = [(n, binary_default) for n in known]
    elif not isinstance(raw_outputs, list):
        raise _bad("'outputs' must be a list")
    else:
        for raw in raw_outputs:
            o = _obj(raw, "each output")
            out_name = o.get("name")
            if out_name not in known:
                raise InputError(
                    f"unknown output name {out_name!r}",
                    hint=f"the model's outputs are {', '.join(map(repr, known))}",
                )
            oparams = _obj(o.get("parameters") or {}, f"output {out_name!r} 'parameters'")
            wanted.append((str(out_name), oparams.get("binary_data", binary_default) is True))
    fp16 = {s.name for s in outputs if s.dtype is not None and v2_datatype(s.dtype) == "FP16"}
    for out_name, as_binary in wanted:
        if not as_binary and out_name in fp16:
            raise _fp16_as_json("output", out_name)
    return InferRequest(rid, feeds, wanted)


def encode_infer_response(
    model_name: str,
    request: InferRequest,
    output_names: Sequence[str],
    values: Sequence[np.ndarray],
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the JSON part's length."""
    by_name = dict(zip(output_names, values, strict=True))
    tensors, blobs = [], []
    for name, binary in request.outputs:
        arr = np.ascontiguousarray(by_name[name])
        t: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(arr.dtype),
            "shape": list(arr.shape),
        }
        if binary:
            blob = _blob(arr)
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if t["datatype"] == "FP16":
                raise _fp16_as_json("output", name)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InputError(
                    f"output {name!r} holds NaN or infinite values for these inputs",
                    hint="ask for binary output data to receive them as they are",
                )
            t["data"] = arr.ravel().tolist()
        tensors.append(t)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": tensors}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _blob(arr: np.ndarray) -> bytes:
    """An output's binary tensor data: little-endian values, or for BYTES (object arrays of
    ``str``) each element's 4-byte little-endian length and UTF-8 bytes."""
    if arr.dtype.kind != "O":
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    parts = []
    for v in arr.ravel().tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts += [len(b).to_bytes(4, "little"), b]
    return b"".join(parts)
