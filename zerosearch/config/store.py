"""Registers the structured config with Hydra's ConfigStore, and composes configs outside Hydra's CLI."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from zerosearch.config.schema import ZeroSearchConfig

from zerosearch.utils import paths

# the configs ship inside the package (package data), so an installed package composes them too
CONFIG_DIR = str(paths.CONFIG_DIR)
SCHEMA_NAME = "zerosearch_schema"


def register_configs() -> None:
    """Make the schema available as the first entry of configs/config.yaml's defaults list."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=ZeroSearchConfig)


def compose_config(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose configs/<config_name>.yaml with overrides, as the CLI would (for scripts and tests)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


def to_structured(cfg: DictConfig) -> ZeroSearchConfig:
    """The typed dataclass instance of a composed config (interpolations resolved)."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, ZeroSearchConfig), type(obj)
    return obj
