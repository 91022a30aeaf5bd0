"""Saved models, scored without TensorFlow: read a .keras file with zipfile + json + h5py, predict in numpy.

Importing TensorFlow costs seconds per process; the evaluate stage only needs the
forward pass of the layers schema.Arch.layers lists (keras_model.build_model builds the same list):

    Input((28, 28)) -> Flatten -> Dense(h, activation) [-> Dropout(rate)] per hidden layer -> Dense(10, softmax)

A .keras file is a zip of config.json (the layers), metadata.json and
model.weights.h5, where each layer keeps its weights (a Dense layer's kernel (in, out)
and bias) at ``layers/<class>/vars/{0,1}``: ``layers/dense``, ``layers/dense_1``, ...
(Keras names the groups after the layer class, numbered in order; the group's
``vars`` carries the layer's own name as an attribute, which is checked too).

Loading only reads JSON and arrays: nothing is unpickled or deserialised into
objects, so a file from a shared remote cannot run code. A file whose layers are not
exactly the arch's is refused with ModelFileError rather than guessed at; the arch's
sizes are within what params.yaml allows, so they are checked from the config and the
arrays' declared shapes before any array is read.

The activations follow Keras 3.15 on the TensorFlow backend (its float32 constants),
computed in float64 so that scores are the same on every CPU:
gelu is the exact erf form (Keras' default approximate=False), leaky_relu has
negative_slope 0.2, selu uses TensorFlow's constants, swish (saved as "silu") is x * sigmoid(x).
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from stages.ground.errors import StageError
from stages.lib.schema import MAX_PARAMS, Layer

CONFIG_ENTRY = "config.json"
WEIGHTS_ENTRY = "model.weights.h5"
# The biggest arch params.yaml allows, as float32, plus room for HDF5's own structures.
MAX_WEIGHTS_BYTES = 4 * MAX_PARAMS + (16 << 20)
MAX_CONFIG_BYTES = 1 << 20  # ~1 KB per layer
SAVED_ALIASES = {"silu": "swish"}  # Keras saves activation="swish" as "silu", its function's own name

_F32 = np.float32
_SELU_ALPHA = _F32(1.6732632423543772848170429916717)  # TensorFlow's (Eigen's) constants
_SELU_SCALE = _F32(1.0507009873554804934193349852946)
_LEAKY_SLOPE = _F32(0.2)  # keras.activations.leaky_relu default negative_slope
_SQRT_HALF = _F32(math.sqrt(0.5))
# erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z/2), z >= 0: Numerical Recipes' erfcc (Chebyshev fit,
# relative error < 1.2e-7). In float32 the rounding of z^2 adds a relative error of about z^2 * 1e-7 (only
# seen where erfc < 1e-4), so erfc is within 3.2e-7 absolute everywhere (~1 ulp of 2) and gelu within
# 1.3e-7 * max(|gelu(x)|, 1) (measured against math.erfc). Coefficients from the highest power down.
_ERFC_COEFFS = tuple(_F32(c) for c in (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807,
                                       -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223))


class ModelFileError(StageError):
    """A model file that is missing, damaged or not one of this study's; the message says how to restore it."""


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, _F32(0))


def _leaky_relu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, x * _LEAKY_SLOPE)


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, _F32(0))))


def _selu(x: np.ndarray) -> np.ndarray:
    return _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, _F32(0))))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp only ever sees -|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, _F32(1), e) / (_F32(1) + e)


def _swish(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _erfc_abs(z: np.ndarray) -> np.ndarray:
    """erfc(z) for z >= 0, float32, relative error ~1e-7 (see _ERFC_COEFFS)."""
    t = z * _F32(0.5)
    t += _F32(1)
    np.reciprocal(t, out=t)
    p = t * _ERFC_COEFFS[0]
    for c in _ERFC_COEFFS[1:-1]:
        p += c
        p *= t
    p += _ERFC_COEFFS[-1]
    p -= z * z
    np.exp(p, out=p)
    p *= t
    return p


def erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function of a float32 array (numpy has none)."""
    x = np.asarray(x, dtype=_F32)
    out = _erfc_abs(np.abs(x))
    np.subtract(_F32(2), out, out=out, where=x < 0)
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact gelu as TensorFlow computes it: 0.5 * x * erfc(-x / sqrt(2))."""
    out = _erfc_abs(np.abs(x) * _SQRT_HALF)  # erfc(|x|/sqrt2) = erfc(-x/sqrt2) where x <= 0
    np.subtract(_F32(2), out, out=out, where=x > 0)
    out *= x
    out *= _F32(0.5)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


ACTIVATION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu,
    "elu": _elu,
    "selu": _selu,
    "gelu": _gelu,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "swish": _swish,
    "leaky_relu": _leaky_relu,
    "softmax": _softmax,
}


def _flatten(h: np.ndarray, layer: Layer, weights: tuple[np.ndarray, ...]) -> np.ndarray:
    return h.reshape(len(h), math.prod(h.shape[1:]))  # -1 fails on an empty batch


def _dense(h: np.ndarray, layer: Layer, weights: tuple[np.ndarray, ...]) -> np.ndarray:
    kernel, bias = weights
    h = h @ kernel
    h += bias
    return ACTIVATION_FUNCTIONS[layer.activation](h)


def _identity(h: np.ndarray, layer: Layer, weights: tuple[np.ndarray, ...]) -> np.ndarray:
    return h


# The forward pass of each schema.Layer kind, at inference (where Dropout passes everything on).
FORWARD: dict[str, Callable[[np.ndarray, Layer, tuple[np.ndarray, ...]], np.ndarray]] = {
    "Flatten": _flatten,
    "Dense": _dense,
    "Dropout": _identity,
}


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous: identity is what == means here
class Mlp:
    """The layers of schema.Arch.layers with their weights, applied in order to images flattened by the first."""

    layers: tuple[Layer, ...]
    # Per layer, in Keras' order: a Dense layer's kernel (in, out) and bias (out,); () for a layer without weights.
    weights: tuple[tuple[np.ndarray, ...], ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.layers) or not any(self.weights):
            raise ValueError(f"{len(self.weights)} weight tuples for {len(self.layers)} layers, or none with weights")
        width = self.input_size
        for i, (layer, weights) in enumerate(zip(self.layers, self.weights)):
            if layer.kind not in FORWARD:
                raise ValueError(f"layer {i}: unknown kind {layer.kind!r}")
            if layer.activation is not None and layer.activation not in ACTIVATION_FUNCTIONS:
                raise ValueError(f"layer {i}: unknown activation {layer.activation!r}")
            shapes = layer.weight_shapes(width)
            if tuple(w.shape for w in weights) != shapes or any(w.dtype != _F32 for w in weights):
                raise ValueError(f"layer {i}: weights {[(w.shape, str(w.dtype)) for w in weights]} are not float32 "
                                 f"{list(shapes)}, what a {layer.kind} layer taking the {width} values before it has")
            width = layer.outputs(width)

    @property
    def input_size(self) -> int:
        """Values per image: the rows of the first weights' kernel."""
        return int(next(weights for weights in self.weights if weights)[0].shape[0])

    @property
    def output_size(self) -> int:
        width = self.input_size
        for layer in self.layers:
            width = layer.outputs(width)
        return width

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Outputs (n, output_size) for images x (n, ...) in [0, 1], batch_size rows at a time.

        Computed in float64: BLAS and numpy's vector math pick their kernels per CPU, which
        moves float32 results in the last bits, enough to change a loss written to 6 digits or
        a near tie between two classes. In float64 those differences are ~1e-16.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        x = np.asarray(x)
        n = len(x)
        size = math.prod(x.shape[1:])
        if size != self.input_size:
            raise ValueError(f"images of shape {x.shape[1:]} have {size} values; the model takes {self.input_size}")
        weights = [tuple(w.astype(np.float64) for w in ws) for ws in self.weights]
        out = np.empty((n, self.output_size), dtype=np.float64)
        for start in range(0, n, batch_size):
            h = x[start:start + batch_size].astype(np.float64)
            for layer, ws in zip(self.layers, weights):
                h = FORWARD[layer.kind](h, layer, ws)
            out[start:start + batch_size] = h
        return out

    def count_params(self) -> int:
        return sum(int(w.size) for ws in self.weights for w in ws)


class _Bad(Exception):
    """What is wrong with the file, for ModelFileError."""


def load_mlp(path: Path, layers: tuple[Layer, ...]) -> Mlp:
    """The model saved at path (models/<arch>/seed-<n>.keras), which must have ``layers`` (its schema.Arch.layers),
    or ModelFileError saying how to restore it."""
    path = Path(path)
    try:
        return _load(path, layers)
    except _Bad as err:
        what = str(err)
    except RecursionError:
        what = "config.json is nested too deeply to be a model's"
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError, zipfile.BadZipFile,
            zipfile.LargeZipFile, zlib.error) as err:
        # A file is input: whatever shape it has, it is refused in one line, never a traceback.
        what = f"{type(err).__name__}: {err}"
    raise ModelFileError(
        f"{path}: cannot load model ({what}); restore it with `dvc checkout {path.parent}` "
        f"or retrain with `dvc repro -f train@{path.parent.name}`"
    )


def _load(path: Path, expected: tuple[Layer, ...]) -> Mlp:
    with open(path, "rb") as f:  # FileNotFoundError, IsADirectoryError, ... are reported as they are
        if not zipfile.is_zipfile(f):
            raise _Bad("not a zip file, so not a .keras model")
        with zipfile.ZipFile(f) as archive:
            config = json.loads(_read_entry(archive, CONFIG_ENTRY, MAX_CONFIG_BYTES))
            inputs, layers = _config_layers(config)
            _check_layers(layers, expected)  # sizes are params.yaml's, so bounded, before the weights are read
            weights = _read_entry(archive, WEIGHTS_ENTRY, MAX_WEIGHTS_BYTES)
    with h5py.File(io.BytesIO(weights), "r") as h5:
        arrays, width = [], inputs
        for layer, h5_name in zip(layers, _h5_names(layers)):
            arrays.append(_layer_weights(h5, h5_name, layer, width))
            width = layer.outputs(width)
        extra = sorted(set(_child(h5, "layers", h5py.Group).keys()) - set(_h5_names(layers)))
        if extra:
            raise _Bad(f"{WEIGHTS_ENTRY} has weights for layers {', '.join(extra)} that config.json does not have")
    try:
        return Mlp(layers, tuple(arrays))
    except ValueError as err:
        raise _Bad(str(err)) from None


def _read_entry(archive: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _Bad(f"no {name} in the archive") from None
    if info.file_size > max_bytes:
        raise _Bad(f"{name} is {info.file_size:,} bytes, more than any model params.yaml allows "
                   f"({max_bytes:,} bytes)")
    return archive.read(info)


def _h5_names(layers: tuple[Layer, ...]) -> list[str]:
    """The groups of model.weights.h5 that hold each layer's weights: Keras names them after the layer's class in
    snake case, numbered from the second of a class on (dense, dense_1, ...)."""
    names, seen = [], Counter()
    for layer in layers:
        base = re.sub(r"(?<!^)(?=[A-Z])", "_", layer.kind).lower()
        names.append(f"{base}_{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return names


def _config_layers(config: object) -> tuple[int, tuple[Layer, ...]]:
    """(values per image, the layers after the Input) of config.json, as far as the numpy forward pass runs them."""
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        raise _Bad("config.json is not a Sequential model")
    layers = config.get("config", {}).get("layers") if isinstance(config.get("config"), dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise _Bad("config.json has no list of layers")
    classes = [layer.get("class_name") for layer in layers]
    for cls in classes[1:]:
        if cls not in FORWARD:
            raise _Bad(f"layer class {cls!r} in config.json; only InputLayer, then {', '.join(FORWARD)} are supported")
    if len(classes) < 2 or classes[0] != "InputLayer":
        raise _Bad(f"layers {classes} do not start with an InputLayer")
    shape = _layer_config(layers[0]).get("batch_shape")
    if not (isinstance(shape, list) and len(shape) >= 2 and shape[0] is None
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
        raise _Bad(f"input shape {shape!r} is not [null, positive sizes ...]")
    options = [f.name for f in fields(Layer)[2:]]
    found = []
    for cls, config in zip(classes[1:], map(_layer_config, layers[1:])):
        name = config.get("name")
        _check_plain(cls, name, config)
        values = {key: config.get(key) for key in options}
        if isinstance(values["activation"], str):
            values["activation"] = SAVED_ALIASES.get(values["activation"], values["activation"])
        found.append(Layer(cls, name, **values))
    return math.prod(shape[1:]), tuple(found)


def _check_plain(cls: str, name: object, config: dict) -> None:
    """What the forward pass takes for granted: float32, a bias on every Dense layer, channels last."""
    if cls == "Flatten" and config.get("data_format") != "channels_last":
        raise _Bad(f"Flatten data_format {config.get('data_format')!r} is not 'channels_last'")
    if cls == "Dense" and config.get("use_bias") is not True:
        raise _Bad(f"Dense layer {name!r} has use_bias {config.get('use_bias')!r}, not true")
    for key in ("quantization_config", "lora_rank"):
        if config.get(key):
            raise _Bad(f"{cls} layer {name!r} has {key} {config[key]!r}; only plain float layers are supported")
    dtype = config.get("dtype", "float32")
    if isinstance(dtype, dict):
        dtype = dtype.get("config").get("name") if isinstance(dtype.get("config"), dict) else None
    if dtype != "float32":
        raise _Bad(f"{cls} layer {name!r} computes in {dtype!r}, not float32")


def _check_layers(found: tuple[Layer, ...], expected: tuple[Layer, ...]) -> None:
    """The file's layers are the arch's: anything else was trained for other params, or damaged."""
    if len(found) != len(expected):
        raise _Bad(f"config.json has {len(found)} layers after its Input, params.yaml's arch {len(expected)}")
    for i, (file_layer, arch_layer) in enumerate(zip(found, expected)):
        if file_layer != arch_layer:
            raise _Bad(f"layer {i + 1} after the Input is {_describe(file_layer)} in config.json, "
                       f"{_describe(arch_layer)} in params.yaml's arch")


def _describe(layer: Layer) -> str:
    options = ", ".join(f"{key}={value!r}" for key, value in layer.options.items())
    return f"{layer.kind} {layer.name!r}" + (f" ({options})" if options else "")


def _layer_config(layer: dict) -> dict:
    config = layer.get("config")
    if not isinstance(config, dict):
        raise _Bad(f"{layer.get('class_name')} layer has no config")
    return config


def _child(parent: h5py.Group, name: str, kind: type) -> h5py.Group | h5py.Dataset:
    """parent[name], which must be a group or dataset kept in this file itself (no links to other files)."""
    where = f"{WEIGHTS_ENTRY} {parent.name.lstrip('/')}/{name}".replace(" /", " ")
    link = parent.get(name, getlink=True)
    if link is None:
        raise _Bad(f"{where} is missing")
    if not isinstance(link, h5py.HardLink):
        raise _Bad(f"{where} is a {type(link).__name__}, not data in the file")
    node = parent[name]
    if not isinstance(node, kind):
        raise _Bad(f"{where} is not a {kind.__name__}")
    if isinstance(node, h5py.Dataset) and (node.is_virtual or node.external):
        raise _Bad(f"{where} keeps its data outside the file")
    return node


def _layer_weights(h5: h5py.File, h5_name: str, layer: Layer, inputs: int) -> tuple[np.ndarray, ...]:
    """The weights of ``layer``, kept in group ``h5_name``, when it takes ``inputs`` values."""
    key = f"layers/{h5_name}/vars"
    group = _child(_child(_child(h5, "layers", h5py.Group), h5_name, h5py.Group), "vars", h5py.Group)
    saved_name = group.attrs.get("name")
    if isinstance(saved_name, bytes):
        saved_name = saved_name.decode()
    if saved_name is not None and saved_name != layer.name:
        raise _Bad(f"{WEIGHTS_ENTRY} {key} belongs to layer {saved_name!r}, not {layer.name!r}")
    shapes = layer.weight_shapes(inputs)
    if sorted(group.keys()) != [str(i) for i in range(len(shapes))]:
        raise _Bad(f"{WEIGHTS_ENTRY} {key} holds {sorted(group.keys())}, not the {len(shapes)} arrays of a "
                   f"{layer.kind} layer")
    arrays = []
    for part, shape in enumerate(shapes):
        data = _child(group, str(part), h5py.Dataset)
        # Declared shape and type first: reading an array allocates what it declares.
        if data.shape != shape:
            raise _Bad(f"{WEIGHTS_ENTRY} {key}/{part} of layer {layer.name!r} has shape {data.shape}; "
                       f"expected {shape}")
        if data.dtype != _F32:
            raise _Bad(f"{WEIGHTS_ENTRY} {key}/{part} of layer {layer.name!r} is {data.dtype}, not float32")
        array = data[()]
        array.setflags(write=False)
        arrays.append(array)
    return tuple(arrays)
