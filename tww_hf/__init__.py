"""tww_hf: Think While Watching (arXiv 2603.11896) on Qwen3-VL as a transformers plug-in.

`import tww_hf` registers the TWW classes with AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor and
AutoVideoProcessor, and the `tww_adaptive` attention with transformers' attention and mask interfaces.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoVideoProcessor,
)
from transformers.utils import is_torchvision_available

from .demo import default_model_path
from .modeling.attention_tww import ROUTER as attention_router
from .modeling.attention_tww import backend_availability, set_attention_backend
from .modeling.cache_tww import SourceSnapshot, StreamingDynamicCache
from .modeling.configuration_tww import TWWConfig
from .modeling.engine_tww import DecodeSettings, StreamEngine, StreamSession
from .modeling.modeling_tww import TWWForConditionalGeneration
from .modeling.processing_tww import SourceUnit, TWWProcessor, TWWVideoProcessor
from .modeling.sources_tww import (
    CountSegmenter,
    FixedSegmenter,
    Question,
    QuestionAlignedSegmenter,
    SceneChangeSegmenter,
    Segment,
)
from .modeling.streaming_tww import (
    build_streaming_mask,
    build_streaming_mask_batch,
    streaming_mask_function,
    streaming_position_ids,
)


__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(TWWConfig.model_type, TWWConfig, exist_ok=True)
    AutoModel.register(TWWConfig, TWWForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(TWWConfig, TWWForConditionalGeneration, exist_ok=True)
    if is_torchvision_available():  # without torchvision AutoVideoProcessor is a dummy that raises on any use
        AutoVideoProcessor.register(TWWConfig, TWWVideoProcessor, exist_ok=True)
    AutoProcessor.register(TWWConfig, TWWProcessor, exist_ok=True)


_register()

__all__ = [
    "default_model_path",
    "CountSegmenter",
    "DecodeSettings",
    "FixedSegmenter",
    "Question",
    "QuestionAlignedSegmenter",
    "SceneChangeSegmenter",
    "Segment",
    "StreamEngine",
    "StreamSession",
    "SourceSnapshot",
    "SourceUnit",
    "StreamingDynamicCache",
    "TWWConfig",
    "TWWForConditionalGeneration",
    "TWWProcessor",
    "TWWVideoProcessor",
    "attention_router",
    "backend_availability",
    "build_streaming_mask",
    "build_streaming_mask_batch",
    "set_attention_backend",
    "streaming_mask_function",
    "streaming_position_ids",
]
