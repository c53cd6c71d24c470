"""BLAS's product on blocks of arrays in place: ``np.dot`` in Numba takes contiguous arrays
only, so a block of a matrix's columns would first be copied (the threaded dense layer's
blocks of x, δ below: kernels/dense.py). ``gemm`` hands BLAS the block where it lies, with its
leading dimension, through the same BLAS as ``np.dot`` (Numba's ``numba_xxgemm``, SciPy's
OpenBLAS)."""
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, register_jitable
from numba.np.linalg import (check_blas_return, ensure_blas, get_blas_kind, make_constant_slot)

_CHAR, _VOIDP, _INTP = ir.IntType(8), ir.IntType(8).as_pointer(), cgutils.intp_t
NO_TRANS, TRANS = ord("n"), ord("t")


def _gemm_codegen(scaled):
    """The call to BLAS's gemm: C <- op(A) op(B), or (``scaled``) op(A) op(B) + beta C."""
    def codegen(context, builder, sig, args):
        if scaled:
            ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args
            beta_type, c_type, ldc_type = sig.args[9], sig.args[10], sig.args[11]
        else:
            ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = args
            c_type, ldc_type = sig.args[9], sig.args[10]
        ints = [context.cast(builder, v, t, types.intp) for v, t in
                zip((m_, n_, k_, lda_, ldb_, ldc_), (sig.args[2], sig.args[3], sig.args[4],
                                                     sig.args[6], sig.args[8], ldc_type))]
        chars = [builder.trunc(context.cast(builder, v, t, types.int64), _CHAR)
                 for v, t in ((ta, sig.args[0]), (tb, sig.args[1]))]
        data = [builder.bitcast(context.make_array(t)(context, builder, v).data, _VOIDP)
                for v, t in ((a_, sig.args[5]), (b_, sig.args[7]), (c_, c_type))]
        dtype = sig.args[5].dtype
        alpha = builder.bitcast(make_constant_slot(context, builder, dtype, 1.0), _VOIDP)
        if scaled:
            beta = builder.bitcast(cgutils.alloca_once_value(
                builder, context.cast(builder, beta_, beta_type, dtype)), _VOIDP)
        else:
            beta = builder.bitcast(make_constant_slot(context, builder, dtype, 0.0), _VOIDP)
        fnty = ir.FunctionType(ir.IntType(32), [_CHAR, _CHAR, _CHAR, _INTP, _INTP, _INTP, _VOIDP,
                                                _VOIDP, _INTP, _VOIDP, _INTP, _VOIDP, _VOIDP,
                                                _INTP])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        kind = ir.Constant(_CHAR, ord(get_blas_kind(dtype)))
        res = builder.call(fn, (kind, chars[0], chars[1], ints[0], ints[1], ints[2], alpha,
                                data[0], ints[3], data[1], ints[4], beta, data[2], ints[5]))
        check_blas_return(context, builder, res)
        return context.get_dummy_value()
    return codegen


def _same_float_arrays(a, b, c):
    return (isinstance(a, types.Array) and a.dtype == b.dtype == c.dtype
            and a.dtype in (types.float32, types.float64))


@intrinsic
def gemm(typingctx, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    """C <- op(A) op(B) (m x n, op(A) m x k), column-major, on the data of the arrays a, b, c
    (views whose first element is the block's), with leading dimensions lda, ldb, ldc (of a
    row-major array: its row stride); transa, transb: NO_TRANS or TRANS. Its caller checks the
    sizes: BLAS reads and writes where they say."""
    ensure_blas()
    if not _same_float_arrays(a, b, c):
        return None
    return (types.void(transa, transb, m, n, k, a, lda, b, ldb, c, ldc), _gemm_codegen(False))


@intrinsic
def gemm_beta(typingctx, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """C <- op(A) op(B) + beta C, as ``gemm`` otherwise (beta a float: C is read unless it is
    0)."""
    ensure_blas()
    if not (_same_float_arrays(a, b, c) and isinstance(beta, types.Float)):
        return None
    return (types.void(transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc),
            _gemm_codegen(True))


@register_jitable
def row_stride(a):
    """The leading dimension of a 2-D array whose rows are each contiguous (C order, or a block
    of a C-ordered array's columns), in elements."""
    if a.strides[1] != a.itemsize:
        raise ValueError("gemm needs each row's elements next to each other")
    return a.strides[0] // a.itemsize
