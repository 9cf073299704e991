from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Output(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_UNSPECIFIED: _ClassVar[Output]
    OUTPUT_REWARD: _ClassVar[Output]
    OUTPUT_ATTRIBUTES: _ClassVar[Output]
    OUTPUT_SAFETY: _ClassVar[Output]
OUTPUT_UNSPECIFIED: Output
OUTPUT_REWARD: Output
OUTPUT_ATTRIBUTES: Output
OUTPUT_SAFETY: Output

class Image(_message.Message):
    __slots__ = ("data", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class Video(_message.Message):
    __slots__ = ("data", "frames", "fps", "max_frames")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    frames: Frames
    fps: float
    max_frames: int
    def __init__(self, data: _Optional[bytes] = ..., frames: _Optional[_Union[Frames, _Mapping]] = ..., fps: _Optional[float] = ..., max_frames: _Optional[int] = ...) -> None: ...

class Frames(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, frames: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class ContentPart(_message.Message):
    __slots__ = ("text", "image", "video")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: Image
    video: Video
    def __init__(self, text: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., video: _Optional[_Union[Video, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content", "parts", "name", "tool_call_id")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    parts: _containers.RepeatedCompositeFieldContainer[ContentPart]
    name: str
    tool_call_id: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., parts: _Optional[_Iterable[_Union[ContentPart, _Mapping]]] = ..., name: _Optional[str] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class ScoreItem(_message.Message):
    __slots__ = ("id", "prompt", "messages", "images", "response", "group", "truncate", "ground_truth", "voting", "return_judgment")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    RETURN_FIELD_NUMBER: _ClassVar[int]
    GROUND_TRUTH_FIELD_NUMBER: _ClassVar[int]
    VOTING_FIELD_NUMBER: _ClassVar[int]
    RETURN_JUDGMENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    response: str
    group: str
    truncate: bool
    ground_truth: str
    voting: Voting
    return_judgment: bool
    def __init__(self, id: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., response: _Optional[str] = ..., group: _Optional[str] = ..., truncate: _Optional[bool] = ..., ground_truth: _Optional[str] = ..., voting: _Optional[_Union[Voting, _Mapping]] = ..., return_judgment: _Optional[bool] = ..., **kwargs) -> None: ...

class Error(_message.Message):
    __slots__ = ("message", "type", "param", "code", "retry_after_s")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    message: str
    type: str
    param: str
    code: str
    retry_after_s: float
    def __init__(self, message: _Optional[str] = ..., type: _Optional[str] = ..., param: _Optional[str] = ..., code: _Optional[str] = ..., retry_after_s: _Optional[float] = ...) -> None: ...

class ScoreResult(_message.Message):
    __slots__ = ("id", "reward", "attributes", "safety", "raw_reward", "error", "verified", "flagged", "flagged_categories", "safety_action", "model_rewards", "judgments")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SafetyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ModelRewardsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SAFETY_FIELD_NUMBER: _ClassVar[int]
    RAW_REWARD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SAFETY_ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_REWARDS_FIELD_NUMBER: _ClassVar[int]
    JUDGMENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    reward: float
    attributes: _containers.ScalarMap[str, float]
    safety: _containers.ScalarMap[str, float]
    raw_reward: float
    error: Error
    verified: bool
    flagged: bool
    flagged_categories: _containers.RepeatedScalarFieldContainer[str]
    safety_action: str
    model_rewards: _containers.ScalarMap[str, float]
    judgments: _containers.RepeatedCompositeFieldContainer[Judgment]
    def __init__(self, id: _Optional[str] = ..., reward: _Optional[float] = ..., attributes: _Optional[_Mapping[str, float]] = ..., safety: _Optional[_Mapping[str, float]] = ..., raw_reward: _Optional[float] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., verified: _Optional[bool] = ..., flagged: _Optional[bool] = ..., flagged_categories: _Optional[_Iterable[str]] = ..., safety_action: _Optional[str] = ..., model_rewards: _Optional[_Mapping[str, float]] = ..., judgments: _Optional[_Iterable[_Union[Judgment, _Mapping]]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("items", "prompt_tokens", "total_tokens")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    items: int
    prompt_tokens: int
    total_tokens: int
    def __init__(self, items: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Verifier(_message.Message):
    __slots__ = ("name", "tolerance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    tolerance: float
    def __init__(self, name: _Optional[str] = ..., tolerance: _Optional[float] = ...) -> None: ...

class Voting(_message.Message):
    __slots__ = ("k", "aggregate", "seed", "temperature")
    K_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    k: int
    aggregate: str
    seed: int
    temperature: float
    def __init__(self, k: _Optional[int] = ..., aggregate: _Optional[str] = ..., seed: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class Judgment(_message.Message):
    __slots__ = ("text", "answer", "reward", "source", "about")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ABOUT_FIELD_NUMBER: _ClassVar[int]
    text: str
    answer: str
    reward: float
    source: str
    about: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, text: _Optional[str] = ..., answer: _Optional[str] = ..., reward: _Optional[float] = ..., source: _Optional[str] = ..., about: _Optional[_Iterable[int]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model", "items", "verifier", "on_reject", "voting", "return_judgment")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RETURN_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    ON_REJECT_FIELD_NUMBER: _ClassVar[int]
    VOTING_FIELD_NUMBER: _ClassVar[int]
    RETURN_JUDGMENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[ScoreItem]
    verifier: Verifier
    on_reject: str
    voting: Voting
    return_judgment: bool
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoreItem, _Mapping]]] = ..., verifier: _Optional[_Union[Verifier, _Mapping]] = ..., on_reject: _Optional[str] = ..., voting: _Optional[_Union[Voting, _Mapping]] = ..., return_judgment: _Optional[bool] = ..., **kwargs) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("items", "model", "usage")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoreResult]
    model: str
    usage: Usage
    def __init__(self, items: _Optional[_Iterable[_Union[ScoreResult, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("model", "prompt", "messages", "images", "response_a", "response_b", "beta0", "w", "k", "truncate", "apply_safety", "voting", "return_judgment")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    BETA0_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    APPLY_SAFETY_FIELD_NUMBER: _ClassVar[int]
    VOTING_FIELD_NUMBER: _ClassVar[int]
    RETURN_JUDGMENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    response_a: str
    response_b: str
    beta0: float
    w: float
    k: float
    truncate: bool
    apply_safety: bool
    voting: Voting
    return_judgment: bool
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ..., beta0: _Optional[float] = ..., w: _Optional[float] = ..., k: _Optional[float] = ..., truncate: _Optional[bool] = ..., apply_safety: _Optional[bool] = ..., voting: _Optional[_Union[Voting, _Mapping]] = ..., return_judgment: _Optional[bool] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("reward_a", "reward_b", "prob_a_better", "margin", "beta", "model", "usage", "prob_a_better_ab", "prob_a_better_ba", "judgments")
    REWARD_A_FIELD_NUMBER: _ClassVar[int]
    REWARD_B_FIELD_NUMBER: _ClassVar[int]
    PROB_A_BETTER_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PROB_A_BETTER_AB_FIELD_NUMBER: _ClassVar[int]
    PROB_A_BETTER_BA_FIELD_NUMBER: _ClassVar[int]
    JUDGMENTS_FIELD_NUMBER: _ClassVar[int]
    reward_a: float
    reward_b: float
    prob_a_better: float
    margin: float
    beta: float
    model: str
    usage: Usage
    prob_a_better_ab: float
    prob_a_better_ba: float
    judgments: _containers.RepeatedCompositeFieldContainer[Judgment]
    def __init__(self, reward_a: _Optional[float] = ..., reward_b: _Optional[float] = ..., prob_a_better: _Optional[float] = ..., margin: _Optional[float] = ..., beta: _Optional[float] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., prob_a_better_ab: _Optional[float] = ..., prob_a_better_ba: _Optional[float] = ..., judgments: _Optional[_Iterable[_Union[Judgment, _Mapping]]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("model", "prompt", "messages", "images", "responses", "top_k", "min_margin", "truncate", "apply_safety", "voting", "return_judgment")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    APPLY_SAFETY_FIELD_NUMBER: _ClassVar[int]
    VOTING_FIELD_NUMBER: _ClassVar[int]
    RETURN_JUDGMENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    responses: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    min_margin: float
    truncate: bool
    apply_safety: bool
    voting: Voting
    return_judgment: bool
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., responses: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., min_margin: _Optional[float] = ..., truncate: _Optional[bool] = ..., apply_safety: _Optional[bool] = ..., voting: _Optional[_Union[Voting, _Mapping]] = ..., return_judgment: _Optional[bool] = ...) -> None: ...

class Ranked(_message.Message):
    __slots__ = ("index", "reward")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    index: int
    reward: float
    def __init__(self, index: _Optional[int] = ..., reward: _Optional[float] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("ranking", "chosen_index", "rejected_index", "margin", "model", "usage", "judgments")
    RANKING_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_INDEX_FIELD_NUMBER: _ClassVar[int]
    REJECTED_INDEX_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    JUDGMENTS_FIELD_NUMBER: _ClassVar[int]
    ranking: _containers.RepeatedCompositeFieldContainer[Ranked]
    chosen_index: int
    rejected_index: int
    margin: float
    model: str
    usage: Usage
    judgments: _containers.RepeatedCompositeFieldContainer[Judgment]
    def __init__(self, ranking: _Optional[_Iterable[_Union[Ranked, _Mapping]]] = ..., chosen_index: _Optional[int] = ..., rejected_index: _Optional[int] = ..., margin: _Optional[float] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., judgments: _Optional[_Iterable[_Union[Judgment, _Mapping]]] = ...) -> None: ...

class CritiqueRequest(_message.Message):
    __slots__ = ("model", "prompt", "messages", "images", "response", "max_new_tokens", "truncate")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    response: str
    max_new_tokens: int
    truncate: bool
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., response: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., truncate: _Optional[bool] = ...) -> None: ...

class CritiqueUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class CritiqueChunk(_message.Message):
    __slots__ = ("delta", "done", "critique", "reward", "model", "usage")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    delta: str
    done: bool
    critique: str
    reward: float
    model: str
    usage: CritiqueUsage
    def __init__(self, delta: _Optional[str] = ..., done: _Optional[bool] = ..., critique: _Optional[str] = ..., reward: _Optional[float] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[CritiqueUsage, _Mapping]] = ...) -> None: ...

class SafetyItem(_message.Message):
    __slots__ = ("prompt", "messages", "images", "response", "truncate")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    response: str
    truncate: bool
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., response: _Optional[str] = ..., truncate: _Optional[bool] = ...) -> None: ...

class SafetyRequest(_message.Message):
    __slots__ = ("model", "items")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[SafetyItem]
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[SafetyItem, _Mapping]]] = ...) -> None: ...

class SafetyResult(_message.Message):
    __slots__ = ("categories", "flagged", "flagged_categories", "action", "reward", "raw_reward")
    class CategoriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    RAW_REWARD_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.ScalarMap[str, float]
    flagged: bool
    flagged_categories: _containers.RepeatedScalarFieldContainer[str]
    action: str
    reward: float
    raw_reward: float
    def __init__(self, categories: _Optional[_Mapping[str, float]] = ..., flagged: _Optional[bool] = ..., flagged_categories: _Optional[_Iterable[str]] = ..., action: _Optional[str] = ..., reward: _Optional[float] = ..., raw_reward: _Optional[float] = ...) -> None: ...

class SafetyResponse(_message.Message):
    __slots__ = ("items", "taxonomy", "model", "usage")
    class TaxonomyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TAXONOMY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SafetyResult]
    taxonomy: _containers.ScalarMap[str, str]
    model: str
    usage: Usage
    def __init__(self, items: _Optional[_Iterable[_Union[SafetyResult, _Mapping]]] = ..., taxonomy: _Optional[_Mapping[str, str]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class UploadImageRequest(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class UploadImageResponse(_message.Message):
    __slots__ = ("sha256", "width", "height", "bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    width: int
    height: int
    bytes: int
    def __init__(self, sha256: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...
