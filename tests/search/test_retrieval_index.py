"""The local index: parsing, build, reload from disk, stale rebuild; the in-process RetrievalEngine."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from zerosearch.search.index import BM25Index, default_index_dir, index_status, open_index, parse_contents
from zerosearch.search.retrieval import RemoteRetrievalEngine, RetrievalEngine, retrieval_engine_from_config
from zerosearch.search.types import Document, SearchRequest
from zerosearch.utils.optional import MissingDependencyError, is_available

ROWS = [
    ("d0", '"Paris"\nParis is the capital and most populous city of France, on the river Seine.'),
    ("d1", '"Moby-Dick"\nMoby-Dick is an 1851 novel by American writer Herman Melville about a whale.'),
    ("d2", '"Nile"\nThe Nile is a major north-flowing river in northeastern Africa.'),
    ("d3", "Mount Everest\nEverest is Earth's highest mountain above sea level, in the Himalayas."),
    ("d4", '"Python (programming language)"\nPython is a high-level programming language created by Guido van Rossum.'),
    ("d5", '"Tokyo"\nTokyo is the capital of Japan and its most populous prefecture.'),
]


def write_corpus(path: Path, rows=ROWS) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, c in rows:
            f.write(json.dumps({"id": i, "contents": c, "extra": [1, 2]}) + "\n")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl")


def builds(caplog) -> int:
    return sum("building bm25 index" in r.getMessage() for r in caplog.records)


def test_parse_contents_strips_quoted_title():
    assert parse_contents('"Paris"\nParis is a city.') == ("Paris", "Paris is a city.")
    assert parse_contents("Mount Everest\nA mountain.\nSecond line.") == ("Mount Everest", "A mountain.\nSecond line.")
    assert parse_contents("no title line") == ("", "no title line")
    assert parse_contents('"Say "hi""\ntext') == ('Say "hi"', "text")


def test_build_search_and_documents(corpus: Path, tmp_path: Path):
    idx = open_index(corpus, "bm25", index_dir=tmp_path / "idx")
    assert isinstance(idx, BM25Index) and len(idx) == len(ROWS)
    hits = idx.search(["capital of France", "who wrote the whale novel", "river in Africa"], 3)
    assert [h[0][0] for h in hits] == [0, 1, 2]
    assert all(h[i][1] >= h[i + 1][1] for h in hits for i in range(len(h) - 1))  # best first
    assert idx.store.document(0) == Document("Paris", ROWS[0][1].split("\n", 1)[1])
    assert idx.store.row(4) == {"id": "d4", "contents": ROWS[4][1]}  # extra fields dropped
    # no query word in the corpus, stopwords only, empty: no document (nothing scored above 0)
    assert idx.search(["zzzqqq", "the of and", ""], 3) == [[], [], []]
    assert len(idx.search(["capital"], 100)[0]) == 2  # k larger than the corpus is clamped
    assert idx.search([], 3) == []
    idx.close()


def test_default_index_dir_is_beside_the_corpus(corpus: Path, caplog):
    caplog.set_level(logging.INFO, logger="zerosearch.search.index")
    idx = open_index(corpus)
    assert idx.index_dir == default_index_dir(corpus, "bm25") == Path(str(corpus) + ".bm25")
    assert (idx.index_dir / "manifest.json").exists()
    idx.close()


def test_reload_from_disk_without_rebuilding(corpus: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="zerosearch.search.index")
    out = tmp_path / "idx"
    first = open_index(corpus, index_dir=out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_docs"] == len(ROWS) and manifest["corpus"]["sha256"]
    before = first.search(["highest mountain"], 2)
    first.close()
    assert builds(caplog) == 1
    second = open_index(corpus, index_dir=out)
    assert builds(caplog) == 1  # loaded, not rebuilt
    assert second.search(["highest mountain"], 2) == before
    second.close()
    # touched (new mtime), same bytes: the hash says fresh, and the manifest learns the new mtime
    os.utime(corpus, ns=(1_000_000_000, 1_000_000_000))
    assert index_status(corpus, out, BM25Index.settings())[0]
    open_index(corpus, index_dir=out).close()
    assert builds(caplog) == 1
    assert json.loads((out / "manifest.json").read_text())["corpus"]["mtime_ns"] == 1_000_000_000


def test_stale_index_is_rebuilt(corpus: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="zerosearch.search.index")
    out = tmp_path / "idx"
    open_index(corpus, index_dir=out).close()
    # a new row: size changes -> rebuilt, and the new passage is found
    write_corpus(corpus, ROWS + [("d6", '"Kangaroo"\nThe kangaroo is a marsupial from Australia.')])
    idx = open_index(corpus, index_dir=out)
    assert builds(caplog) == 2 and len(idx) == 7
    assert idx.store.row(idx.search(["marsupial kangaroo"], 1)[0][0][0])["id"] == "d6"
    idx.close()
    # same size, different bytes, different mtime -> the hash catches it
    text = corpus.read_text().replace("marsupial", "marsupiaL")
    corpus.write_text(text)
    os.utime(corpus, ns=(2_000_000_000, 2_000_000_000))
    assert index_status(corpus, out, BM25Index.settings()) == (False, "corpus content changed (sha256)")
    open_index(corpus, index_dir=out).close()
    assert builds(caplog) == 3
    # other settings -> rebuilt; a broken manifest -> rebuilt; rebuild=True -> rebuilt
    open_index(corpus, index_dir=out, k1=1.2).close()
    assert builds(caplog) == 4
    (out / "manifest.json").write_text("{broken")
    open_index(corpus, index_dir=out, k1=1.2).close()
    open_index(corpus, index_dir=out, k1=1.2, rebuild=True).close()
    assert builds(caplog) == 6
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]  # no leftovers


def test_bad_corpus_and_method(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not found"):
        open_index(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "contents": "x\\ny"}\n\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: not a corpus row"):
        open_index(bad, index_dir=tmp_path / "i")
    with pytest.raises(ValueError, match="unknown retrieval method 'splade'"):
        open_index(bad, "splade")
    with pytest.raises(TypeError, match="bm25 takes k1, b"):
        open_index(bad, "bm25", k_1=1.0)


@pytest.mark.skipif(is_available("faiss") and is_available("sentence_transformers"), reason="dense extra installed")
def test_dense_without_extra_names_the_extra(corpus: Path, tmp_path: Path):
    with pytest.raises(MissingDependencyError, match=r"pip install -e '\.\[dense\]'"):
        open_index(corpus, "dense", index_dir=tmp_path / "dense")
    assert not (tmp_path / "dense").exists()  # failed before touching the disk


def test_engine_results_metrics_and_failures(corpus: Path, tmp_path: Path):
    eng = RetrievalEngine(str(corpus), index_dir=str(tmp_path / "idx"), topk=2)
    assert eng.name == "bm25"
    reqs = [SearchRequest("capital of France", golden_answers=("Paris",)),
            SearchRequest("python language creator", golden_answers=("Rossum",)),
            SearchRequest("who wrote Moby-Dick", golden_answers=("Jules Verne",)),
            SearchRequest("zzzqqq")]
    res = eng.search(reqs)
    assert [r.documents[0].title for r in res[:3]] == ["Paris", "Python (programming language)", "Moby-Dick"]
    assert all(len(r.documents) <= 2 and r.error is None and not r.fallback for r in res)
    assert res[3].documents == []
    m = eng.pop_metrics()
    assert m["search/requests"] == 4 and m["search/empty_results"] == 1
    assert m["search/has_answer"] == pytest.approx(2 / 3)  # 3 requests carry answers, 2 found
    assert 0 <= m["search/latency_p50_s"] <= m["search/latency_p95_s"] < 5
    assert eng.pop_metrics() == {}  # reset
    # a failing index never raises out of search(): fallback documents, counted
    eng.index.store.close()
    res = eng.search(reqs[:2])
    assert all(r.fallback and r.error == "internal" and r.documents[0].text for r in res)
    assert eng.pop_metrics()["search/failures/internal"] == 2
    eng.close()


def test_engine_from_config(corpus: Path, tmp_path: Path):
    from zerosearch.config.schema import RetrievalConfig

    cfg = RetrievalConfig(corpus_path=str(corpus), index_dir=str(tmp_path / "idx"))
    with RetrievalEngine.from_config(cfg, topk=3) as eng:
        assert eng.topk == 3 and eng.index.index_dir == tmp_path / "idx"
        assert "bm25" in repr(eng)
    with pytest.raises(ValueError, match="corpus_path"):
        RetrievalEngine.from_config(RetrievalConfig(), topk=3)
    with retrieval_engine_from_config(cfg, topk=2) as eng:
        assert isinstance(eng, RetrievalEngine)
    with retrieval_engine_from_config(RetrievalConfig(url="http://127.0.0.1:9/retrieve", max_retries=1), 4) as eng:
        assert isinstance(eng, RemoteRetrievalEngine) and eng.topk == 4 and eng.policy.max_retries == 1
    with pytest.raises(ValueError, match="url .* or corpus_path"):
        retrieval_engine_from_config(RetrievalConfig(), topk=3)


def _stand_in_dense_modules(monkeypatch):
    """numpy stand-ins for sentence_transformers and faiss (the `dense` extra is not installed on the CPU
    test machines): a hashed bag-of-words encoder and an exact inner-product index with the same calls."""
    import types
    import zlib

    import numpy as np

    class SentenceTransformer:
        def __init__(self, name, device="cpu"):
            self.name, self.max_seq_length, self.seen = name, 512, []

        def encode(self, texts, batch_size=32, normalize_embeddings=False, convert_to_numpy=True,
                   show_progress_bar=False):
            self.seen.extend(texts)
            out = np.zeros((len(texts), 64), dtype=np.float32)
            for i, t in enumerate(texts):
                for w in t.lower().replace(":", " ").split():
                    out[i, zlib.crc32(w.strip(".,'\"").encode()) % 64] += 1.0
            if normalize_embeddings:
                out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
            return out

    class IndexFlatIP:
        def __init__(self, dim):
            self.vectors = np.zeros((0, dim), dtype=np.float32)

        def add(self, x):
            self.vectors = np.concatenate([self.vectors, x])

        def search(self, q, k):
            scores = q @ self.vectors.T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(scores, order, axis=1), order

    def write_index(index, path):
        np.save(path + ".npy", index.vectors)
        Path(path).write_text("stand-in")

    def read_index(path):
        vectors = np.load(path + ".npy")
        index = IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return index

    st = types.ModuleType("sentence_transformers")
    st.SentenceTransformer = SentenceTransformer
    faiss = types.ModuleType("faiss")
    faiss.IndexFlatIP, faiss.write_index, faiss.read_index = IndexFlatIP, write_index, read_index
    monkeypatch.setitem(sys.modules, "sentence_transformers", st)
    monkeypatch.setitem(sys.modules, "faiss", faiss)


def test_dense_index_build_reload_search(corpus: Path, tmp_path: Path, monkeypatch, caplog):
    _stand_in_dense_modules(monkeypatch)
    caplog.set_level(logging.INFO, logger="zerosearch.search.index")
    out = tmp_path / "dense"
    with open_index(corpus, "dense", index_dir=out, dense_model="intfloat/e5-small-v2") as idx:
        assert idx.method == "dense" and idx.manifest["settings"]["query_prefix"] == "query: "
        assert all(t.startswith("passage: ") for t in idx.encoder.seen[:len(ROWS)])  # e5 prefixes
        hits = idx.search(["Tokyo capital of Japan", "Nile river Africa"], 2)
        assert [h[0][0] for h in hits] == [5, 2] and len(hits[0]) == 2
    assert sum("building dense index" in r.getMessage() for r in caplog.records) == 1
    with RetrievalEngine(str(corpus), method="dense", index_dir=str(out), dense_model="intfloat/e5-small-v2") as eng:
        assert eng.name == "dense"
        assert eng.search([SearchRequest("Everest highest mountain")])[0].documents[0].title == "Mount Everest"
    assert sum("building dense index" in r.getMessage() for r in caplog.records) == 1  # reloaded
    open_index(corpus, "dense", index_dir=out, dense_model="other-model").close()  # another model: rebuilt
    assert sum("building dense index" in r.getMessage() for r in caplog.records) == 2


def test_unwritable_corpus_folder_indexes_into_the_cache(tmp_path: Path, monkeypatch):
    corpus = write_corpus(tmp_path / "c.jsonl")
    real_access = os.access
    # as if the corpus folder were read-only (chmod does not stop root, who runs some of these machines)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with open_index(corpus) as idx:
        assert idx.index_dir.parent == tmp_path / "cache" / "zerosearch" / "index"
        assert idx.index_dir.name.startswith("c.jsonl-") and idx.index_dir.name.endswith(".bm25")
    assert not Path(str(corpus) + ".bm25").exists()
