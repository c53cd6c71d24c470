"""Vector gathers for loops that Numba's compiler leaves scalar: a loop that loads through an
index array and stores to another array is not vectorized, as LLVM cannot tell that the stores
do not change what later iterations load. These intrinsics emit LLVM's generic masked gather
for ``LANES`` pixels at a time, which LLVM lowers to the target's gather instructions (AVX2,
AVX-512) or, where it has none or judges them slow, to scalar loads: the same values either way.
Scalar loads into vectors are slower than a plain scalar loop (compiled for Zen 3, run on a
Xeon: bilinear affine 4.0 µs an image against 3.2), so the kernels take the blocks only where
``HARDWARE_GATHERS``: LLVM, asked at import, compiles a gather to one instruction for the CPU
Numba compiles for.

Each takes contiguous 1-D arrays of one float dtype and the first pixel ``j`` of the block; the
tap arrays hold pixel indices as exact floats, as ``augment_row`` computes them.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

LANES = 8


def _gather_function(module, elem, mask_type):
    """LLVM's masked gather of LANES ``elem`` values, declared in ``module``."""
    import llvmlite.binding as ll
    vec, ptrs = ir.VectorType(elem, LANES), ir.VectorType(elem.as_pointer(), LANES)
    pointee = "" if ll.llvm_version_info[0] >= 17 else elem.intrinsic_name  # typed pointers
    name = f"llvm.masked.gather.v{LANES}{elem.intrinsic_name}.v{LANES}p0{pointee}"
    fnty = ir.FunctionType(vec, [ptrs, ir.IntType(32), mask_type, vec])
    return cgutils.get_or_insert_function(module, fnty, name)


def _gather_probe():
    """The IR of a function that gathers LANES floats."""
    f32 = ir.FloatType()
    module = ir.Module(name="gather_probe")
    vec, ptrs = ir.VectorType(f32, LANES), ir.VectorType(f32.as_pointer(), LANES)
    mask = ir.Constant(ir.VectorType(ir.IntType(1), LANES), [1] * LANES)
    fn = ir.Function(module, ir.FunctionType(vec, [ptrs]), name="probe")
    builder = ir.IRBuilder(fn.append_basic_block())
    gather = _gather_function(module, f32, mask.type)
    builder.ret(builder.call(gather, [fn.args[0], ir.Constant(ir.IntType(32), 4), mask,
                                      ir.Constant(vec, [0.0] * LANES)]))
    return str(module)


def hardware_gathers():
    """Whether LLVM compiles a masked gather of eight floats to a gather instruction for the
    CPU (and features) Numba compiles for: NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, else the host's."""
    import llvmlite.binding as ll
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features
    cpu = config.CPU_NAME or ll.get_host_cpu_name()
    features = (config.CPU_FEATURES if config.CPU_FEATURES is not None
                else get_host_cpu_features())
    try:
        machine = ll.Target.from_triple(ll.get_process_triple()).create_target_machine(
            cpu=cpu, features=features, opt=3)
        module = ll.parse_assembly(_gather_probe())
        module.verify()
        return "gather" in machine.emit_assembly(module)
    except RuntimeError:  # an LLVM that reads this IR otherwise: the scalar loops are safe
        return False


HARDWARE_GATHERS = hardware_gathers()


def _check(arrays):
    """Refuses (at compile time) anything but contiguous 1-D float arrays. Arrays of different
    dtypes compile, so that a kernel's own run-time test of its arguments' dtypes can run (as
    ``augment_batch``'s does), and raise ValueError when called."""
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
               and isinstance(a.dtype, types.Float) for a in arrays):
        raise TypeError(f"simd: expected contiguous 1-D float arrays, got {arrays}")
    return len({a.dtype for a in arrays}) == 1


def _mixed_dtypes(context, builder):
    with cgutils.if_unlikely(builder, cgutils.true_bit):  # the caller's code goes on after it
        context.call_conv.return_user_exc(builder, ValueError,
                                          ("simd: the arrays must have one dtype",))
    return context.get_dummy_value()


class _Block:
    """LANES-wide loads, stores and gathers at element ``j`` of contiguous arrays."""

    def __init__(self, context, builder, sig, args, j):
        self.builder, self.j = builder, j
        self.data = [context.make_array(ty)(context, builder, v).data
                     for ty, v in zip(sig.args, args) if isinstance(ty, types.Array)]
        self.elem = context.get_value_type(sig.args[0].dtype)
        self.size = context.get_abi_sizeof(self.elem)
        self.vec = ir.VectorType(self.elem, LANES)
        self.i64 = ir.VectorType(ir.IntType(64), LANES)

    def load(self, ptr):
        vec_ptr = self.builder.bitcast(self.builder.gep(ptr, [self.j]), self.vec.as_pointer())
        return self.builder.load(vec_ptr, align=self.size)

    def store(self, value, ptr):
        vec_ptr = self.builder.bitcast(self.builder.gep(ptr, [self.j]), self.vec.as_pointer())
        self.builder.store(value, vec_ptr, align=self.size)

    def splat(self, scalar):
        b, i32 = self.builder, ir.IntType(32)
        one = b.insert_element(ir.Constant(self.i64, ir.Undefined), scalar, ir.Constant(i32, 0))
        return b.shuffle_vector(one, ir.Constant(self.i64, ir.Undefined),
                                ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))

    def gather(self, base, taps, mask=None):
        """base[taps[k]] for each lane (taps: a vector of exact floats); a lane off in ``mask``
        loads nothing and gives 0.0."""
        b = self.builder
        if mask is None:
            mask = ir.Constant(ir.VectorType(ir.IntType(1), LANES), [1] * LANES)
        offsets = b.mul(b.fptosi(taps, self.i64), ir.Constant(self.i64, [self.size] * LANES))
        addresses = b.add(offsets, self.splat(b.ptrtoint(base, ir.IntType(64))))
        ptrs = ir.VectorType(self.elem.as_pointer(), LANES)
        fn = _gather_function(b.module, self.elem, mask.type)
        return b.call(fn, [b.inttoptr(addresses, ptrs), ir.Constant(ir.IntType(32), self.size),
                           mask, ir.Constant(self.vec, [0.0] * LANES)])


@intrinsic
def bilinear_block(typingctx, src, taps, frac_x, frac_y, out, j, down):
    """out[j + k] <- lerp(lerp(a, b, fx), lerp(c, d, fx), fy) for k < LANES, a, b = src[t],
    src[t + 1] and c, d = src[t + down], src[t + down + 1] at t = taps[j + k], fx = frac_x[j +
    k], fy = frac_y[j + k]; lerp(u, v, f) = u + f·(v - u), in that order, as the twin."""
    one_dtype = _check((src, taps, frac_x, frac_y, out))

    def codegen(context, builder, sig, args):
        if not one_dtype:
            return _mixed_dtypes(context, builder)
        v = _Block(context, builder, sig, args, args[5])
        s, t, fx, fy, o = v.data
        b, down = builder, args[6]
        taps_v = v.load(t)

        def tap(offset):  # src[t + offset] in each lane
            return v.gather(b.gep(s, [offset]), taps_v)

        a, bb = tap(ir.Constant(down.type, 0)), tap(ir.Constant(down.type, 1))
        c, d = tap(down), tap(b.add(down, ir.Constant(down.type, 1)))
        ax, ay = v.load(fx), v.load(fy)
        top = b.fadd(a, b.fmul(ax, b.fsub(bb, a)))
        bottom = b.fadd(c, b.fmul(ax, b.fsub(d, c)))
        v.store(b.fadd(top, b.fmul(ay, b.fsub(bottom, top))), o)
        return context.get_dummy_value()

    return types.void(src, taps, frac_x, frac_y, out, types.int64, types.int64), codegen


@intrinsic
def nearest_block(typingctx, image, taps, out, j):
    """out[j + k] <- image[taps[j + k]] for k < LANES, or 0.0 where the tap is negative (not
    loaded)."""
    one_dtype = _check((image, taps, out))

    def codegen(context, builder, sig, args):
        if not one_dtype:
            return _mixed_dtypes(context, builder)
        v = _Block(context, builder, sig, args, args[3])
        img, t, o = v.data
        taps_v = v.load(t)
        inside = builder.fcmp_ordered(">=", taps_v, ir.Constant(v.vec, [0.0] * LANES))
        v.store(v.gather(img, taps_v, inside), o)
        return context.get_dummy_value()

    return types.void(image, taps, out, types.int64), codegen
