"""Thin typed wrappers over llama-cpp-python's low-level bindings: the only module that imports ``llama_cpp``.

:class:`Model` is the loaded GGUF (vocabulary, chat template, tokenizer; safe to use from any thread).
:class:`Context` is one llama.cpp context with ``n_seq`` independent sequences, each with its own KV
stream (``kv_unified=False``), so a sequence's room is exactly ``n_ctx_seq``. A context, its
:class:`Batch` and every :class:`Sampler` belong to the one thread that decodes.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bot.engine import ChatMessage, Role

logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load chatter

VERSION = str(llama_cpp.__version__)
TOP_K = 40
"""Candidates a sampled (not greedy) token is drawn from, before top-p."""


@functools.cache
def _init_backend() -> None:
    llama_cpp.llama_backend_init()


class LlamaError(RuntimeError):
    """llama.cpp refused: a model that does not load, a context that cannot be created."""


class Model:
    """A GGUF file loaded once: vocabulary, chat template and tokenizer."""

    def __init__(self, path: Path) -> None:
        _init_backend()
        self.path = path
        params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise LlamaError(f"llama.cpp cannot load {str(path)!r}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._model))
        template = self.meta("tokenizer.chat_template")
        if not template:
            self.close()
            raise LlamaError("the model has no chat template (tokenizer.chat_template) in its GGUF metadata")
        eos, bos = llama_cpp.llama_vocab_eos(self._vocab), llama_cpp.llama_vocab_bos(self._vocab)
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.piece(eos, special=True).decode("utf-8", "ignore") if eos >= 0 else "",
            bos_token=self.piece(bos, special=True).decode("utf-8", "ignore") if bos >= 0 else "",
            stop_token_ids=[eos],
        )

    @property
    def handle(self) -> object:
        return self._model

    def close(self) -> None:
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def meta(self, key: str) -> str | None:
        size = 1024
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    @functools.cached_property
    def turn_suffix(self) -> tuple[int, ...]:
        """The tokens the chat template puts between an assistant reply's text and the next user
        message's text (for ChatML: ``<|im_end|>``, ``\\n``, ``<|im_start|>``, ``user``, ``\\n``).

        Found by rendering a probe conversation and kept only if it tokenizes the same inside the
        whole prompt as on its own; empty otherwise (or for a template that names no turns).
        """
        reply, following = "Parley-probe-reply", "Parley-probe-next"
        probe = [
            ChatMessage("system", "Parley-probe-system"),
            ChatMessage("user", "Parley-probe-user"),
            ChatMessage("assistant", reply),
            ChatMessage("user", following),
        ]
        formatted = self._formatter(messages=[{"role": m.role, "content": m.content} for m in probe])  # type: ignore[misc]
        text, add = formatted.prompt, not formatted.added_special
        end, start = text.find(reply), text.find(following)
        if end < 0 or start < end:
            return ()
        end += len(reply)
        head = self.tokenize(text[:end], add_special=add, parse_special=True)
        suffix = self.tokenize(text[end:start], parse_special=True)
        whole = self.tokenize(text, add_special=add, parse_special=True)
        if not suffix or whole[: len(head) + len(suffix)] != head + suffix:
            return ()
        return tuple(suffix)

    @functools.cached_property
    def message_tokens(self) -> dict[str, int]:
        """Tokens the chat template adds around one history message's text, by role (ChatML: 5 for
        ``user``, 6 for ``assistant``, whose name is two tokens), found by rendering probes. A role
        that a template refuses in the probe (one that insists on alternating turns) is left out."""
        text = "Parley probe text."
        system = ChatMessage("system", "Parley-probe-system")
        before: dict[Role, list[ChatMessage]] = {
            "user": [system],
            "assistant": [system, ChatMessage("user", "Parley-probe-user")],
        }
        found: dict[str, int] = {}
        for role, head in before.items():
            try:
                added = len(self.prompt([*head, ChatMessage(role, text)])) - len(self.prompt(head))
            except jinja2.TemplateError:
                continue
            found[role] = max(0, added - len(self.tokenize(text)))
        return found

    def prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The chat template applied to ``messages`` (with the assistant's opening), as tokens."""
        formatted = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])  # type: ignore[misc]
        return self.tokenize(formatted.prompt, add_special=not formatted.added_special, parse_special=True)

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token (a UTF-8 character may be split over several tokens)."""
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))


FLASH_ATTN = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


class Context:
    """One context holding ``n_seq`` sequences of ``n_ctx_seq`` tokens each."""

    def __init__(
        self, model: Model, *, n_ctx_seq: int, n_seq: int, n_batch: int, threads: int, flash_attn: str = "auto"
    ) -> None:
        """``flash_attn``: ``auto`` (llama.cpp decides: on where the backend has it), ``on`` or ``off``."""
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx_seq * n_seq
        params.n_seq_max = n_seq
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = False
        params.flash_attn_type = FLASH_ATTN[flash_attn]
        params.no_perf = True
        self.n_ctx_seq = n_ctx_seq
        self.config: dict[str, int | bool | str] = {
            "n_ctx_seq": n_ctx_seq,
            "n_seq": n_seq,
            "kv_unified": False,
            "type_k": int(params.type_k),
            "type_v": int(params.type_v),
            "flash_attn": flash_attn,  # the V cache is laid out differently with and without it
        }
        self._ctx = llama_cpp.llama_init_from_model(model.handle, params)
        if not self._ctx:
            raise LlamaError(f"llama.cpp cannot create a context of {n_seq} x {n_ctx_seq} tokens")
        self._mem = llama_cpp.llama_get_memory(self._ctx)

    @property
    def handle(self) -> object:
        return self._ctx

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def decode(self, batch: Batch) -> int:
        """0 when done; see ``llama_decode`` for the rest (1: no KV room, 2: aborted, < 0: error)."""
        return int(llama_cpp.llama_decode(self._ctx, batch.raw))

    def truncate(self, seq: int, keep: int) -> None:
        """Drop sequence ``seq``'s KV from position ``keep`` on (0: all of it)."""
        llama_cpp.llama_memory_seq_rm(self._mem, seq, keep, -1)

    def save(self, seq: int) -> bytes:
        size = int(llama_cpp.llama_state_seq_get_size(self._ctx, seq))
        buf = (ctypes.c_uint8 * size)()
        n = int(llama_cpp.llama_state_seq_get_data(self._ctx, buf, size, seq))
        return ctypes.string_at(buf, n)

    def load(self, seq: int, state: bytes) -> bool:
        """Restore a state from :meth:`save` into ``seq``; ``False`` (and ``seq`` emptied) if refused."""
        self.truncate(seq, 0)
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if int(llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(state), seq)) == 0:
            self.truncate(seq, 0)
            return False
        return True


class Batch:
    """A reusable ``llama_batch`` of up to ``capacity`` tokens, one sequence id each."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.raw.n_tokens = 0

    def __len__(self) -> int:
        return int(self.raw.n_tokens)

    def clear(self) -> None:
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq: int, *, logits: bool) -> int:
        """Append one token; returns its index, which :meth:`Sampler.sample` takes."""
        i = int(self.raw.n_tokens)
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = 1
        raw.seq_id[i][0] = seq
        raw.logits[i] = logits
        raw.n_tokens = i + 1
        return i

    def close(self) -> None:
        if self.raw is not None:
            llama_cpp.llama_batch_free(self.raw)
            self.raw = None


class Sampler:
    """One sequence's sampler chain: repetition penalty, then greedy, or top-k/top-p/temperature/dist."""

    def __init__(
        self, model: Model, *, temperature: float, top_p: float, seed: int | None, penalty: float, last_n: int
    ) -> None:
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        chain = self._chain

        def add(sampler: object) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        if penalty != 1.0 and last_n != 0:
            # The penalty only lowers the scores of the (at most last_n) tokens in its window, so any
            # token that can win afterwards, greedy or among the top 40 below, is among the best
            # last_n + TOP_K before it: cutting to those first gives the same result and spares a
            # pass over the whole vocabulary (0.24 -> 0.07 ms a token here).
            add(llama_cpp.llama_sampler_init_top_k(last_n + TOP_K))
            add(llama_cpp.llama_sampler_init_penalties(model.n_vocab, last_n, penalty, 0.0, 0.0))
        if temperature <= 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        add(llama_cpp.llama_sampler_init_top_k(TOP_K))
        add(llama_cpp.llama_sampler_init_top_p(top_p, 1))
        add(llama_cpp.llama_sampler_init_temp(temperature))
        add(llama_cpp.llama_sampler_init_dist(llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF))

    def sample(self, context: Context, index: int) -> int:
        """Sample (and accept) the next token from the logits at batch ``index``."""
        return int(llama_cpp.llama_sampler_sample(self._chain, context.handle, index))

    def close(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
