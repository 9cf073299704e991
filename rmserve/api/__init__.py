"""Service layer: wire types and service methods, shared by every transport (no HTTP in here)."""

from rmserve.api.images import DecodedImage, ImageCache, ImageLimits, ImageLoader
from rmserve.api.protocol import ScoreItemIn, ScoreItemOut, ScoreRequest, ScoreResponse
from rmserve.api.service import ScoreResult, ScoreService, ServiceLimits, Timings

__all__ = [
    "DecodedImage",
    "ImageCache",
    "ImageLimits",
    "ImageLoader",
    "ScoreItemIn",
    "ScoreItemOut",
    "ScoreRequest",
    "ScoreResponse",
    "ScoreResult",
    "ScoreService",
    "ServiceLimits",
    "Timings",
]
