"""Weight initialisations, ``(rng, 2-D shape, fan_in, fan_out) -> weights``; biases start at
zero. ``fan_in``/``fan_out`` of a conv kernel are counted as Keras counts them."""
import math


def normal(rng, shape, fan_in, fan_out):
    """N(0, 1/fan_in): Nielsen's improved initialisation."""
    return rng.standard_normal(shape) / math.sqrt(fan_in)


def xavier(rng, shape, fan_in, fan_out):
    """Glorot's uniform: U(±sqrt(6 / (fan_in + fan_out)))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def he(rng, shape, fan_in, fan_out):
    """He's normal: N(0, 2/fan_in), for ReLU."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


def large(rng, shape, fan_in, fan_out):
    """N(0, 1): Nielsen's first, saturating initialisation."""
    return rng.standard_normal(shape)


INITS = {"normal": normal, "xavier": xavier, "he": he, "large": large}
