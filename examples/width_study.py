"""Test accuracy against the hidden layer's width, three seeds each, averaged and plotted
(widths.png). Trials run on this process's threads; backend="local", "dask" or "ray" fan them
out to processes or a cluster instead."""
from fastmlp.sweep import plot, summarize, sweep

grid = {"hidden": [(32,), (64,), (128,), (256,)], "seed": [0, 1, 2]}
records = sweep(grid, data="mnist", base={"epochs": 5, "batch_size": 128}, backend="threads",
                n_jobs=2, out="widths.jsonl")
for width, (mean, std, n) in sorted(summarize(records, "hidden").items()):
    print(f"hidden {width[0]:>4}: {100 * mean:.2f} % +- {100 * std:.2f} ({n} seeds)")
plot(records, "hidden", "widths.png", log_x=True, title="MNIST: test accuracy against width")
