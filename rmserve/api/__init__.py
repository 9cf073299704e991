"""Service layer: wire types and service methods, shared by every transport (no HTTP in here).

``ScoreService`` is the facade (api/service.py); every scoring endpoint runs one pipeline (api/pipeline.py)
over a narrow ``ServingContext`` (api/context.py).
"""

from rmserve.api.compat import (
    ClassifyRequest,
    ClassifyResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    GetRewardRequest,
    GetRewardResponse,
    PoolingRequest,
    PoolingResponse,
)
from rmserve.api.context import ServiceLimits, ServingContext
from rmserve.api.critique import CritiqueChunk, CritiqueRequest, CritiqueResponse, CritiqueUsage
from rmserve.api.images import DecodedImage, ImageCache, ImageLimits, ImageLoader
from rmserve.api.models import EnsembleSpec, Member, ModelSet, Selection
from rmserve.api.pairs import CompareRequest, CompareResponse, Ranked, RankRequest, RankResponse
from rmserve.api.protocol import (
    Conversation,
    ModelCard,
    ModelList,
    ScoreItemIn,
    ScoreItemOut,
    ScoreRequest,
    ScoreResponse,
    Usage,
    VerifierSpec,
)
from rmserve.api.safety import SafetyItemIn, SafetyItemOut, SafetyRequest, SafetyResponse
from rmserve.api.score import ScoreResult, Timings
from rmserve.api.service import ScoreService
from rmserve.api.slime import SlimeRewardRequest, SlimeRewardResponse
from rmserve.api.uploads import ImageUploadRequest, ImageUploadResponse

__all__ = [
    "ClassifyRequest",
    "ClassifyResponse",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "CompareRequest",
    "CompareResponse",
    "Conversation",
    "CritiqueChunk",
    "CritiqueRequest",
    "CritiqueResponse",
    "CritiqueUsage",
    "DecodedImage",
    "EnsembleSpec",
    "GetRewardRequest",
    "GetRewardResponse",
    "ImageCache",
    "ImageLimits",
    "ImageLoader",
    "ImageUploadRequest",
    "ImageUploadResponse",
    "Member",
    "ModelCard",
    "ModelList",
    "ModelSet",
    "PoolingRequest",
    "PoolingResponse",
    "RankRequest",
    "RankResponse",
    "Ranked",
    "SafetyItemIn",
    "SafetyItemOut",
    "SafetyRequest",
    "SafetyResponse",
    "ScoreItemIn",
    "ScoreItemOut",
    "ScoreRequest",
    "ScoreResponse",
    "ScoreResult",
    "ScoreService",
    "Selection",
    "SlimeRewardRequest",
    "SlimeRewardResponse",
    "ServiceLimits",
    "ServingContext",
    "Timings",
    "Usage",
    "VerifierSpec",
]
