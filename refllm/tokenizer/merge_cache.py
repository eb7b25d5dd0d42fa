"""On-disk cache of the SentencePiece merges ``spm.derive_merges`` finds (~1 s for Gemma).

    key = cache_key(vocab)                  # sha256 of the vocabulary AND of the code that derives
    ids = load_merges(key, n_symbols)       # [n_merges, 2] int32, or None (absent, corrupt, ...)
    save_merges(key, ids)                   # best effort, atomic

Where: ``$REFLLM_CACHE_DIR/tokenizers/`` if set, else ``$XDG_CACHE_HOME/refllm/tokenizers/``
(``~/.cache/refllm/tokenizers/``); one file per key, ``<key>.npz``, ~4 MB for Gemma. The
.npz is a zip, whose CRC-32 per member makes a flipped bit an error rather than a wrong merge.

Never stale: the key hashes everything the merges depend on -- every token's text, every
score -- plus ``MERGES_FORMAT_VERSION`` and the source of ``spm.py``, so editing the
derivation (or a different GGUF with the same name) gets a new file, not an old answer.

Never in the way: a file that is missing, truncated, corrupt or of the wrong shape reads
as "no cache" (the caller derives again and rewrites it); a directory that cannot be
created or written (read-only home) just means nothing is saved. A write goes to a
temporary file that is renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from refllm.tokenizer.vocab import Vocab

MERGES_FORMAT_VERSION = 1  # bump when the meaning of the stored array changes
_SPM_SOURCE = Path(__file__).with_name("spm.py")


def cache_dir() -> Path | None:
    """The directory for tokenizer caches (may not exist yet); None if there is no home."""
    if os.environ.get("REFLLM_CACHE_DIR"):
        return Path(os.environ["REFLLM_CACHE_DIR"]).expanduser() / "tokenizers"
    try:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except (KeyError, RuntimeError):  # no HOME and no passwd entry
        return None
    return Path(base) / "refllm" / "tokenizers"


def cache_key(vocab: Vocab) -> str:
    """Hex sha256 of the vocabulary's tokens and scores and of the deriving code (~20 ms for Gemma)."""
    digest = hashlib.sha256(f"refllm-spm-merges-v{MERGES_FORMAT_VERSION}\0".encode())
    try:
        digest.update(_SPM_SOURCE.read_bytes())
    except OSError:  # installed without sources: the version constant alone has to do
        pass
    lengths = np.fromiter(map(len, vocab.tokens), dtype=np.int64, count=vocab.size)  # [n_vocab]
    digest.update(lengths.tobytes())  # with the lengths, "ab"+"c" and "a"+"bc" hash differently
    digest.update("".join(vocab.tokens).encode("utf-8", "surrogatepass"))
    digest.update(np.ascontiguousarray(vocab.scores, dtype=np.float32).tobytes())  # [n_vocab]
    return digest.hexdigest()


def load_merges(key: str, n_symbols: int) -> np.ndarray | None:
    """The cached [n_merges, 2] int32 symbol ids for ``key``, or None if there is no usable file."""
    directory = cache_dir()
    if directory is None:
        return None
    try:
        with np.load(directory / f"{key}.npz", allow_pickle=False) as stored:
            stored_key, merge_ids = str(stored["key"]), stored["merges"]  # reading checks the CRCs
    except Exception:  # absent, unreadable, truncated, not an .npz at all: derive instead
        return None
    valid = (stored_key == key and merge_ids.dtype == np.int32 and merge_ids.ndim == 2 and merge_ids.shape[1] == 2
             and (merge_ids.size == 0 or (merge_ids.min() >= 0 and merge_ids.max() < n_symbols)))
    return merge_ids if valid else None


def save_merges(key: str, merge_ids: np.ndarray) -> None:
    """Write the merges for ``key`` atomically; any failure leaves the cache as it was."""
    directory = cache_dir()
    if directory is None:
        return
    temp_path = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{key}.", suffix=".tmp", delete=False) as temp:
            temp_path = temp.name
            np.savez(temp, key=np.array(key), merges=np.ascontiguousarray(merge_ids, dtype=np.int32))
        os.replace(temp_path, directory / f"{key}.npz")  # atomic on POSIX and Windows
        temp_path = None
    except OSError:  # read-only home, full disk, ...: run without a cache
        pass
    finally:
        if temp_path is not None:
            try:
                os.unlink(temp_path)
            except OSError:
                pass
