"""Rebuild the sample models in this folder: train them, write ONNX graphs and eval data.

Usage (dev-only dependencies, never needed at run time):

    pip install torch==2.13.0 scikit-learn
    python sample_models/build.py [--out DIR]

Every model is trained on scikit-learn's ``load_digits`` (8x8 handwritten digits, 1797
samples, shipped inside the scikit-learn wheel, so no network). The ONNX graphs are written by
hand with ``onnx.helper`` from the trained weights, which gives full control over the op types
the compression passes must handle (Gemm with and without transB, MatMul+Add, Conv with groups,
separate BatchNormalization nodes, LayerNormalization, attention, Constant nodes, If subgraphs,
external data).

Determinism: seeds everywhere, one thread, ``torch.use_deterministic_algorithms``, and npz files
written with a fixed zip timestamp, so two runs on the same machine give byte-identical files.
(Float results of training may differ across CPUs with different vector units.)

After writing each model the script checks it with ``onnx.checker`` (full_check), runs it in
onnxruntime on CPU, compares the logits with the torch forward pass and prints the accuracy on
the held-out split. With the default output folder it also rewrites the table in README.md.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SEED = 0
OPSET = 17
IR_VERSION = 8
N_TEST = 360  # held-out split size (20% of 1797, stratified)
N_CALIB = 128
MAX_ABS_DIFF = 1e-4  # onnxruntime vs torch, on logits
BATCH = "N"  # symbolic batch dimension

TABLE_START = "<!-- build.py:table:start -->"
TABLE_END = "<!-- build.py:table:end -->"


# --------------------------------------------------------------------------- data


def load_data():
    """Digits as float32 in [0, 1]; a stratified train/test split and a calibration subset."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0)).astype(np.float32)  # [1797, 8, 8]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=N_TEST, stratify=y, random_state=SEED
    )
    calib_idx = np.random.default_rng(SEED).permutation(len(x_tr))[:N_CALIB]
    return {
        "train": (np.ascontiguousarray(x_tr), np.ascontiguousarray(y_tr)),
        "test": (np.ascontiguousarray(x_te), np.ascontiguousarray(y_te)),
        "calib": (np.ascontiguousarray(x_tr[calib_idx]), np.ascontiguousarray(y_tr[calib_idx])),
    }


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but byte-reproducible: fixed zip timestamps and member order."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


# --------------------------------------------------------------------------- torch models


def torch_modules():
    """Define the torch modules lazily so importing this file does not need torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 256)
            self.fc2 = nn.Linear(256, 128)
            self.fc3 = nn.Linear(128, 10)

        def forward(self, x):  # x: [N, 64]
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    class Linear(nn.Module):
        """The else-branch of the If model: multinomial logistic regression."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
            self.bn2 = nn.BatchNorm2d(64)
            self.pw = nn.Conv2d(64, 128, 1, bias=True)
            self.bn3 = nn.BatchNorm2d(128)
            self.fc = nn.Linear(128 * 4 * 4, 10)

        def forward(self, x):  # x: [N, 1, 8, 8]
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.dw(x)))
            x = F.relu(self.bn3(self.pw(x)))
            x = F.max_pool2d(x, 2)
            return self.fc(torch.flatten(x, 1))

    class Block(nn.Module):
        def __init__(self, d, heads, ff):
            super().__init__()
            self.heads = heads
            self.ln1 = nn.LayerNorm(d)
            self.q = nn.Linear(d, d)
            self.k = nn.Linear(d, d)
            self.v = nn.Linear(d, d)
            self.o = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.ff1 = nn.Linear(d, ff)
            self.ff2 = nn.Linear(ff, d)

        def forward(self, h):  # h: [N, S, D]
            n, s, d = h.shape
            dh = d // self.heads
            a = self.ln1(h)
            q = self.q(a).reshape(n, s, self.heads, dh).transpose(1, 2)  # [N, H, S, dh]
            k = self.k(a).reshape(n, s, self.heads, dh).permute(0, 2, 3, 1)  # [N, H, dh, S]
            v = self.v(a).reshape(n, s, self.heads, dh).transpose(1, 2)
            p = torch.softmax((q @ k) * (1.0 / math.sqrt(dh)), dim=-1)
            o = (p @ v).transpose(1, 2).reshape(n, s, d)
            h = h + self.o(o)
            return h + self.ff2(F.relu(self.ff1(self.ln2(h))))

    class Transformer(nn.Module):
        def __init__(self, feat=8, seq=8, d=64, heads=2, layers=2, ff=128, classes=10):
            super().__init__()
            self.embed = nn.Linear(feat, d)
            self.pos = nn.Parameter(torch.randn(seq, d) * 0.02)
            self.layers = nn.ModuleList(Block(d, heads, ff) for _ in range(layers))
            self.ln_f = nn.LayerNorm(d)
            self.head = nn.Linear(d, classes)

        def forward(self, x):  # x: [N, S, F], each digit row is one token
            h = self.embed(x) + self.pos
            for blk in self.layers:
                h = blk(h)
            return self.head(self.ln_f(h).mean(dim=1))

    return MLP, Linear, CNN, Transformer


def train(model, x, y, *, epochs, lr, weight_decay=1e-4, batch=64):
    """Full-batch-deterministic AdamW with a cosine schedule; returns the model in eval mode."""
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(xt) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def np32(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


# --------------------------------------------------------------------------- ONNX building


class Graph:
    """Collects nodes and weights for one (sub)graph.

    ``const_weights=True`` emits every weight as a ``Constant`` node instead of an initializer.
    ``prefix`` keeps names unique when the graph becomes an If branch (ONNX forbids shadowing).
    """

    def __init__(self, prefix: str = "", const_weights: bool = False):
        self.prefix = prefix
        self.const_weights = const_weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self._counter = 0

    def weight(self, name: str, arr: np.ndarray) -> str:
        name = self.prefix + name
        tensor = numpy_helper.from_array(np.ascontiguousarray(arr), name)
        if self.const_weights:
            self.nodes.append(
                helper.make_node("Constant", [], [name], name=f"{name}/Constant", value=tensor)
            )
        else:
            self.inits.append(tensor)
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"{self.prefix}{name}"
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=f"{self.prefix}{name}/{op_type}", **attrs)
        )
        return out

    def make(self, name, inputs, outputs) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="onnxzip-sample-models",
        doc_string="",
    )
    return model


def fvalue(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp_body(g: Graph, mlp, x: str) -> str:
    """fc1 as Gemm(transB=1) on the torch layout, fc2 as MatMul+Add, fc3 as Gemm(transB=0)."""
    h = g.op("Gemm", [x, g.weight("fc1.weight", np32(mlp.fc1.weight)),
                      g.weight("fc1.bias", np32(mlp.fc1.bias))], "fc1", transB=1)
    h = g.op("Relu", [h], "relu1")
    h = g.op("MatMul", [h, g.weight("fc2.weight", np32(mlp.fc2.weight).T)], "fc2")
    h = g.op("Add", [h, g.weight("fc2.bias", np32(mlp.fc2.bias))], "fc2_bias")
    h = g.op("Relu", [h], "relu2")
    return g.op("Gemm", [h, g.weight("fc3.weight", np32(mlp.fc3.weight).T),
                         g.weight("fc3.bias", np32(mlp.fc3.bias))], "logits", transB=0)


def build_mlp(mlp, *, const_weights=False) -> onnx.ModelProto:
    g = Graph(const_weights=const_weights)
    out = mlp_body(g, mlp, "input")
    assert out == "logits"
    name = "digits_mlp_const" if const_weights else "digits_mlp"
    return make_model(g.make(name, [fvalue("input", [BATCH, 64])], [fvalue("logits", [BATCH, 10])]))


def build_if(mlp, linear) -> onnx.ModelProto:
    """cond = ReduceSum(input) > -1e30 (true for any finite input, but not a constant)."""
    then = Graph(prefix="then/")
    then_out = mlp_body(then, mlp, "input")
    then_graph = then.make("then_branch", [], [fvalue(then_out, [BATCH, 10])])

    other = Graph(prefix="else/", const_weights=True)
    else_out = other.op("Gemm", ["input", other.weight("fc.weight", np32(linear.fc.weight)),
                                 other.weight("fc.bias", np32(linear.fc.bias))], "logits", transB=1)
    else_graph = other.make("else_branch", [], [fvalue(else_out, [BATCH, 10])])

    g = Graph()
    total = g.op("ReduceSum", ["input"], "total", keepdims=0)
    cond = g.op("Greater", [total, g.weight("cond.threshold", np.array(-1e30, np.float32))], "cond")
    g.nodes.append(helper.make_node("If", [cond], ["logits"], name="branch/If",
                                    then_branch=then_graph, else_branch=else_graph))
    return make_model(g.make("if_subgraph", [fvalue("input", [BATCH, 64])],
                             [fvalue("logits", [BATCH, 10])]))


def build_cnn(cnn) -> onnx.ModelProto:
    g = Graph()

    def bn(x, mod, name):
        return g.op("BatchNormalization", [
            x,
            g.weight(f"{name}.weight", np32(mod.weight)),
            g.weight(f"{name}.bias", np32(mod.bias)),
            g.weight(f"{name}.running_mean", np32(mod.running_mean)),
            g.weight(f"{name}.running_var", np32(mod.running_var)),
        ], name, epsilon=float(mod.eps), momentum=float(1.0 - mod.momentum))

    h = g.op("Conv", ["input", g.weight("conv1.weight", np32(cnn.conv1.weight))], "conv1",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    h = g.op("Relu", [bn(h, cnn.bn1, "bn1")], "relu1")
    h = g.op("Conv", [h, g.weight("dw.weight", np32(cnn.dw.weight))], "dw",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=64)
    h = g.op("Relu", [bn(h, cnn.bn2, "bn2")], "relu2")
    h = g.op("Conv", [h, g.weight("pw.weight", np32(cnn.pw.weight)),
                      g.weight("pw.bias", np32(cnn.pw.bias))], "pw", kernel_shape=[1, 1])
    h = g.op("Relu", [bn(h, cnn.bn3, "bn3")], "relu3")
    h = g.op("MaxPool", [h], "pool", kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Flatten", [h], "flatten", axis=1)
    out = g.op("Gemm", [h, g.weight("fc.weight", np32(cnn.fc.weight)),
                        g.weight("fc.bias", np32(cnn.fc.bias))], "logits", transB=1)
    assert out == "logits"
    return make_model(g.make("digits_cnn", [fvalue("input", [BATCH, 1, 8, 8])],
                             [fvalue("logits", [BATCH, 10])]))


def build_transformer(tf) -> onnx.ModelProto:
    g = Graph()
    d = tf.embed.out_features
    heads = tf.layers[0].heads
    dh = d // heads
    split = g.weight("attn.split_shape", np.array([0, 0, heads, dh], np.int64))
    merge = g.weight("attn.merge_shape", np.array([0, 0, d], np.int64))
    scale = g.weight("attn.scale", np.array(1.0 / math.sqrt(dh), np.float32))

    def linear(x, mod, name):
        y = g.op("MatMul", [x, g.weight(f"{name}.weight", np32(mod.weight).T)], name)
        return g.op("Add", [y, g.weight(f"{name}.bias", np32(mod.bias))], f"{name}_bias")

    def layernorm(x, mod, name):
        return g.op("LayerNormalization", [x, g.weight(f"{name}.weight", np32(mod.weight)),
                                           g.weight(f"{name}.bias", np32(mod.bias))],
                    name, axis=-1, epsilon=float(mod.eps))

    h = linear("input", tf.embed, "embed")
    h = g.op("Add", [h, g.weight("pos", np32(tf.pos))], "embed_pos")
    for i, blk in enumerate(tf.layers):
        p = f"layers.{i}"
        a = layernorm(h, blk.ln1, f"{p}.ln1")
        q = g.op("Reshape", [linear(a, blk.q, f"{p}.attn.q"), split], f"{p}.attn.q_split")
        k = g.op("Reshape", [linear(a, blk.k, f"{p}.attn.k"), split], f"{p}.attn.k_split")
        v = g.op("Reshape", [linear(a, blk.v, f"{p}.attn.v"), split], f"{p}.attn.v_split")
        q = g.op("Transpose", [q], f"{p}.attn.q_heads", perm=[0, 2, 1, 3])  # [N, H, S, dh]
        k = g.op("Transpose", [k], f"{p}.attn.k_heads", perm=[0, 2, 3, 1])  # [N, H, dh, S]
        v = g.op("Transpose", [v], f"{p}.attn.v_heads", perm=[0, 2, 1, 3])
        s = g.op("MatMul", [q, k], f"{p}.attn.scores")
        s = g.op("Mul", [s, scale], f"{p}.attn.scaled")
        s = g.op("Softmax", [s], f"{p}.attn.probs", axis=-1)
        o = g.op("MatMul", [s, v], f"{p}.attn.context")
        o = g.op("Transpose", [o], f"{p}.attn.context_t", perm=[0, 2, 1, 3])
        o = g.op("Reshape", [o, merge], f"{p}.attn.merge")
        h = g.op("Add", [h, linear(o, blk.o, f"{p}.attn.o")], f"{p}.attn.residual")
        f = layernorm(h, blk.ln2, f"{p}.ln2")
        f = g.op("Relu", [linear(f, blk.ff1, f"{p}.ff1")], f"{p}.ff1_relu")
        h = g.op("Add", [h, linear(f, blk.ff2, f"{p}.ff2")], f"{p}.ffn.residual")
    h = layernorm(h, tf.ln_f, "ln_f")
    h = g.op("ReduceMean", [h], "pool", axes=[1], keepdims=0)
    out = g.op("Gemm", [h, g.weight("head.weight", np32(tf.head.weight)),
                        g.weight("head.bias", np32(tf.head.bias))], "logits", transB=1)
    assert out == "logits"
    return make_model(g.make("transformer", [fvalue("input", [BATCH, 8, 8])],
                             [fvalue("logits", [BATCH, 10])]))


# --------------------------------------------------------------------------- verify & write


def count_weights(model: onnx.ModelProto) -> int:
    """Float weight elements: initializers and Constant values, subgraphs included."""
    total = 0

    def visit(graph):
        nonlocal total
        tensors = list(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    tensors.append(attr.t)
                elif attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
        for t in tensors:
            if t.data_type == TensorProto.FLOAT:
                total += int(np.prod(t.dims, dtype=np.int64))

    visit(model.graph)
    return total


def verify(path: Path, feeds: dict[str, np.ndarray], reference: np.ndarray, labels: np.ndarray):
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], feeds)[0]
    diff = float(np.max(np.abs(logits - reference)))
    if diff > MAX_ABS_DIFF:
        raise SystemExit(f"error: `{path}` differs from torch by {diff:.3g} > {MAX_ABS_DIFF}")
    acc = float(np.mean(logits.argmax(axis=1) == labels))
    return acc, diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    args = ap.parse_args(argv)
    out_dir: Path = args.out.resolve()

    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()

    data = load_data()
    x_tr, y_tr = data["train"]
    x_te, y_te = data["test"]
    x_ca, y_ca = data["calib"]
    MLP, Linear, CNN, Transformer = torch_modules()

    def flat(x):
        return np.ascontiguousarray(x.reshape(len(x), 64))

    def img(x):
        return np.ascontiguousarray(x.reshape(len(x), 1, 8, 8))

    rows = []

    def emit(name, model, layout, ref_model, calib=True, extra_files=()):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.onnx"
        if name == "external_data":
            data_file = folder / "model.onnx.data"
            if data_file.exists():
                data_file.unlink()  # onnx appends to an existing data file
            onnx.save_model(model, str(path), save_as_external_data=True,
                            all_tensors_to_one_file=True, location="model.onnx.data",
                            size_threshold=0)
            data_file.chmod(0o644)  # onnx creates it 0600
        else:
            onnx.save_model(model, str(path))
        save_npz(folder / "eval.npz", {"input": layout(x_te), "labels": y_te})
        if calib:
            save_npz(folder / "calib.npz", {"input": layout(x_ca), "labels": y_ca})
        acc, diff = verify(path, {"input": layout(x_te)}, torch_logits(ref_model, layout(x_te)),
                           y_te)
        size = sum(p.stat().st_size for p in [path, *(folder / f for f in extra_files)])
        rows.append((name, count_weights(onnx.load(str(path))), size, acc,
                     "x".join(["N", *map(str, layout(x_te).shape[1:])])))
        print(f"{name:14s} weights={rows[-1][1]:7d} size={size:8d} B acc={acc:.4f} "
              f"max|ort-torch|={diff:.2e}  [{time.perf_counter() - t0:.1f}s]", flush=True)

    torch.manual_seed(SEED)
    mlp = train(MLP(), flat(x_tr), y_tr, epochs=60, lr=3e-3, weight_decay=5e-2)
    torch.manual_seed(SEED)
    linear = train(Linear(), flat(x_tr), y_tr, epochs=40, lr=1e-2)
    emit("digits_mlp", build_mlp(mlp), flat, mlp)
    emit("const_weights", build_mlp(mlp, const_weights=True), flat, mlp, calib=False)
    emit("if_subgraph", build_if(mlp, linear), flat, mlp, calib=False)
    emit("external_data", build_mlp(mlp), flat, mlp, calib=False,
         extra_files=["model.onnx.data"])

    torch.manual_seed(SEED)
    cnn = train(CNN(), img(x_tr), y_tr, epochs=40, lr=3e-3)
    emit("digits_cnn", build_cnn(cnn), img, cnn)

    torch.manual_seed(SEED)
    tf = train(Transformer(), x_tr, y_tr, epochs=80, lr=2e-3, weight_decay=1e-2)
    emit("transformer", build_transformer(tf), lambda x: x, tf)

    order = ["digits_mlp", "digits_cnn", "transformer", "const_weights", "if_subgraph",
             "external_data"]
    rows.sort(key=lambda r: order.index(r[0]))
    table = render_table(rows)
    print(table)
    readme = out_dir / "README.md"
    if readme.exists():
        text = readme.read_text()
        if TABLE_START in text and TABLE_END in text:
            head, rest = text.split(TABLE_START, 1)
            _, tail = rest.split(TABLE_END, 1)
            readme.write_text(f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}")
    print(f"built {len(rows)} models into {out_dir} in {time.perf_counter() - t0:.1f}s")
    return 0


TASKS = {
    "digits_mlp": "digits, flat 64 pixels",
    "digits_cnn": "digits, 1x8x8 image",
    "transformer": "digits, 8 row tokens x 8 features",
    "const_weights": "digits (digits_mlp weights)",
    "if_subgraph": "digits (digits_mlp in then-branch)",
    "external_data": "digits (digits_mlp weights)",
}


def render_table(rows) -> str:
    lines = [
        "| model | task | float weights | file size | test top-1 | input `input` (float32) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, weights, size, acc, shape in rows:
        lines.append(f"| `{name}` | {TASKS[name]} | {weights:,} | {size / 1024:,.1f} KiB | "
                     f"{acc * 100:.2f}% | `[{shape.replace('x', ', ')}]` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
