"""Figures that compare runs: the course's optimizer comparison and overfitting curves."""
import pytest

from fastmlp import Network


def test_compare_plot_of_several_runs(tmp_path, toy_data):
    from fastmlp.plotting import plot_compare
    X, y = toy_data
    histories = {}
    for name in ("sgd", "adam"):
        net = Network([64, 16, 10], seed=0, backend="numpy")
        histories[name] = net.fit(X[:500], y[:500], epochs=2, batch_size=50, optimizer=name,
                                  validation_data=(X[500:], y[500:]), verbose=0)
    out = plot_compare(histories, tmp_path / "optimizers.png", title="optimizers")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="at least one"):
        plot_compare({}, tmp_path / "none.png")
