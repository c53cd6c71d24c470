"""Every registered Numba kernel against its NumPy twin, on the same random inputs."""
import itertools

import numpy as np
import pytest

from fastmlp.kernels import KERNELS, OPTIMIZER_CODES, OUTPUT_LOSS_CODES, Case, copy_args
from fastmlp.kernels.registry import parameters, written
from fastmlp.kernels.activations import ACTIVATION_CODES

# (batch 128: the training step builds the column lists of a minibatch this large on all threads)
SHAPES = [(1, 5, 3), (7, 20, 13), (128, 100, 32), (33, 784, 300)]
ACTS = sorted(ACTIVATION_CODES.values())
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def assert_same(fast, ref, dtype, what, conditioning=1.0):
    """``conditioning`` (a pair's): the factor on float64's tolerances."""
    conditioning = conditioning if dtype == np.float64 else 1.0
    if isinstance(fast, tuple):
        assert len(fast) == len(ref), what
        if hasattr(fast, "_fields"):
            fast, ref = tuple(fast), tuple(ref)
        for i, (a, b) in enumerate(zip(fast, ref)):
            assert_same(a, b, dtype, f"{what}[{i}]", conditioning)
        return
    if isinstance(fast, np.ndarray):
        assert fast.shape == ref.shape, what
        tol = TOL[dtype]
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        np.testing.assert_allclose(fast, ref, rtol=tol["rtol"] * conditioning,
                                   atol=tol["atol"] * scale * conditioning, err_msg=what)
    else:
        np.testing.assert_allclose(np.asarray(fast, dtype=float), np.asarray(ref, dtype=float),
                                   rtol=TOL[dtype]["rtol"] * conditioning,
                                   atol=TOL[dtype]["atol"] * conditioning, err_msg=what)


def run_pair(pair, case, seed=0):
    args = pair.make_case(np.random.default_rng(seed), case)
    fast_args, ref_args = copy_args(args), copy_args(args)
    fast_ret = pair.fast(*fast_args)
    ref_ret = pair.reference(*ref_args)
    return args, fast_args, ref_args, fast_ret, ref_ret


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_matches_twin(name, shape, dtype):
    pair = KERNELS[name]
    optimizers = sorted(OPTIMIZER_CODES.values()) if "optimizer" in pair.variants else [0]
    losses = sorted(OUTPUT_LOSS_CODES.values()) if "loss" in pair.variants else [0]
    for act, sparse_input, optimizer, loss in itertools.product(ACTS, (True, False), optimizers,
                                                                losses):
        if name.startswith("train_steps") and loss and optimizer:  # each loss once, each
            continue                                                # optimizer once
        if True:
            case = Case(*shape, dtype=dtype, act=act, sparse_input=sparse_input,
                        optimizer=optimizer, loss=loss)
            args, fast_args, ref_args, fast_ret, ref_ret = run_pair(pair, case)
            for (label, fast), (_, ref) in zip(written(pair, fast_args), written(pair, ref_args)):
                assert_same(fast, ref, dtype, f"{name} {case}: {label}", pair.conditioning)
            if pair.compares_return:
                assert_same(fast_ret, ref_ret, dtype, f"{name} {case}: return value",
                            pair.conditioning)
            if act == ACTIVATION_CODES["identity"] and name in ("activate", "derivative_mul"):
                continue  # a no-op by definition
            assert any(_changed(before, after) for (_, before), (_, after)
                       in zip(written(pair, args), written(pair, fast_args))), \
                f"{name} wrote none of its outputs"


def _changed(before, after):
    if isinstance(before, tuple):
        return any(_changed(a, b) for a, b in zip(before, after))
    if isinstance(before, np.ndarray):
        return not np.array_equal(before, after)
    return False


def test_harness_detects_a_wrong_twin():
    pair = KERNELS["dense_forward"]
    case = Case(4, 6, 5, np.float64)
    args, fast_args, ref_args, _, _ = run_pair(pair, case)
    ref_args[4][0, 0] += 1e-6
    with pytest.raises(AssertionError):
        assert_same(fast_args[4], ref_args[4], np.float64, "out")


def test_a_pair_is_registered_only_with_one_signature_and_named_outputs():
    """A kernel and its twin take the same parameters, by name and order; what the tests compare
    is named by parameter ("out", "ws.acts"), so a renamed parameter cannot point the tests at
    the wrong argument."""
    from fastmlp.kernels.registry import register, written
    from fastmlp.kernels.dense import dense_forward, dense_forward_ref

    def twin_with_other_names(x, W, b, act, result):
        dense_forward_ref(x, W, b, act, result)
    with pytest.raises(ValueError, match=r"the twin's parameters .*'result'.* are not the "
                                         r"kernel's .*'out'"):
        register("dense_forward_again", fast=dense_forward, reference=twin_with_other_names,
                 make_case=None, outputs=("out",))
    with pytest.raises(ValueError, match="has no parameter 'output'"):
        register("dense_forward_again", fast=dense_forward, reference=dense_forward_ref,
                 make_case=None, outputs=("output",))
    assert "dense_forward_again" not in KERNELS
    pair = KERNELS["forward"]
    args = pair.make_case(np.random.default_rng(0), Case(3, 8, 5, np.float64))
    (name, acts), = written(pair, args)
    assert name == "ws.acts" and acts is args[4].acts


def test_every_kernel_has_a_distinct_twin():
    for name, pair in KERNELS.items():
        assert pair.fast is not pair.reference, name
        assert hasattr(pair.fast, "py_func"), f"{name}: the fast side is not a Numba function"
        assert not hasattr(pair.reference, "py_func"), f"{name}: the twin must be plain NumPy"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    for name in ("fast", "reference"):
        fn = getattr(KERNELS["output_loss"], name)
        logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [5e3, 5e3, -1e4]], dtype)
        labels = np.array([0, 0, 1])
        d = np.zeros_like(logits)
        loss, correct = fn(OUTPUT_LOSS_CODES["softmax", "cross_entropy"], logits, labels, d)
        assert np.isfinite(loss) and np.isfinite(d).all(), name
        # sample 0 right (loss 0), sample 1 wrong by 2e4, sample 2 a tie: log 2
        np.testing.assert_allclose(loss, (0 + 2e4 + np.log(2)) / 3, rtol=1e-6)
        np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-6)


def test_cache_is_dropped_when_any_kernel_source_changes(tmp_path):
    import shutil
    from pathlib import Path

    from fastmlp.kernels._cache_guard import invalidate_stale_cache
    from fastmlp import kernels
    src = Path(kernels.__file__).parent
    for f in src.glob("*.py"):
        shutil.copy(f, tmp_path / f.name)
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "mlp.train_steps-70.py311.nbi").write_bytes(b"old")
    invalidate_stale_cache(tmp_path)
    assert not list(cache.glob("*.nbi")), "cache from unknown sources must go"
    (cache / "mlp.train_steps-70.py311.nbi").write_bytes(b"fresh")
    invalidate_stale_cache(tmp_path)
    assert list(cache.glob("*.nbi")), "an up-to-date cache must stay"
    with open(tmp_path / "dense.py", "a") as f:
        f.write("\n# edited\n")
    invalidate_stale_cache(tmp_path)
    assert not list(cache.glob("*.nbi")), "an edit to a callee's file must drop the cache"


@pytest.mark.parametrize("blocks", [1, 2, 3, 7])
def test_column_lists_built_in_blocks(blocks):
    """The fused backward transposes a minibatch's nonzeros into per-input lists: rows counted
    in blocks (one per thread), columns filled in ranges (one per thread). Each column must list
    exactly its rows, in increasing order, so that the gradient sums in the same order whatever
    the number of threads."""
    from fastmlp.kernels.catalog import _nonzeros, _sparse_images
    from fastmlp.kernels.data import thread_block
    from fastmlp.kernels.sparse_input import (column_cursors, count_column_blocks,
                                              fill_column_range)
    rng = np.random.default_rng(blocks)
    n, d = 101, 50
    x = _sparse_images(rng, n, d, np.float32)
    x[3] = 0  # a row without nonzeros
    x[:, 7] = 0  # a column without any
    x[5, d - 1] = x[6, 0] = 1.5  # nonzeros at both ends of a row
    idx, val, cnt = _nonzeros(x)
    ptr, row, v = np.zeros(d + 1, np.int64), np.zeros(n * d, np.int32), np.zeros(n * d, np.float32)
    counts = np.zeros((blocks, d), np.int64)
    count_column_blocks(idx, cnt, n, counts)
    column_cursors(counts, d, ptr)
    for t in range(blocks):
        j0, j1 = thread_block(d, blocks, t)
        fill_column_range(idx, val, cnt, n, j0, j1, counts[0], row, v)
    for j in range(d):
        (expected_rows,) = np.nonzero(x[:, j])
        np.testing.assert_array_equal(row[ptr[j]:ptr[j + 1]], expected_rows)
        np.testing.assert_array_equal(v[ptr[j]:ptr[j + 1]], x[expected_rows, j])
    assert ptr[-1] == np.count_nonzero(x)


def test_a_new_numba_cache_dir_is_stamped_and_kept(tmp_path, monkeypatch):
    """$NUMBA_CACHE_DIR's folder does not exist before the first compile: the guard stamps it
    then, so that the next process keeps (and loads) what the first one wrote."""
    import shutil
    from pathlib import Path

    from fastmlp import kernels
    from fastmlp.kernels._cache_guard import _cache_dirs, invalidate_stale_cache
    src = tmp_path / "src"
    src.mkdir()
    for f in Path(kernels.__file__).parent.glob("*.py"):
        shutil.copy(f, src / f.name)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba-cache"))
    cache = _cache_dirs(src)[0]
    assert not cache.exists()
    invalidate_stale_cache(src)  # the first process, before Numba writes
    (cache / "network.train_steps-9.py311.nbi").write_bytes(b"compiled by the first process")
    invalidate_stale_cache(src)  # the next process
    assert list(cache.glob("*.nbi")), "the first process's cache must be kept"


def test_the_cache_guards_locator_answers_for_the_one_it_wraps():
    """Numba reads more of a locator than its methods: warning that it cannot cache a function
    (lifted code, dynamic globals), it names the locator's ``_py_file``. The cache guard's
    locator used to raise AttributeError there, failing a fit under NUMBA_OPT=0."""
    from numba.core import caching

    from fastmlp.kernels import loss
    impl = caching.CompileResultCacheImpl(loss.output_loss.py_func)
    assert type(impl.locator).__name__ == "SourcesStampedLocator"
    assert impl.locator._py_file == loss.__file__


@pytest.mark.parametrize("name, codes", [("train_steps_cnn", 7), ("forward_cnn", 3),
                                         ("train_steps", 7), ("forward", 3)])
def test_a_feature_the_layers_use_is_never_left_out(name, codes):
    """A feature argument of None leaves that feature's code out of the compiled step (see
    step_codes): layers that need it (conv and pooling: images; the zero-skipping layer: sparse;
    dropout layers; batch normalization and activation layers: norm) must not run without it
    (they would be skipped). Sample weights, max-norms, distortions and the threaded dense
    layers' threshold are data of their own: None leaves them out."""
    from fastmlp.kernels.network import FEATURES, _layer_features
    bits = FEATURES if codes == 7 else tuple(FEATURES[i] for i in (0, 1, 5))  # forward's three
    pair = KERNELS[name]
    for batch in (3, 4):  # odd and even batches build different plans (dropout, weights...)
        args = pair.make_case(np.random.default_rng(0), Case(batch, 6, 5, np.float64))
        need = _layer_features(args[parameters(pair.fast).index("plan")])
        used = [k for k, bit in enumerate(bits) if need & bit]
        assert used, f"{name}: the case's layers need no feature"
        for k in used:
            bad = list(copy_args(args))
            bad[len(args) - codes + k] = None
            with pytest.raises(ValueError, match="a feature argument is None"):
                pair.reference(*bad)
        # the compiled side once, with every feature left out (each combination of Nones is a
        # signature to compile; this one is the smallest, and the cases of both networks share it)
        bad = list(copy_args(args))
        bad[len(args) - codes:] = [None] * codes
        with pytest.raises(ValueError, match="a feature argument is None"):
            pair.fast(*bad)


def test_augmentation_and_image_layers_are_features_apart():
    """A CNN without augmentation compiles no distortions; an MLP with them, no conv or pooling
    (each feature's code costs seconds of a cold first fit)."""
    from fastmlp import Network
    from fastmlp.augment import Augment
    from fastmlp.layers import Conv2D, Dense, Flatten, MaxPool2D
    from fastmlp.training import augment_tables
    from fastmlp.kernels import forward_codes, step_codes
    features = parameters(KERNELS["train_steps"].fast)[-7:]  # step_codes' order
    images, augment = features.index("images"), features.index("augment")
    elastic = Augment(elastic_alpha=34, elastic_sigma=4)
    mlp = Network([784, 30, 10], seed=0)
    cnn = Network([Conv2D(4, 5), MaxPool2D(2), Flatten(), Dense(10)], input_shape=(28, 28, 1),
                  seed=0)
    for net, augmented, has_images in ((mlp, False, False), (mlp, True, False),
                                       (cnn, False, True), (cnn, True, True)):
        plan = net._plan(augment=augment_tables(net, elastic) if augmented else None)
        codes = step_codes(net._params(), plan)
        assert (codes[images], codes[augment] is not None) == (has_images or None, augmented)
        assert forward_codes(plan)[0] == (has_images or None)  # inference never distorts


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_the_whole_network_cases_share_one_compiled_step_per_dtype(dtype):
    """Each Numba type of the step's arguments is one more compile of the whole step (over a
    minute): the dense and the convolutional cases, every shape and variant, must type alike."""
    import numba
    for names in (("train_steps", "train_steps_cnn"), ("forward", "forward_cnn")):
        assert KERNELS[names[0]].fast is KERNELS[names[1]].fast
        types = set()
        for name, shape, act, sparse_input in itertools.product(names, SHAPES, ACTS,
                                                                (True, False)):
            args = KERNELS[name].make_case(np.random.default_rng(0), Case(
                *shape, dtype=dtype, act=act, sparse_input=sparse_input))
            types.add(tuple(numba.typeof(a) for a in args))
        assert len(types) == 1, f"{names}: {len(types)} signatures"


@pytest.mark.parametrize("name", ["train_steps", "train_steps_cnn"])
def test_the_whole_step_agrees_with_its_twin_on_every_combination(name):
    """#43: the generated matrix, float64 — every optimizer × output/loss × hidden activation ×
    first-layer path (zero-skipping or dense), on the dense layer table (with sample weights,
    input dropout, augmentation, Nesterov/decoupled variants as the case's shape selects) and
    on the convolutional one, combinations that no recipe uses included."""
    pair = KERNELS[name]
    for shape in ((7, 20, 13), (6, 20, 13)):  # odd: input dropout, Nesterov; even: weights
        for optimizer, loss, act, sparse_input in itertools.product(
                sorted(OPTIMIZER_CODES.values()), sorted(OUTPUT_LOSS_CODES.values()), ACTS,
                (True, False)):
            case = Case(*shape, dtype=np.float64, act=act, sparse_input=sparse_input,
                        optimizer=optimizer, loss=loss)
            _, fast_args, ref_args, fast_ret, ref_ret = run_pair(pair, case)
            for (label, fast), (_, ref) in zip(written(pair, fast_args), written(pair, ref_args)):
                assert_same(fast, ref, np.float64, f"{name} {case}: {label}", pair.conditioning)
            assert_same(fast_ret, ref_ret, np.float64, f"{name} {case}: return value",
                        pair.conditioning)


def test_the_loss_rule_compiles_its_loss_alone():
    """The training step takes the loss as a rule (kernels.loss_rule): a softmax fit compiles no
    sigmoid loss, and the reverse; the rule that compiles both, and a plain code, choose at run
    time. The kernel is compiled afresh (code loaded from the cache cannot be inspected); each
    result is checked against the twin."""
    import numba

    from fastmlp.kernels import loss as L
    fresh = numba.njit(cache=False)(L.output_loss.py_func)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    for code in sorted(OUTPUT_LOSS_CODES.values()):
        for rule in (L.loss_rule(code), L.loss_rule(code, any_code=True), code):
            got, want = np.empty_like(logits), np.empty_like(logits)
            loss, correct = fresh(rule, logits, labels, got)
            expected_loss, expected_correct = L.output_loss_ref(rule, logits, labels, want)
            np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
            assert correct == expected_correct
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
            ir = fresh.inspect_llvm(next(sig for sig in fresh.signatures
                                         if sig[0] == numba.typeof(rule)))
            calls = ("softmax_cross_entropy" in ir, "sigmoid_loss" in ir, "_either_loss" in ir)
            if isinstance(rule, (L.SoftmaxRule, L.SigmoidRule)):
                assert calls == (code == L.SOFTMAX_CE, code != L.SOFTMAX_CE, False), rule
            else:  # the run-time choice between the two
                assert calls[2], rule
