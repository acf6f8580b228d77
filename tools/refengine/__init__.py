# SPDX-License-Identifier: MIT
"""refengine: a reference inference engine that drives KV connectors the way vLLM V1 does.

See README.md in this directory for the model, the paged cache, the
scheduler, and the exact sequence of connector calls.
"""

from .engine import Completion, RefEngine, load_model
from .model import PRESETS, LlamaModel, ModelSpec

__all__ = ["Completion", "LlamaModel", "ModelSpec", "PRESETS", "RefEngine", "load_model"]
