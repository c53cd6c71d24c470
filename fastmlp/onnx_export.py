"""ONNX export: a trained network as an ONNX graph that ONNX Runtime (and every runtime that reads
ONNX) runs, with the ``onnx`` package (``pip install fastmlp[onnx]``).

The graph takes fastmlp's input as it is: ``(N, features)`` for a network of dense layers, and
channels-last images ``(N, height, width, channels)`` for an image network (or its flat rows,
``flat_input=True``), scaled as in training (float in [0, 1] for fastmlp's data sets). ``N`` is
dynamic. It gives two outputs: ``probabilities`` (softmax, or one sigmoid per class) and
``logits``, the last layer's values before them. Dropout is the identity at inference and
leaves no node. Float32 convolutions and pooling are ONNX's ``Conv``/``MaxPool`` on
channels-first data; in float64, for which ONNX Runtime's CPU provider has no ``Conv``, they are
gathers of the windows followed by ``MatMul``/``ReduceMax``, in channels-last order.
"""
import json

import numpy as np

from ._version import __version__
from .errors import ExportError

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax over one axis; ReduceMax's axes move to an input from opset 18


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'fastmlp[onnx]'") \
            from None
    return onnx, helper, numpy_helper


class _Graph:
    """Nodes and initializers of a graph under construction, with fresh names."""

    def __init__(self, dtype, opset):
        self.onnx, self.helper, self.numpy_helper = _onnx()
        self.dtype, self.opset = np.dtype(dtype), opset
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, array, stem):
        name = self.name(stem)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, stem=None, output=None, **attributes):
        output = output or self.name(stem or op.lower())
        self.nodes.append(self.helper.make_node(op, list(inputs), [output],
                                                name=self.name(op), **attributes))
        return output

    def shape(self, *dims):
        return self.constant(np.array(dims, np.int64), "shape")

    def reduce_max(self, x, axis):
        if self.opset >= 18:
            return self.node("ReduceMax", [x, self.constant(np.array([axis], np.int64), "axes")],
                             keepdims=0)
        return self.node("ReduceMax", [x], axes=[axis], keepdims=0)


ACTIVATION_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def _activate(graph, x, activation):
    if activation is None:
        return x
    if activation not in ACTIVATION_OPS:
        raise ExportError(f"activation {activation!r} has no ONNX counterpart here")
    return graph.node(ACTIVATION_OPS[activation], [x])


def _window_indices(h, w, c, out_h, out_w, kh, kw, stride, per_channel):
    """Indices into a flat (h, w, c) image of each output position's window: (out_h·out_w,
    kh·kw·c) in fastmlp's patch order, or per channel (out_h·out_w·c, kh·kw) for pooling."""
    i = np.arange(out_h)[:, None, None, None] * stride + np.arange(kh)[None, None, :, None]
    j = np.arange(out_w)[None, :, None, None] * stride + np.arange(kw)[None, None, None, :]
    pixel = (i * w + j) * c  # (out_h, out_w, kh, kw)
    if per_channel:  # (out_h, out_w, c, kh·kw)
        index = pixel.reshape(out_h, out_w, 1, kh * kw) + np.arange(c)[None, None, :, None]
        return index.reshape(out_h * out_w * c, kh * kw)
    index = pixel[..., None] + np.arange(c)  # (out_h, out_w, kh, kw, c)
    return index.reshape(out_h * out_w, kh * kw * c)


def _conv(graph, x, layout, layer, shape, W, b):
    """A Conv2D layer; returns (output, layout)."""
    g = layer.geometry(shape)
    h, w, c, oh, ow, f, kh, kw, stride, pt, pl = (int(v) for v in g)
    pb = max((oh - 1) * stride + kh - h - pt, 0)
    pr = max((ow - 1) * stride + kw - w - pl, 0)
    if graph.dtype == np.float32:
        if layout == "nhwc":
            x = graph.node("Transpose", [x], perm=[0, 3, 1, 2])
        kernel = W.reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
        x = graph.node("Conv", [x, graph.constant(kernel, "kernel"), graph.constant(b, "bias")],
                       kernel_shape=[kh, kw], strides=[stride, stride], pads=[pt, pl, pb, pr])
        return _activate(graph, x, layer.activation), "nchw"
    x = _to_nhwc(graph, x, layout)
    if pt or pl or pb or pr:
        pads = np.array([0, pt, pl, 0, 0, pb, pr, 0], np.int64)
        x = graph.node("Pad", [x, graph.constant(pads, "pads")])
        h, w = h + pt + pb, w + pl + pr
    x = graph.node("Reshape", [x, graph.shape(-1, h * w * c)])
    index = _window_indices(h, w, c, oh, ow, kh, kw, stride, per_channel=False)
    patches = graph.node("Gather", [x, graph.constant(index, "windows")], axis=1)
    x = graph.node("MatMul", [patches, graph.constant(W, "kernel")])
    x = graph.node("Add", [x, graph.constant(b, "bias")])
    x = graph.node("Reshape", [x, graph.shape(-1, oh, ow, f)])
    return _activate(graph, x, layer.activation), "nhwc"


def _pool(graph, x, layout, layer, shape):
    g = layer.geometry(shape)
    h, w, c, oh, ow, _, kh, kw, stride = (int(v) for v in g[:9])
    if graph.dtype == np.float32:
        if layout == "nhwc":
            x = graph.node("Transpose", [x], perm=[0, 3, 1, 2])
        return graph.node("MaxPool", [x], kernel_shape=[kh, kw], strides=[stride, stride]), "nchw"
    x = graph.node("Reshape", [_to_nhwc(graph, x, layout), graph.shape(-1, h * w * c)])
    index = _window_indices(h, w, c, oh, ow, kh, kw, stride, per_channel=True)
    windows = graph.node("Gather", [x, graph.constant(index, "windows")], axis=1)
    x = graph.reduce_max(windows, 2)
    return graph.node("Reshape", [x, graph.shape(-1, oh, ow, c)]), "nhwc"


def _to_nhwc(graph, x, layout):
    return graph.node("Transpose", [x], perm=[0, 2, 3, 1]) if layout == "nchw" else x


def _check_opset(opset):
    onnx, _, _ = _onnx()
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or \
            not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer in [{MIN_OPSET}, {newest}] (this onnx "
                         f"package's newest), got {opset!r}")
    return int(opset)


def network_graph(net, opset=None, flat_input=False):
    """(graph builder, input name, input shape, logits name, probabilities name) of ``net``."""
    graph = _Graph(net.dtype, _check_opset(opset))
    images = len(net.input_shape) == 3
    if flat_input or not images:
        input_shape = ["N", net.n_features]
    else:
        input_shape = ["N", *net.input_shape]
    x, layout = "input", "flat"
    if images:
        layout = "nhwc"
        if flat_input:
            x = graph.node("Reshape", [x, graph.shape(-1, *net.input_shape)])
    weights = dict(zip(net._param_layers, net._stored_weights()))
    biases = dict(zip(net._param_layers, net.biases))
    for l, layer in enumerate(net.layers):
        shape = net._in_shapes[l]
        if layer.kind == "dense":
            if layout != "flat":
                raise ExportError(f"{layer!r} takes flat inputs: put Flatten() before it")
            x = graph.node("Gemm", [x, graph.constant(weights[l], "weights"),
                                    graph.constant(biases[l], "bias")])
            x = _activate(graph, x, layer.activation)
        elif layer.kind == "conv2d":
            x, layout = _conv(graph, x, layout, layer, shape, weights[l], biases[l])
        elif layer.kind == "maxpool2d":
            x, layout = _pool(graph, x, layout, layer, shape)
        elif layer.kind == "flatten":
            x = graph.node("Flatten", [_to_nhwc(graph, x, layout)], axis=1)
            layout = "flat"
        elif layer.kind == "batchnorm":  # ONNX's takes channels on axis 1
            if layout == "nhwc":
                x, layout = graph.node("Transpose", [x], perm=[0, 3, 1, 2]), "nchw"
            W = weights[l]
            x = graph.node("BatchNormalization",
                           [x, graph.constant(W[0], "gamma"), graph.constant(biases[l], "beta"),
                            graph.constant(W[1], "moving_mean"),
                            graph.constant(W[2], "moving_variance")], epsilon=layer.epsilon)
        elif layer.kind == "activation":
            x = _activate(graph, x, layer.activation)
        elif layer.kind != "dropout":  # dropout: the identity at inference
            raise ExportError(f"layer {layer!r} ({layer.kind}) cannot be exported to ONNX yet")
    logits = graph.node("Identity", [x], output="logits")
    op = "Softmax" if net.output == "softmax" else "Sigmoid"
    attributes = {"axis": 1} if op == "Softmax" else {}
    probabilities = graph.node(op, [logits], output="probabilities", **attributes)
    return graph, input_shape, logits, probabilities


def _model(graph, inputs, outputs, doc, metadata):
    onnx, helper, _ = graph.onnx, graph.helper, graph.numpy_helper
    model = helper.make_model(
        helper.make_graph(graph.nodes, "fastmlp", inputs, outputs, graph.initializers),
        opset_imports=[helper.make_opsetid("", graph.opset)], producer_name="fastmlp",
        producer_version=__version__, doc_string=doc)
    model.ir_version = min(model.ir_version, 10)  # what current ONNX Runtimes read
    helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v)
                                   for k, v in metadata.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def _metadata(net, input_shape, class_names=None):
    dims = ", ".join(map(str, input_shape))
    order = " channels last" if len(input_shape) == 4 else ""
    meta = {"fastmlp_version": __version__, "architecture": net.architecture,
            "layers": [layer.config() for layer in net.layers],
            "input": f"{net.dtype.name} in [0, 1] as in training, shape ({dims}){order}",
            "output": f"{net.output} probabilities ('probabilities') and the values before "
                      f"them ('logits')", "epochs_done": str(net.epochs_done)}
    if class_names is not None:
        meta["class_names"] = [c if isinstance(c, (str, int, float)) else str(c)
                               for c in class_names]
    return meta


def _tensor_type(graph):
    return graph.helper.np_dtype_to_tensor_dtype(graph.dtype)


def _save(model, path):
    if path is not None:
        from .serialization import atomic_write_bytes
        data = model.SerializeToString()
        atomic_write_bytes(path, lambda f: f.write(data))
    return model


def export_network(net, path=None, opset=None, flat_input=False, class_names=None):
    """``net`` as an ONNX model (returned, and written to ``path`` atomically when given)."""
    graph, input_shape, logits, probabilities = network_graph(net, opset, flat_input)
    helper, tensor = graph.helper, _tensor_type(graph)
    n_classes = net.n_classes
    model = _model(graph, [helper.make_tensor_value_info("input", tensor, input_shape)],
                   [helper.make_tensor_value_info(probabilities, tensor, ["N", n_classes]),
                    helper.make_tensor_value_info(logits, tensor, ["N", n_classes])],
                   net.summary(print_fn=None), _metadata(net, input_shape, class_names))
    return _save(model, path)


def export_classifier(clf, path=None, opset=None):
    """A fitted FastMLPClassifier as ONNX: ``label`` (the class of each row, from
    ``classes_``) and ``probabilities`` (one column per class), as skl2onnx exports
    MLPClassifier with ``zipmap=False``; the input is ``input`` (N, n_features_in_)."""
    classes = np.asarray(clf.classes_)
    if len(classes) < 2:
        raise ExportError("a classifier fitted on one class always predicts it: nothing to "
                          "export")
    net = clf.net_
    graph, input_shape, logits, probabilities = network_graph(net, opset)
    helper, tensor = graph.helper, _tensor_type(graph)
    types = graph.onnx.TensorProto
    if classes.dtype.kind in "iu":
        labels, label_type = classes.astype(np.int64), types.INT64
    elif classes.dtype.kind == "b":
        labels, label_type = classes, types.BOOL
    elif classes.dtype.kind == "f":
        labels, label_type = classes.astype(np.float64), types.DOUBLE
    elif classes.dtype.kind in "US" or classes.dtype == object and \
            all(isinstance(c, str) for c in classes):
        labels, label_type = np.array([str(c) for c in classes], dtype=object), types.STRING
    else:
        raise ExportError(f"class labels of dtype {classes.dtype} cannot be ONNX labels: use "
                          f"numbers, booleans or strings")
    index = graph.node("ArgMax", [probabilities], axis=1, keepdims=0)
    graph.node("Gather", [graph.constant(labels, "classes"), index], output="label", axis=0)
    model = _model(graph, [helper.make_tensor_value_info("input", tensor, input_shape)],
                   [helper.make_tensor_value_info("label", label_type, ["N"]),
                    helper.make_tensor_value_info(probabilities, tensor,
                                                  ["N", net.n_classes])],
                   net.summary(print_fn=None),
                   _metadata(net, input_shape, [c.item() if hasattr(c, "item") else c
                                                for c in classes]))
    return _save(model, path)
