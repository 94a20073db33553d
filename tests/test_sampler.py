"""The local engine's sampler chain on the real model: cutting to the best ``last_n + 40`` before the
repetition penalty picks what the penalty over the whole vocabulary picks."""

from __future__ import annotations

import llama_cpp

from bot.bundled import bundled_model_path
from engine.llama import Batch, Context, Model, Sampler


def test_the_cut_before_the_penalty_picks_what_the_full_penalty_picks() -> None:
    path = bundled_model_path()
    assert path is not None
    model = Model(path)
    context = Context(model, n_ctx_seq=512, n_seq=1, n_batch=256, threads=2)
    batch = Batch(256)
    # A short window and a strong penalty, so the penalty decides many steps.
    ours = Sampler(model, temperature=0.0, top_p=1.0, seed=1, penalty=1.8, last_n=8)
    full = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(full, llama_cpp.llama_sampler_init_penalties(model.n_vocab, 8, 1.8, 0.0, 0.0))
    llama_cpp.llama_sampler_chain_add(full, llama_cpp.llama_sampler_init_greedy())
    plain = llama_cpp.llama_sampler_init_greedy()
    try:
        tokens = model.tokenize("one one one one one one one one one one", add_special=True)
        for i, token in enumerate(tokens):
            batch.add(token, i, 0, logits=i == len(tokens) - 1)
        assert context.decode(batch) == 0
        position, index, differs = len(tokens), len(tokens) - 1, 0
        for _ in range(40):
            mine = ours.sample(context, index)
            reference = int(llama_cpp.llama_sampler_sample(full, context.handle, index))
            differs += mine != int(llama_cpp.llama_sampler_sample(plain, context.handle, index))
            assert mine == reference
            batch.clear()
            index = batch.add(mine, position, 0, logits=True)
            position += 1
            assert context.decode(batch) == 0
        assert differs > 0  # the penalty changed the choice at least once, so the comparison meant something
    finally:
        ours.close()
        llama_cpp.llama_sampler_free(full)
        llama_cpp.llama_sampler_free(plain)
        batch.close()
        context.close()
        model.close()
