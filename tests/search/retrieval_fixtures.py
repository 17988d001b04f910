"""The wiki-18 traces corpus and its BM25 index, built once per test session (about 1 s) in a temp folder.

Test modules call `wiki_index_dir(tmp_path_factory, shared_data)` from a fixture; the folder is cached here
so every module of the session shares one build.
"""

from __future__ import annotations

from pathlib import Path

from zerosearch.search.index import open_index

WIKI_CORPUS = "corpus/wiki18_passages_searchr1_traces.jsonl"
_CACHE: dict[str, Path] = {}


def wiki_corpus(shared_data: Path) -> Path:
    return shared_data / WIKI_CORPUS


def wiki_index_dir(tmp_path_factory, shared_data: Path) -> Path:
    if "bm25" not in _CACHE:
        out = tmp_path_factory.mktemp("wiki_bm25") / "bm25"
        open_index(wiki_corpus(shared_data), "bm25", index_dir=out).close()
        _CACHE["bm25"] = out
    return _CACHE["bm25"]
