"""The library's own errors. Each names the file or argument and what is wrong."""


class FastMLPError(Exception):
    """Base class of every error fastmlp raises on purpose."""


class DataFormatError(FastMLPError, ValueError):
    """A data file is corrupt, truncated, or not what it claims to be."""


class DataNotFoundError(FastMLPError, FileNotFoundError):
    """A dataset is neither on disk nor downloadable."""


class ModelFormatError(FastMLPError, ValueError):
    """A saved model file is corrupt, of another version, or inconsistent."""


class TrainingDivergedError(FastMLPError, FloatingPointError):
    """The loss became NaN or infinite; the network keeps its last finite weights."""


class ExportError(FastMLPError, ValueError):
    """A network, or a part of it, that cannot be exported (to ONNX) as it is."""
