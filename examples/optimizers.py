"""The same network trained with each optimizer, learning curves on one figure
(optimizers.png). Hyper-parameters are each optimizer's usual defaults; the curves are on a
validation split carved from the training set."""
from fastmlp import Network, load_mnist
from fastmlp.optimizers import SGD, Adagrad, Adam, RMSprop
from fastmlp.plotting import plot_compare

(X, y), (X_val, y_val), _ = load_mnist(validation_size=10000)
optimizers = {"SGD": SGD(0.1, momentum=0.0), "momentum": SGD(0.1, momentum=0.9),
              "Nesterov": SGD(0.1, momentum=0.9, nesterov=True), "Adam": Adam(1e-3),
              "RMSprop": RMSprop(1e-3), "Adagrad": Adagrad(0.01)}
histories = {}
for name, optimizer in optimizers.items():
    net = Network([784, 300, 10], seed=0)
    histories[name] = net.fit(X, y, epochs=12, batch_size=128, optimizer=optimizer,
                              validation_data=(X_val, y_val), verbose=0)
    print(f"{name:<9} validation accuracy {histories[name].history['val_accuracy'][-1]:.4f}")
plot_compare(histories, "optimizers.png", title="784-300-10 on MNIST")
