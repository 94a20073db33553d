"""Engines that implement :class:`bot.engine.Engine`: local llama.cpp and an OpenAI-compatible HTTP one.

Only the composition root (:mod:`bot.main`) imports them; everything else sees the core's contract.
"""
