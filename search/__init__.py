"""Search: answer text, video and similar-clip queries over an `indexer.Store`."""
from .engine import (CHANNELS, GROUPS, MAX_K, MAX_OFFSET, MODES, Engine, EngineConfig, Hit, QueryError, Reading,
                     StageTimes, UnknownId)
from .fusion import reciprocal_rank_fusion
from .reading import QueryReader, Substitution

__all__ = ["Engine", "EngineConfig", "Hit", "QueryError", "Reading", "UnknownId", "CHANNELS", "MODES", "GROUPS",
           "MAX_K", "MAX_OFFSET", "reciprocal_rank_fusion", "QueryReader", "Substitution",
           "StageTimes"]
