"""An MLP trained on elastically distorted digits, each image distorted anew every epoch
(Simard et al. 2003), and a picture of what the distortions look like (distortions.png)."""
from fastmlp import load_mnist
from fastmlp.augment import preview
from fastmlp.recipes import build

(X, y), (X_val, y_val), (X_test, y_test) = load_mnist(validation_size=5000)
net, fit = build("augmented-mlp")
preview(X_test, fit["augment"], (28, 28, 1), count=8, seed=0, out="distortions.png")
net.fit(X, y, validation_data=(X_val, y_val), **fit)
print(f"test accuracy: {net.evaluate(X_test, y_test)['accuracy']:.4f}")
