"""Named recipes: the seed experiments of the MNIST literature, each a network and its fit
settings in one place. ``fastmlp train --recipe NAME`` runs one (explicit flags override its
settings); ``fastmlp recipes`` lists them with their measured results (README: "Recipes")."""
import copy

from .optimizers import SGD, Adam
from .schedules import CosineDecay, LinearRamp

RECIPES = {
    "nielsen": {
        "about": "Nielsen's network.py: 784-30-10 sigmoid, quadratic cost, SGD eta=3.0, "
                 "batch 10, 30 epochs, N(0,1) init (his result: ~95 %)",
        "network": {"hidden": [30], "activation": "sigmoid", "output": "sigmoid",
                    "loss": "quadratic", "init": "large"},
        "fit": {"epochs": 30, "batch_size": 10, "optimizer": SGD(lr=3.0, momentum=0.0)},
    },
    "nielsen-improved": {
        "about": "Nielsen's network2.py: 784-100-10 sigmoid, cross-entropy, L2 lambda=5.0/n, "
                 "eta=0.5, batch 10, 1/sqrt(n) init, 60 epochs (his result: ~98 %)",
        "network": {"hidden": [100], "activation": "sigmoid", "output": "sigmoid",
                    "loss": "cross_entropy", "init": "normal"},
        # his L2 term lambda/(2n) sum w^2 is weight decay lambda/n with n = 50,000 images
        "fit": {"epochs": 60, "batch_size": 10,
                "optimizer": SGD(lr=0.5, momentum=0.0, weight_decay=5.0 / 50000)},
    },
    "momentum-300": {
        "about": "784-300-10 ReLU, SGD lr 0.1 momentum 0.9, batch 256, 20 epochs (fastmlp's "
                 "default run)",
        "network": {"hidden": [300], "activation": "relu", "init": "he"},
        "fit": {"epochs": 20, "batch_size": 256, "optimizer": SGD(lr=0.1, momentum=0.9)},
    },
    "adam-wide": {
        "about": "one hidden layer of 2048 ReLU, Adam lr 1e-3, batch 128, 20 epochs (the "
                 "blog's best MLP: 98.54 %)",
        "network": {"hidden": [2048], "activation": "relu", "init": "he"},
        "fit": {"epochs": 20, "batch_size": 128, "optimizer": Adam(lr=1e-3)},
    },
    "dropout-mlp": {
        "about": "784-1024-1024-10 ReLU, dropout 0.5 (inputs 0.2), max-norm 3.5, SGD with "
                 "momentum ramped 0.5 -> 0.95, cosine-decayed lr from 0.1, batch 128, 50 epochs "
                 "(the dropout paper's recipe, shortened)",
        "network": {"hidden": [1024, 1024], "activation": "relu", "init": "he", "dropout": 0.5,
                    "input_dropout": 0.2, "max_norm": 3.5},
        "fit": {"epochs": 50, "batch_size": 128, "optimizer": SGD(lr=0.1, momentum=0.5),
                "lr_schedule": CosineDecay(50), "momentum_schedule": LinearRamp(0.5, 0.95, 20)},
    },
}


def names():
    return sorted(RECIPES)


def get(name):
    """{"about", "network", "fit"} of a recipe (a copy: change it freely)."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {names()}, got {name!r}")
    return copy.deepcopy(RECIPES[name])


def build(name, n_features=784, n_classes=10, seed=0, **network_overrides):
    """(Network, fit keyword arguments) of a recipe."""
    from .network import Network
    recipe = get(name)
    net_args = dict(recipe["network"], seed=seed)
    net_args.update(network_overrides)
    hidden = net_args.pop("hidden")
    return Network([n_features, *hidden, n_classes], **net_args), recipe["fit"]
