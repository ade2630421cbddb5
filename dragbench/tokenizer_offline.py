"""A CLIP tokenizer built offline: byte-level vocabulary, no merges (one token per character).

Same layout as the tokenizer of the official-ref tiny pipeline ($DRAGBENCH_SHARED_DATA/official-ref/README.md):
id 0 = <|startoftext|>, id 1 = <|endoftext|> (also pad and unk), ids 2..257 = the 256 byte symbols of
`bytes_to_unicode()` in its order, ids 258..513 = the same symbols with the `</w>` word-end suffix.
"""

from __future__ import annotations

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

MODEL_MAX_LENGTH = 77  # CLIP's context length, as in SD-1.5


def byte_level_vocab() -> dict[str, int]:
    """The 514-entry vocabulary described above."""
    symbols = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    return vocab


def build_offline_tokenizer() -> CLIPTokenizer:
    """Build the tokenizer in memory (no files, no network, no cache)."""
    return CLIPTokenizer(
        vocab=byte_level_vocab(),
        merges=[],
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=MODEL_MAX_LENGTH,
    )
