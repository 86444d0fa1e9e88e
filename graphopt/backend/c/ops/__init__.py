"""C emitters, one module per op family. Importing this package registers all of them.

To add an op: write `emit_<op>(k: Kernel)` in the module of its family (or a new module listed
here) and decorate it with `@register_op("OpType", dtypes=...)`; see docs/BACKEND.md.
"""
from graphopt.backend.c.ops import (  # noqa: F401  (imported for their registrations)
    attention,
    conv,
    conv_blocked,
    einsum,
    elementwise,
    gemm,
    generators,
    im2col_gather,
    indexing,
    linalg,
    loss,
    movement,
    norm,
    pool,
    qlinear,
    quantize,
    recurrent,
    reduce,
    resize,
    sample,
    softmax,
    sort,
    spectral,
    winograd,
)
