"""Build the configured engine; backends are imported only when chosen."""

from __future__ import annotations

from bot.settings import EngineSettings
from engine.base import Engine


def create_engine(settings: EngineSettings) -> Engine:
    if settings.backend == "openai":
        from engine.openai import OpenAIEngine, OpenAIEngineConfig

        return OpenAIEngine(
            OpenAIEngineConfig(
                base_url=settings.base_url,
                model=settings.model,
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                n_ctx=settings.n_ctx,
                concurrency=settings.concurrency,
                queue_timeout=settings.queue_timeout,
            )
        )
    from engine.local import LocalEngine, LocalEngineConfig

    assert settings.model_path is not None  # filled in by EngineSettings validation
    return LocalEngine(
        LocalEngineConfig(
            model_path=settings.model_path,
            n_ctx=settings.n_ctx,
            threads=settings.threads,
            concurrency=settings.concurrency,
            queue_timeout=settings.queue_timeout,
            seed=settings.seed,
        )
    )
