"""The learned denoiser of RED (Kimanius et al. 2021, §3.1): a small residual 3D U-Net that maps a
standardised noisy reconstruction x~ to the estimate of its truth low-passed by its FSC,
f(x~) = x~ + g(x~), trained on pairs made by :mod:`polishplugin.core.refine.unet_pairs`.

Architecture (``base`` channels c, two poolings, so boxes are padded to a multiple of 4):
    enc1: 2 x [conv3 -> LeakyReLU] (1 -> c)        at n
    enc2: max-pool 2, 2 x [conv3 -> LeakyReLU] (c -> 2c)   at n/2
    bottom: max-pool 2, 2 x [conv3 -> LeakyReLU] (2c -> 4c) at n/4
    up: transposed conv 2 (4c -> 2c), concat enc2, 2 x conv3 (4c -> 2c); same to c at n
    out: conv1 (c -> 1), added to the input (residual).
No normalisation layers: the map is standardised outside (§3.1), so the network sees unit-variance
input and the denoiser commutes with the map's offset and scale.

torch is imported lazily (the optional ``unet`` extra). Weights are stored as numpy arrays in an
``.npz`` with the architecture in a JSON string, so they load without pickle.

Precision: the network runs in float32 or, for inference, in bfloat16 (weights and activations,
channels-last layout) with the residual added to the float32 input, so only g is rounded.
``auto`` takes bfloat16 where the CPU multiplies it natively (AVX-512 BF16 or AMX), float32
elsewhere (measured: BENCHMARKS.md, "The U-Net in bfloat16").
"""
import json
import os

import numpy as np

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "unet3d.npz")
MULTIPLE = 4  # two poolings
PRECISIONS = ("auto", "float32", "bfloat16")


def import_torch():
    """torch, or ImportError naming the extra that installs it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError("the 'unet' denoiser needs torch, which is not installed (%s): install the "
                          "'unet' extra, pip install 'scipion-em-polishplugin[unet]' (torch 2.13.0, "
                          "CPU build), or choose the 'tv' or 'identity' denoiser" % exc) from exc
    return torch


def build_unet(base=8):
    """A fresh :class:`UNet3D` with ``base`` channels at full resolution (float32)."""
    torch = import_torch()
    nn = torch.nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1),
                             nn.Conv3d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))

    class UNet3D(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.base = c
            self.enc1, self.enc2, self.bottom = block(1, c), block(c, 2 * c), block(2 * c, 4 * c)
            self.pool = nn.MaxPool3d(2)
            self.up2 = nn.ConvTranspose3d(4 * c, 2 * c, 2, stride=2)
            self.dec2 = block(4 * c, 2 * c)
            self.up1 = nn.ConvTranspose3d(2 * c, c, 2, stride=2)
            self.dec1 = block(2 * c, c)
            self.out = nn.Conv3d(c, 1, 1)

        def residual(self, x):
            """g(x), the network's correction to its input."""
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            b = self.bottom(self.pool(e2))
            d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
            return self.out(d1)

        def forward(self, x):
            return x + self.residual(x)

    return UNet3D(int(base))


def count_parameters(model):
    return int(sum(p.numel() for p in model.parameters()))


def save_weights(model, path, info=None):
    """Write the model's parameters and its architecture (+ ``info``, JSON-able) to ``path``
    (.npz, float32)."""
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    meta = {"architecture": "UNet3D", "base": model.base, "info": info or {}}
    tmp = path + ".part.npz"
    np.savez_compressed(tmp, __meta__=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def native_bfloat16():
    """Whether this CPU multiplies bfloat16 natively (the avx512_bf16 or amx_bf16 flag of Linux's
    /proc/cpuinfo); False where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def resolve_precision(precision):
    """float32 or bfloat16 for ``precision`` (one of :data:`PRECISIONS`; auto: bfloat16 where
    :func:`native_bfloat16`, else float32)."""
    if precision not in PRECISIONS:
        raise ValueError("U-Net precision must be one of %s, got %r"
                         % (", ".join(PRECISIONS), precision))
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return precision


def load_unet(path=DEFAULT_WEIGHTS, precision="float32"):
    """The network stored at ``path`` (:func:`save_weights`), in eval mode, its weights in
    ``precision`` (:func:`resolve_precision`; bfloat16 also channels-last, for inference by
    :func:`apply_unet`). Clear errors for a missing or foreign file."""
    torch = import_torch()
    if not os.path.isfile(path):
        raise FileNotFoundError("U-Net weights not found: %s" % path)
    with np.load(path) as z:
        if "__meta__" not in z.files:
            raise ValueError("%s is not a U-Net weights file (no architecture record)" % path)
        meta = json.loads(str(z["__meta__"]))
        state = {k: torch.from_numpy(z[k].copy()) for k in z.files if k != "__meta__"}
    model = build_unet(meta["base"])
    model.load_state_dict(state)
    model.eval()
    if resolve_precision(precision) == "bfloat16":
        model = model.to(torch.bfloat16).to(memory_format=torch.channels_last_3d)
    return model


def apply_unet(model, volume):
    """model(volume) for a standardised cube of any size: reflect-padded to a multiple of
    :data:`MULTIPLE`, run without gradients in the model's precision (bfloat16: x + g(x) with
    g in bfloat16 and x and the sum in float32), cropped back; float64 out."""
    torch = import_torch()
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3:
        raise ValueError("the U-Net takes a 3D map, got shape %s" % (v.shape,))
    pad = [(0, (-s) % MULTIPLE) for s in v.shape]
    vp = np.pad(v, pad, mode="reflect") if any(p[1] for p in pad) else v
    x = torch.from_numpy(np.ascontiguousarray(vp))[None, None]
    with torch.no_grad():
        if next(model.parameters()).dtype == torch.bfloat16:
            xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
            out = (x + model.residual(xb).float())[0, 0].numpy()
        else:
            out = model(x)[0, 0].numpy()
    return out[:v.shape[0], :v.shape[1], :v.shape[2]].astype(np.float64)
