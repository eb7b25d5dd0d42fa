"""Text layer: tokenizers and chat templates read straight from the GGUF, exact against llama.cpp.

    from refllm.tokenizer import tokenizer_from_gguf
    tok = tokenizer_from_gguf(gguf_file)
    tok.encode("Hi", add_special=True, parse_special=False); tok.decode(ids)
    tok.bos_id, tok.eos_id, tok.eog_ids, tok.add_bos, tok.vocab_size, tok.token_text(id)
    tok.decoder().push(id) -> newly completed text           (streaming)

    from refllm.tokenizer.chat import chat_template_for
    prompt = chat_template_for(gguf_file, tok).render(messages, tools=None, add_generation_prompt=True)
    ids = tok.encode_chat(prompt, [m["content"] for m in messages])   # markers typed by users stay text

Modules: vocab (GGUF metadata) -> specials (split on special tokens) -> bpe (gpt2 byte-level)
/ spm (SentencePiece-style, llama.cpp's merge loop) -> tokenizer (encode/decode) ; chat (Jinja templates, sandboxed)
-> go_template (Ollama Modelfile TEMPLATE).

Every id is checked against llama.cpp (golden/tokens/, written by tools/make_golden.py).
"""

from refllm.tokenizer.tokenizer import IncrementalDecoder, Tokenizer, tokenizer_from_gguf
from refllm.tokenizer.vocab import TokenType, Vocab, vocab_from_gguf

__all__ = ["IncrementalDecoder", "Tokenizer", "TokenType", "Vocab", "tokenizer_from_gguf", "vocab_from_gguf"]
