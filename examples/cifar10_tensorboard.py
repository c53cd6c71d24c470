"""The course notebook's CIFAR-10 CNN, watched in TensorBoard: run, then
``tensorboard --logdir logs``. Needs the CIFAR-10 binary files (downloaded into the cache when
missing) and the tensorboard extra."""
from fastmlp import load_cifar10
from fastmlp.callbacks import TensorBoard
from fastmlp.recipes import build

(X, y), (X_test, y_test) = load_cifar10()        # (n, 32, 32, 3) float32 in [0, 1]
net, fit = build("course-cifar-cnn", n_features=32 * 32 * 3)
board = TensorBoard("logs", histograms=True)
net.fit(X, y, validation_data=(X_test, y_test), callbacks=[board], **fit)
print(f"test accuracy: {net.evaluate(X_test, y_test)['accuracy']:.4f}; run: {board.run_dir}")
