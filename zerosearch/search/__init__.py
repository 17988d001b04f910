"""The environment's search engines behind one interface (zerosearch.search.types.SearchEngine)."""

from zerosearch.search.types import Document, SearchEngine, SearchRequest, SearchResult

__all__ = ["Document", "SearchEngine", "SearchRequest", "SearchResult"]
