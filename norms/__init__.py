"""Normalization layers for CNN feature maps (NCHW) and ViT tokens (NLC).

`build(kind, num_channels, layout, **options)` is the only entry point the models use. Each
kind reduces over exactly these axes (Var is the biased variance; gamma/beta per channel):

    layout  kind  statistics over            one (mean, var) per
    nchw    bn    N, H, W                    channel          (running stats in eval)
    nchw    ln    C, H, W                    sample
    nchw    in    H, W                       sample x channel
    nchw    gn    C/G channels x H, W        sample x group
    nlc     bn    N, L                       channel          (running stats in eval)
    nlc     ln    C (scope="token")          token            (Transformer convention)
            ln    L, C (scope="sample")      sample
    nlc     in    L                          sample x channel
    nlc     gn    C/G channels x L           sample x group

and, beyond the four (each file's docstring has its equations): brn, frn, evonorm_s0/b0,
rms, ln2d; dyt and derf (no statistics: element-wise tanh / erf with learned scalars); sn
(learned mixes of in's, ln's and bn's moments); bgn (k samples x C/G channels x space: bn,
ghost bn, gn, ln and in are its points).

Each norm is declared once, in the file that defines it, by `register(Norm(...))`; every
module in this folder is imported here, so adding a norm is adding one file (and its
config in conf/norm/).
"""
from __future__ import annotations

import importlib
import pkgutil

from .registry import (
    LAYOUTS,
    Norm,
    build,
    check_batch,
    check_sites,
    get,
    includes_activation,
    kind_of,
    kinds,
    label,
    normalization_batch,
    register,
    unregister,
    uses_batch_statistics,
)

# The four norms and the control first (the order reports list kinds in), then the others by file.
_FIRST = ("batch", "layers")
for _name in (*_FIRST, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in (*_FIRST, "registry"))):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["LAYOUTS", "Norm", "build", "check_batch", "check_sites", "get", "includes_activation", "kind_of", "kinds", "label", "normalization_batch",
           "register", "unregister", "uses_batch_statistics"]
