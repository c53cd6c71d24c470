"""Checkpoints: a model file plus the fit's state (optimizer slots, step count, and where in an
epoch a Ctrl-C stopped it), saved and restored through ``Trainer.state_dict()`` /
``Trainer.load_state_dict()``, so that a resumed fit reaches the very weights an uninterrupted
one would."""
import json

from . import model_file
from .errors import ModelFormatError
from .serialization import load_arrays
from .validation import check_int

LEGACY_SLOT = "velocity"  # revision 1 stored SGD's momentum velocities as vW{i} / vb{i}


def save(path, net, trainer, epoch_step=0, partial=None):
    """Save ``net`` and ``trainer``'s state to ``path`` atomically; ``epoch_step`` and
    ``partial`` (loss sum, correct, seen, seconds) say where inside an epoch it stopped."""
    state = trainer.state_dict()
    slots = {name: array for name, array in state["arrays"].items() if "." in name}
    try:
        model_file.save(net, path, kind="checkpoint", extra_arrays=slots, step=epoch_step,
                        partial=list(partial) if partial else None,
                        optimizer=state["optimizer"])
    except OSError as exc:
        raise OSError(exc.errno, f"checkpoint {path} could not be saved ({exc}); the previous "
                                 f"checkpoint there, if any, is kept, and the network holds the "
                                 f"weights of epoch {net.epochs_done}") from exc


def structure(net):
    """What a checkpoint must share with the network that resumes it."""
    return (json.dumps([layer.config() for layer in net.layers]), tuple(net.input_shape),
            net.output, net.loss, net.dtype)


def restore(path, net, trainer, batch_size, shuffle):
    """Load the checkpoint at ``path`` into ``net`` and its ``trainer``; returns where to go on
    inside an epoch: {} at an epoch's end, else {"step": ..., "partial": (...)}."""
    stored, info = load_arrays(path)
    if info.get("kind") != "checkpoint":
        raise ModelFormatError(f"{path}: a model file, not a checkpoint: it has no optimizer "
                               f"state to resume from")
    saved_net = model_file.from_meta(type(net), info, path, net.backend)
    if structure(saved_net) != structure(net):
        raise ValueError(f"resume: {path} holds a {saved_net._describe()} {saved_net.dtype} "
                         f"network, this one is {net._describe()} {net.dtype}")
    optimizer = info.get("optimizer") or {"name": "sgd", "slots": [LEGACY_SLOT], "t": 0}
    if optimizer.get("name") != trainer.optimizer.name:
        raise ValueError(f"resume: {path} was trained with optimizer {optimizer.get('name')!r}, "
                         f"this fit uses {trainer.optimizer.name!r}; its state cannot carry over")
    step = info.get("step", 0)
    old = saved_net.train_config
    if step and (old.get("batch_size"), old.get("shuffle")) != (batch_size, shuffle):
        raise ValueError(f"resume: {path} stopped inside an epoch with batch_size="
                         f"{old.get('batch_size')} shuffle={old.get('shuffle')}; resume with "
                         f"the same values")
    if "vW0" in stored:  # revision 1
        stored = {(f"{LEGACY_SLOT}.{name[1:]}" if name[:2] in ("vW", "vb") else name): array
                  for name, array in stored.items()}
        optimizer = dict(optimizer, t=0)
    trainer.load_state_dict({"arrays": stored, "optimizer": optimizer, "seed": saved_net.seed},
                            source=path)
    net.seed = saved_net.seed
    net.epochs_done, net.history = saved_net.epochs_done, saved_net.history
    if not step:
        return {}
    return {"step": check_int(step, "step", 0), "partial": tuple(info["partial"])}
