"""Nielsen's network.py, chapter 1: 784-30-10 sigmoid, quadratic cost, SGD eta=3.0, batch 10,
30 epochs, N(0,1) initial weights. His result: about 95 %."""
from fastmlp import load_mnist
from fastmlp.recipes import build

(X, y), (X_test, y_test) = load_mnist()
net, fit = build("nielsen")
net.fit(X, y, validation_data=(X_test, y_test), **fit)
print(f"test accuracy: {net.evaluate(X_test, y_test)['accuracy']:.4f}")
