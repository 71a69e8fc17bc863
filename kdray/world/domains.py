"""The tiny world's three domains (math, commonsense, instruction following): which config
describes each and which generator draws its splits."""

from __future__ import annotations

from kdray.errors import ConfigError
from kdray.world import synthetic_commonsense, synthetic_instruction, synthetic_math
from kdray.world.synthetic_commonsense import CommonsenseWorldConfig
from kdray.world.synthetic_instruction import InstructionWorldConfig
from kdray.world.synthetic_math import MathWorldConfig

DOMAINS = ("math", "commonsense", "instruction")
WorldConfig = MathWorldConfig | CommonsenseWorldConfig | InstructionWorldConfig
_GENERATORS = {
    MathWorldConfig: ("math", synthetic_math.generate_splits),
    CommonsenseWorldConfig: ("commonsense", synthetic_commonsense.generate_splits),
    InstructionWorldConfig: ("instruction", synthetic_instruction.generate_splits),
}


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}: choose one of {', '.join(DOMAINS)}")
    return domain


def domain_of(config: WorldConfig) -> str:
    return _GENERATORS[type(config)][0]


def generate_splits(config: WorldConfig) -> dict[str, list[dict[str, str]]]:
    """Test, validation and train records (LLM-Adapters form plus a `task` field)."""
    return _GENERATORS[type(config)][1](config)
