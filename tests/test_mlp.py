"""stages.lib.mlp: saved models scored in numpy give Keras' numbers, and damaged files say how to restore them.

Keras is imported here only to build, save and run the reference models; the
module under test must not import it (checked in a fresh interpreter).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from harness import ROOT, declare_huge_kernel, edit_config, edit_weights, rewrite, set_dense

from stages.lib import keras_model as km  # noqa: E402
from stages.lib import mlp  # noqa: E402
from stages.lib.mlp import ACTIVATION_FUNCTIONS, Mlp, ModelFileError, erfc, load_mlp  # noqa: E402
from stages.lib.schema import ACTIVATIONS, MAX_PARAMS, Arch, Layer, count_params  # noqa: E402

SEED = 3
HIDDEN = (8, 6)
BASE = Arch("base", HIDDEN, "relu")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def saved(folder: Path, arch: Arch, seed: int = SEED) -> tuple[keras.Model, Path]:
    """A freshly built model and where save_model put it (folder/<arch>/seed-<seed>.keras)."""
    model = km.build_model(arch, seed)
    path = folder / arch.name / f"seed-{seed}.keras"
    km.save_model(model, path)
    return model, path


def assert_matches_keras(model: keras.Model, arch: Arch, path: Path, x: np.ndarray, **predict_kwargs) -> None:
    mlp = load_mlp(path, arch.layers)
    got = mlp.predict(x, **predict_kwargs)
    want = model.predict(x, verbose=0)
    assert got.dtype == np.float64 and got.shape == want.shape == (len(x), 10)
    assert np.abs(got - want).max() < 1e-5
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    assert mlp.count_params() == model.count_params()


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> tuple[keras.Model, Path]:
    return saved(tmp_path_factory.mktemp("models"), BASE)


# --- numbers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_predict_matches_keras_for_every_activation(tmp_path, activation):
    arch = Arch(f"net-{activation}", HIDDEN, activation)
    model, path = saved(tmp_path, arch)
    assert_matches_keras(model, arch, path, images(64))
    assert load_mlp(path, arch.layers).layers[1].activation == activation


def test_the_layer_list_keeps_the_keras_names_models_are_saved_under():
    assert Arch("base", (300, 100)).layers == (
        Layer("Flatten", "flatten"), Layer("Dense", "hidden_0", 300, "relu"), Layer("Dense", "hidden_1", 100, "relu"),
        Layer("Dense", "output", 10, "softmax"))


def test_dropout_adds_a_layer_after_each_hidden_one_and_a_rate_of_0_none():
    assert Arch("base", (300, 100), dropout=0).layers == Arch("base", (300, 100), dropout=0.0).layers == (
        Arch("base", (300, 100)).layers)
    assert Arch("base", (300, 100), dropout=0.25).layers == (
        Layer("Flatten", "flatten"), Layer("Dense", "hidden_0", 300, "relu"), Layer("Dropout", "dropout_0", rate=0.25),
        Layer("Dense", "hidden_1", 100, "relu"), Layer("Dropout", "dropout_1", rate=0.25),
        Layer("Dense", "output", 10, "softmax"))


DROPPED = Arch("dropped", (12, 10), "tanh", dropout=0.5)


@pytest.mark.parametrize("arch", [BASE, Arch("deep", (12, 10, 8), "gelu"), DROPPED], ids=lambda arch: arch.name)
def test_keras_and_numpy_forward_passes_agree_on_random_weights(arch):
    """One layer list, two forward passes: Keras builds it, Mlp runs it, and they agree on any weights, not only
    on the initial ones."""
    model = km.build_model(arch, SEED)
    built = [(type(layer).__name__, layer.name) for layer in model.layers]
    assert built == [(layer.kind, layer.name) for layer in arch.layers]
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    x = images(50)
    got = Mlp(arch.layers, km.layer_weights(model)).predict(x)
    want = model.predict(x, verbose=0)
    assert np.abs(got - want).max() < 1e-5
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_every_allowed_activation_is_supported():
    assert set(ACTIVATIONS) | {"softmax"} == set(ACTIVATION_FUNCTIONS)


@pytest.mark.parametrize("name", [*ACTIVATIONS, "softmax"])
def test_activation_matches_keras_over_a_wide_range(name):
    """Float32 agreement well beyond what random init reaches, including the tails and 0."""
    x = np.concatenate([np.linspace(-40, 40, 80_000, dtype=np.float32),
                        np.float32([0, -0.0, 1e-8, -1e-8, 1e-4, -1e-4, 88, -88, 200, -200])]).reshape(-1, 10)
    want = keras.ops.convert_to_numpy(keras.activations.get(name)(x)).astype(np.float64)
    got = ACTIVATION_FUNCTIONS[name](x.copy())
    assert got.dtype == np.float32 and np.isfinite(got).all()
    # a few float32 ulps of the larger of |value| and 1 (TensorFlow's own exp/erfc are not correctly rounded)
    assert np.all(np.abs(got - want) <= 1e-6 * np.maximum(np.abs(want), 1))


def test_erfc_is_float32_accurate():
    """About 1 ulp absolute; relative error grows like z**2 * 1e-7 only far in the tail."""
    z = np.linspace(-6, 9, 15_001, dtype=np.float32)  # erfc(9.1) is no longer a normal float32
    want = np.array([math.erfc(float(v)) for v in z])
    got = erfc(z)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 4e-7
    assert np.all(np.abs(got - want) / want < 1e-7 * (10 + z.astype(np.float64) ** 2))


def test_deeper_model_and_batches_that_do_not_divide_n(tmp_path):
    arch = Arch("deep4", (12, 10, 8, 6), "tanh")
    model, path = saved(tmp_path, arch)
    x = images(37, seed=1)
    assert_matches_keras(model, arch, path, x, batch_size=10)
    mlp = load_mlp(path, arch.layers)
    assert [layer.kind for layer in mlp.layers] == ["Flatten"] + ["Dense"] * 5
    assert [ws[0].shape for ws in mlp.weights[1:]] == [(784, 12), (12, 10), (10, 8), (8, 6), (6, 10)]
    assert [layer.activation for layer in mlp.layers[1:]] == ["tanh"] * 4 + ["softmax"]
    whole = mlp.predict(x)  # BLAS may sum in another order for other batch sizes: equal to float32 rounding
    np.testing.assert_allclose(mlp.predict(x, batch_size=10), whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(mlp.predict(x, batch_size=1), whole, rtol=0, atol=1e-6)
    assert mlp.predict(x[:0]).shape == (0, 10)


def test_a_saved_model_with_dropout_loads_and_scores_as_keras_predicts(tmp_path):
    """Dropout only acts in training: Keras' predict and the numpy pass both leave it out."""
    model, path = saved(tmp_path, DROPPED)
    assert_matches_keras(model, DROPPED, path, images(30, seed=4))
    mlp = load_mlp(path, DROPPED.layers)
    assert [layer.kind for layer in mlp.layers] == ["Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    with pytest.raises(ModelFileError, match="config.json has 6 layers after its Input, params.yaml's arch 4"):
        load_mlp(path, Arch("dropped", (12, 10), "tanh").layers)


def test_single_hidden_layer(tmp_path):
    arch = Arch("one", (8,), "gelu")
    model, path = saved(tmp_path, arch)
    assert_matches_keras(model, arch, path, images(20, seed=2), batch_size=7)


def test_weights_come_from_the_layer_they_belong_to(base_model):
    """layers/dense, dense_1, ... in the h5 are the Dense layers in config order."""
    model, path = base_model
    mlp = load_mlp(path, BASE.layers)
    for (kernel, bias), layer in zip(mlp.weights[1:], model.layers[1:], strict=True):
        assert np.array_equal(kernel, layer.kernel.numpy()) and np.array_equal(bias, layer.bias.numpy())


def test_predict_rejects_images_of_the_wrong_size(base_model):
    with pytest.raises(ValueError, match="784"):
        load_mlp(base_model[1], BASE.layers).predict(np.zeros((2, 27, 28), np.float32))


def test_mlp_checks_its_layers():
    k, b = np.zeros((4, 3), np.float32), np.zeros(3, np.float32)
    flatten = Layer("Flatten", "flatten")
    with pytest.raises(ValueError, match="taking the 3 values before it"):
        Mlp((flatten, Layer("Dense", "a", 3, "relu"), Layer("Dense", "b", 3, "softmax")), ((), (k, b), (k, b)))
    with pytest.raises(ValueError, match="unknown activation"):
        Mlp((flatten, Layer("Dense", "a", 3, "mish")), ((), (k, b)))
    with pytest.raises(ValueError, match="unknown kind 'Conv2D'"):
        Mlp((Layer("Conv2D", "c"), Layer("Dense", "a", 3, "relu")), ((), (k, b)))
    with pytest.raises(ValueError, match="1 weight tuples for 2 layers"):
        Mlp((flatten, Layer("Dense", "a", 3, "relu")), ((k, b),))


# --- damaged files -----------------------------------------------------------------------------------------


def conv2d(layers):
    layers.insert(2, {"class_name": "Conv2D", "module": "keras.layers", "registered_name": None,
                      "config": {"name": "conv", "filters": 4, "kernel_size": [3, 3], "activation": "relu"}})


def write(dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


def link_kernel_elsewhere(h5):
    del h5["layers/dense_1/vars/0"]
    h5["layers/dense_1/vars/0"] = h5py.ExternalLink("/tmp/elsewhere.h5", "/kernel")


def reshape_kernel(h5):
    del h5["layers/dense_1/vars/0"]
    h5["layers/dense_1/vars/0"] = np.zeros((7, 6), np.float32)


DAMAGE = {
    "random bytes": lambda src, dst: write(dst, np.random.default_rng(0).bytes(4096)),
    "empty file": lambda src, dst: write(dst, b""),
    "no weights": lambda src, dst: rewrite(src, dst, lambda n, d: None if n == "model.weights.h5" else d),
    "no config": lambda src, dst: rewrite(src, dst, lambda n, d: None if n == "config.json" else d),
    "config not json": lambda src, dst: rewrite(src, dst, lambda n, d: b"{oops" if n == "config.json" else d),
    "conv2d layer": lambda src, dst: edit_config(src, dst, conv2d),
    "unknown activation": lambda src, dst: edit_config(src, dst, set_dense("activation", "mish")),
    "activation object": lambda src, dst: edit_config(src, dst, set_dense("activation", {"class_name": "X"})),
    "no bias": lambda src, dst: edit_config(src, dst, set_dense("use_bias", False)),
    "units disagree": lambda src, dst: edit_config(src, dst, set_dense("units", 9)),
    "output not softmax": lambda src, dst: edit_config(src, dst, set_dense("activation", "relu", index=2)),
    "truncated h5": lambda src, dst: rewrite(src, dst, lambda n, d: d[:len(d) // 2] if n == "model.weights.h5" else d),
    "missing kernel": lambda src, dst: edit_weights(src, dst, lambda h5: h5.__delitem__("layers/dense_1/vars/0")),
    "missing layer": lambda src, dst: edit_weights(src, dst, lambda h5: h5.__delitem__("layers/dense_2")),
    "kernels do not chain": lambda src, dst: edit_weights(src, dst, reshape_kernel),
    "link to another file": lambda src, dst: edit_weights(src, dst, link_kernel_elsewhere),
    "missing file": lambda src, dst: dst,
    # Hostile rather than damaged: shapes a reader that trusts the file would trip over.
    "config nested 100,000 deep": lambda src, dst: rewrite(
        src, dst, lambda n, d: b'{"class_name": "Sequential", "config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        if n == "config.json" else d),
    "dtype config a list": lambda src, dst: edit_config(src, dst, set_dense("dtype", {"config": ["float32"]})),
    "dtype without config": lambda src, dst: edit_config(src, dst, set_dense("dtype", {"class_name": "DTypePolicy"})),
    "layers a list of lists": lambda src, dst: edit_config(src, dst, lambda layers: layers.__setitem__(2, [1, 2])),
    "units a list": lambda src, dst: edit_config(src, dst, set_dense("units", [10])),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_file_says_how_to_restore_it(tmp_path, base_model, damage):
    path = tmp_path / "base" / "seed-3.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    DAMAGE[damage](base_model[1], path)
    with pytest.raises(ModelFileError) as info:
        load_mlp(path, BASE.layers)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot load model (")
    assert message.endswith(f"; restore it with `dvc checkout {path.parent}` or retrain with `dvc repro -f train@base`")


def test_messages_say_what_is_wrong(tmp_path, base_model):
    src = base_model[1]
    cases = {
        "conv2d layer": "'Conv2D'",
        "no weights": "no model.weights.h5",
        "unknown activation": "'mish'",
        "no bias": "use_bias False",
        "kernels do not chain": "(7, 6)",
        "random bytes": "not a zip",
        "missing layer": "layers/dense_2 is missing",
        "link to another file": "ExternalLink",
    }
    for damage, expected in cases.items():
        folder = tmp_path / damage.replace(" ", "-")
        folder.mkdir()
        path = DAMAGE[damage](src, folder / "seed-1.keras")
        with pytest.raises(ModelFileError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            load_mlp(path, BASE.layers)


def test_intact_copy_still_loads(tmp_path, base_model):
    """The damage helpers themselves keep a good file good."""
    copy = rewrite(base_model[1], tmp_path / "base" / "seed-1.keras", lambda n, d: d)
    assert load_mlp(copy, BASE.layers).count_params() == base_model[0].count_params()


# --- sizes are checked before anything is read --------------------------------------------------------------


@pytest.fixture
def reads(monkeypatch) -> list[tuple]:
    """The shapes of every HDF5 array read while the test runs."""
    seen = []
    real = h5py.Dataset.__getitem__

    def getitem(self, key):
        seen.append(self.shape)
        return real(self, key)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", getitem)
    return seen


@pytest.mark.parametrize("out_size", [10**6, 10**8])
def test_a_declared_huge_kernel_is_refused_before_it_is_read(tmp_path, base_model, reads, out_size):
    """Used to read 3 GB before the shape check (10**6), or die of MemoryError (10**8)."""
    path = edit_weights(base_model[1], tmp_path / "base" / "seed-1.keras", declare_huge_kernel(out_size))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ModelFileError, match=rf"vars/0 of layer 'hidden_0' has shape \(784, {out_size}\); "
                                             rf"expected \(784, {HIDDEN[0]}\)") as info:
        load_mlp(path, BASE.layers)
    assert f"`dvc checkout {path.parent}`" in str(info.value)
    assert reads == []


@pytest.mark.parametrize("units", [10**6, 10**9])
def test_a_config_unlike_the_arch_is_refused_before_the_weights_are_read(tmp_path, base_model, reads, units,
                                                                         monkeypatch):
    """The arch's sizes are within params.yaml's limits: a file declaring others is refused from its config."""
    opened = []
    monkeypatch.setattr(h5py, "File", lambda *args, **kwargs: opened.append(args))
    path = edit_config(base_model[1], tmp_path / "base" / "seed-1.keras", set_dense("units", units))
    with pytest.raises(ModelFileError, match=f"layer 2 after the Input is Dense 'hidden_0' \\(units={units}, "
                                             f"activation='relu'\\) in config.json, Dense 'hidden_0' \\(units=8, "
                                             f"activation='relu'\\) in params.yaml's arch"):
        load_mlp(path, BASE.layers)
    assert opened == [] and reads == []


def test_a_model_of_another_arch_is_refused(tmp_path, base_model):
    def deepen(layers):
        layers[3:3] = [json.loads(json.dumps(layers[3])) for _ in range(100)]
    path = edit_config(base_model[1], tmp_path / "base" / "seed-1.keras", deepen)
    with pytest.raises(ModelFileError, match="config.json has 104 layers after its Input, params.yaml's arch 4"):
        load_mlp(path, BASE.layers)
    with pytest.raises(ModelFileError, match="Dense 'hidden_0' \\(units=8, activation='relu'\\) in config.json, "
                                             "Dense 'hidden_0' \\(units=8, activation='tanh'\\) in params.yaml's"):
        load_mlp(base_model[1], Arch("base", HIDDEN, "tanh").layers)


def test_a_weights_entry_bigger_than_the_biggest_allowed_model(tmp_path, base_model, monkeypatch):
    monkeypatch.setattr(mlp, "MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(ModelFileError, match="model.weights.h5 is [0-9,]+ bytes, more than any model params.yaml "
                                             "allows \\(1,000 bytes\\)"):
        load_mlp(base_model[1], BASE.layers)


def test_float64_weights_are_refused(tmp_path, base_model):
    def widen(h5):
        kernel = h5["layers/dense/vars/0"][()]
        del h5["layers/dense/vars/0"]
        h5["layers/dense/vars/0"] = kernel.astype(np.float64)
    path = edit_weights(base_model[1], tmp_path / "base" / "seed-1.keras", widen)
    with pytest.raises(ModelFileError, match="vars/0 of layer 'hidden_0' is float64, not float32"):
        load_mlp(path, BASE.layers)


def test_the_largest_allowed_model_is_within_the_loaders_limits():
    assert 4 * MAX_PARAMS < mlp.MAX_WEIGHTS_BYTES


def test_count_params_is_keras_count(base_model):
    assert count_params(HIDDEN) == base_model[0].count_params()


# --- no TensorFlow -----------------------------------------------------------------------------------------


def test_importing_mlp_does_not_import_tensorflow():
    code = ("import stages.lib.mlp, sys; "
            "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_loading_and_predicting_does_not_import_tensorflow(base_model):
    code = ("import sys, numpy as np; from pathlib import Path; from stages.lib.mlp import load_mlp; "
            "from stages.lib.schema import Arch; "
            f"p = load_mlp(Path({str(base_model[1])!r}), Arch('base', {HIDDEN}).layers)"
            ".predict(np.zeros((3, 28, 28), np.float32)); "
            "assert p.shape == (3, 10); "
            "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# BLAS kernels numpy may pick on x86-64 CPUs that run TensorFlow (SSE3, AVX, AVX2): each sums
# in its own order. The scores must not depend on which one this CPU gets.
BLAS_KERNELS = ("Prescott", "Sandybridge", "Haswell")
PREDICT_IN_CHILD = """
import sys, numpy as np
from stages.lib.mlp import load_mlp
from stages.lib.schema import Arch
x = np.random.default_rng(0).random((300, 28, 28), dtype=np.float32)
np.save(sys.argv[2], load_mlp(sys.argv[1], Arch("wide", (256, 128)).layers).predict(x))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="OpenBLAS kernel names are x86-64's")
def test_scores_do_not_depend_on_the_cpus_blas_kernel(tmp_path):
    _, path = saved(tmp_path, Arch("wide", (256, 128), "relu"))
    outputs = []
    for kernel in BLAS_KERNELS:
        out = tmp_path / f"{kernel}.npy"
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-c", PREDICT_IN_CHILD, str(path), str(out)], env=env, check=True, timeout=60)
        outputs.append(np.load(out))
    for other in outputs[1:]:
        # float32 would differ by ~1e-7 here, enough to move a 6-digit loss
        np.testing.assert_allclose(other, outputs[0], rtol=0, atol=1e-12)
