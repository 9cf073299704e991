"""rmserve-client: talk to an rmserve server (REST or gRPC) without torch or transformers.

    from rmserve_client import RewardClient
    with RewardClient("http://127.0.0.1:8000") as rm:        # "grpc://host:50051" for gRPC
        print(rm.score(prompt="What is shown?", images=["cat.png"], response="A cat.").reward)

Modules: ``client`` (RewardClient, AsyncRewardClient), ``types`` (results), ``exceptions`` (the
error tree), ``adapters`` (TRL ``reward_funcs``, OpenRLHF remote reward file, veRL ``compute_score``).
gRPC needs ``pip install 'rmserve-client[grpc]'``.
"""

__version__ = "0.1.0"

from rmserve_client._base import RetryPolicy  # noqa: E402
from rmserve_client.client import AsyncRewardClient, RewardClient  # noqa: E402
from rmserve_client.exceptions import (  # noqa: E402
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
    RMServeError,
    ServerError,
    TransportError,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from rmserve_client.types import (  # noqa: E402
    CompareResult,
    CritiqueChunk,
    CritiqueResult,
    Judgment,
    RankedResponse,
    RankResult,
    SafetyResult,
    ScoreResult,
    UploadResult,
    Voting,
)

__all__ = [
    "AsyncRewardClient",
    "CompareResult",
    "CritiqueChunk",
    "CritiqueResult",
    "DeadlineExceeded",
    "InvalidRequest",
    "Judgment",
    "Overloaded",
    "RMServeError",
    "RankResult",
    "RankedResponse",
    "RetryPolicy",
    "RewardClient",
    "SafetyResult",
    "ScoreResult",
    "ServerError",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "Unsupported",
    "UploadResult",
    "Voting",
]
