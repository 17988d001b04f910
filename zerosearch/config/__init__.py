"""Typed configuration: dataclasses per section, Hydra registration, start-up validation."""

from zerosearch.config.schema import (
    ActorConfig,
    AlgorithmConfig,
    CriticConfig,
    CurriculumConfig,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    RefConfig,
    RetrievalConfig,
    RewardConfig,
    RolloutConfig,
    SearchConfig,
    SimulationConfig,
    TrainerConfig,
    WebSearchConfig,
    ZeroSearchConfig,
)
from zerosearch.config.validate import ConfigError, check_world_size, validate_config

__all__ = [
    "ActorConfig", "AlgorithmConfig", "ConfigError", "CriticConfig", "CurriculumConfig", "DataConfig",
    "LoggingConfig", "ModelConfig", "RefConfig", "RetrievalConfig", "RewardConfig", "RolloutConfig",
    "SearchConfig", "SimulationConfig", "TrainerConfig", "WebSearchConfig", "ZeroSearchConfig",
    "check_world_size", "validate_config",
]
