"""Named recipes: the seed experiments of the MNIST literature, each a network and its fit
settings in one place. ``fastmlp train --recipe NAME`` runs one (explicit flags override its
settings); ``fastmlp recipes`` lists them with their measured results (README: "Recipes")."""
import copy

from .augment import Augment
from .layers import Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D
from .optimizers import SGD, Adam
from .schedules import CosineDecay, LinearRamp


def _blog_cnn(dense=None, dropout=0.0):
    """The blog's CNNs: two 5x5 'same' convolutions of 20 filters, each max-pooled 2x2, then
    [Dropout] [Dense(dense, relu)] and the 10-class output."""
    layers = [Conv2D(20, 5, padding="same", activation="relu"), MaxPool2D(2),
              Conv2D(20, 5, padding="same", activation="relu"), MaxPool2D(2), Flatten()]
    if dropout:
        layers.append(Dropout(dropout))
    if dense:
        layers.append(Dense(dense, activation="relu"))
    return layers + [Dense(10)]


def _bn_cnn(filters=(32, 64), dense=256, dropout=0.4, convs_per_pool=2, kernel=3,
            padding="valid"):
    """``convs_per_pool`` convolutions of ``kernel`` with ``padding`` before each 2x2 max-pooling,
    ``filters`` per stage, each batch-normalized before its ReLU; then Dropout, Dense(dense)
    batch-normalized before its ReLU, and the 10-class output (normalization between a linear
    layer and its activation, as Keras users write it)."""
    layers = []
    for f in filters:
        for _ in range(convs_per_pool):
            layers += [Conv2D(f, kernel, padding=padding, activation="linear"),
                       BatchNormalization(), Activation("relu")]
        layers.append(MaxPool2D(2))
    return layers + [Flatten(), Dropout(dropout), Dense(dense, activation="linear"),
                     BatchNormalization(), Activation("relu"), Dense(10)]


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
    "augmented-mlp": {
        "about": "Simard et al.'s MLP with elastic distortions, twice as wide: 784-1600-10 ReLU, "
                 "every image elastically distorted (alpha 34, sigma 4, nearest-neighbour "
                 "sampling) anew each epoch, Adam 1e-3 cosine-decayed, batch 128, 80 epochs "
                 "(Simard 2003, 800 hidden: 99.3 %)",
        "network": {"hidden": [1600], "activation": "relu", "init": "he"},
        "fit": {"epochs": 80, "batch_size": 128, "optimizer": Adam(lr=1e-3),
                "lr_schedule": CosineDecay(80),
                "augment": Augment(elastic_alpha=34, elastic_sigma=4, interpolation="nearest")},
    },
    "cnn-v1": {
        "about": "the blog's first CNN: conv 20@5x5 same, pool 2, conv 20@5x5 same, pool 2, "
                 "dense 10 (20,350 parameters); Adam 1e-3, batch 100, 30 epochs (blog: 99.13 %)",
        "network": {"layers": _blog_cnn(), "input_shape": (28, 28, 1), "init": "he"},
        "fit": {"epochs": 30, "batch_size": 100, "optimizer": Adam(lr=1e-3)},
    },
    "cnn-v2": {
        "about": "the blog's second CNN: cnn-v1 with a dense layer of 100 ReLU before the "
                 "output (109,650 parameters); Adam 1e-3, batch 100, 30 epochs (blog: 99.32 %)",
        "network": {"layers": _blog_cnn(dense=100), "input_shape": (28, 28, 1), "init": "he"},
        "fit": {"epochs": 30, "batch_size": 100, "optimizer": Adam(lr=1e-3)},
    },
    "cnn": {
        "about": "fastmlp's CNN: cnn-v2 with dropout 0.4 before its dense layer, Adam 2e-3 "
                 "cosine-decayed over 15 epochs, batch 100 (10-12 minutes a seed on 2 cores)",
        "network": {"layers": _blog_cnn(dense=100, dropout=0.4), "input_shape": (28, 28, 1),
                    "init": "he"},
        "fit": {"epochs": 15, "batch_size": 100, "optimizer": Adam(lr=2e-3),
                "lr_schedule": CosineDecay(15)},
    },
    "cnn-bn-aug": {
        "about": "a small CNN with batch normalization: two 3x3 convolutions of 32 filters, "
                 "2x2 max-pooling, two of 64, pooling, each convolution normalized before its "
                 "ReLU; dropout 0.4, dense 256 normalized; trained on images elastically "
                 "distorted (alpha 34, sigma 4, nearest) anew each epoch; Adam 3e-3 "
                 "cosine-decayed, batch 100, 30 epochs (chosen on the validation split: "
                 "bench/cnn_bn_variants.py)",
        "network": {"layers": _bn_cnn(), "input_shape": (28, 28, 1), "init": "he"},
        "fit": {"epochs": 30, "batch_size": 100, "optimizer": Adam(lr=3e-3),
                "lr_schedule": CosineDecay(30),
                "augment": Augment(elastic_alpha=34, elastic_sigma=4, interpolation="nearest")},
    },
    "course-cifar-cnn": {
        "about": "the course notebook's CIFAR-10 CNN: conv 8@3x3 same, pool 2, conv 16@3x3 "
                 "same, pool 2, dense 128, dense 10; Adam 1e-3, batch 32, 10 epochs "
                 "(fastmlp train --dataset cifar10 --recipe course-cifar-cnn)",
        "network": {"layers": [Conv2D(8, 3, padding="same", activation="relu"), MaxPool2D(2),
                               Conv2D(16, 3, padding="same", activation="relu"), MaxPool2D(2),
                               Flatten(), Dense(128, activation="relu"), Dense(10)],
                    "input_shape": (32, 32, 3), "init": "xavier"},
        "fit": {"epochs": 10, "batch_size": 32, "optimizer": Adam(lr=1e-3)},
    },
}


def names():
    return sorted(RECIPES)


def get(name):
    """{"about", "network", "fit"} of a recipe (a copy: change it freely)."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {names()}, got {name!r}")
    return copy.deepcopy(RECIPES[name])


def image_shape(n_features, channels=1):
    """(h, w, c) of square images of n_features values (784 -> (28, 28, 1))."""
    side = int(round((n_features / channels) ** 0.5))
    if side * side * channels != n_features:
        raise ValueError(f"a CNN recipe needs square images; {n_features} features per sample "
                         f"are not {channels}-channel square images")
    return (side, side, channels)


def build(name, n_features=784, n_classes=10, seed=0, **network_overrides):
    """(Network, fit keyword arguments) of a recipe; a CNN recipe takes square images of
    ``n_features`` pixels (its input_shape's channels)."""
    from .network import Network
    recipe = get(name)
    net_args = dict(recipe["network"], seed=seed)
    net_args.update(network_overrides)
    if "layers" in net_args:
        layers = net_args.pop("layers")
        layers[-1] = Dense(n_classes)
        shape = net_args.pop("input_shape")
        if n_features != shape[0] * shape[1] * shape[2]:
            shape = image_shape(n_features, shape[2])
        return Network(layers, input_shape=shape, **net_args), recipe["fit"]
    hidden = net_args.pop("hidden")
    return Network([n_features, *hidden, n_classes], **net_args), recipe["fit"]
