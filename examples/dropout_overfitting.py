"""Overfitting and what dropout and L2 do about it: a wide network on 5,000 training images
reaches 100 % on them; the validation accuracy says what generalises (overfitting.png)."""
from fastmlp import Network, load_mnist
from fastmlp.plotting import plot_compare

(X, y), (X_val, y_val), _ = load_mnist(validation_size=10000)
X, y = X[:5000], y[:5000]
runs = {"plain": (Network([784, 1024, 10], seed=0), {}),
        "dropout 0.5": (Network([784, 1024, 10], dropout=0.5, seed=0), {}),
        "L2 1e-4": (Network([784, 1024, 10], seed=0), {"weight_decay": 1e-4})}
histories = {}
for name, (net, extra) in runs.items():
    histories[name] = net.fit(X, y, epochs=40, batch_size=64, lr=0.05,
                              validation_data=(X_val, y_val), verbose=0, **extra)
    h = histories[name].history
    print(f"{name:<12} train {h['accuracy'][-1]:.4f}  validation {h['val_accuracy'][-1]:.4f}")
plot_compare(histories, "overfitting.png", title="784-1024-10 on 5,000 images")
