"""Language model engines: one base, a local llama.cpp one and an OpenAI-compatible HTTP one."""

from engine.base import ChatMessage, Engine, GenerationParams, Reply, Usage

__all__ = ["ChatMessage", "Engine", "GenerationParams", "Reply", "Usage"]
