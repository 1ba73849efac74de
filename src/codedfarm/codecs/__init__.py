"""Linear codes for coded computing: pure numerics (numpy/scipy; torch tensors accepted).

>>> from codedfarm.codecs import make_codec
>>> codec = make_codec("spline", k=8, n=24, lam_enc=1e-6, lam_dec=1e-4)
>>> coded = codec.encode(x)            # (k, *in_shape) -> (n, *in_shape)
>>> y_hat = codec.decode(y, workers)   # (m, *out_shape) -> (k, *out_shape)

This package never imports Celery, Redis or torch (a torch tensor passed in is handled
with the torch that is already loaded).
"""

from codedfarm.codecs.base import Codec, Decoded
from codedfarm.codecs.berrut import BerrutCodec, berrut_matrix
from codedfarm.codecs.lagrange import LagrangeCodec
from codedfarm.codecs.mds import MDSCodec
from codedfarm.codecs.parm import ParmCodec
from codedfarm.codecs.plan import DEFAULT_CODEC, CodecPlan, plan_codec
from codedfarm.codecs.points import data_points, worker_points
from codedfarm.codecs.registry import available_codecs, make_codec, parse_codec_spec
from codedfarm.codecs.replication import ReplicationCodec, UncodedCodec
from codedfarm.codecs.smoothing import smoothing_spline_matrix
from codedfarm.codecs.spline import LetccCodec, SplineCodec, letcc_lambdas

__all__ = [
    "DEFAULT_CODEC",
    "BerrutCodec",
    "Codec",
    "CodecPlan",
    "Decoded",
    "LagrangeCodec",
    "LetccCodec",
    "MDSCodec",
    "ParmCodec",
    "ReplicationCodec",
    "SplineCodec",
    "UncodedCodec",
    "available_codecs",
    "berrut_matrix",
    "data_points",
    "letcc_lambdas",
    "make_codec",
    "parse_codec_spec",
    "plan_codec",
    "smoothing_spline_matrix",
    "worker_points",
]
