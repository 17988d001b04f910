"""QA data: rows, readers (jsonl, parquet, dataset folders), the parquet writer and the agent prompt.

Nothing heavy is imported here: pyarrow loads when a parquet file is read or written, and prompts need a
tokenizer only when one is passed in.
"""

from zerosearch.data.prompts import (
    TEMPLATES,
    encode_chat,
    encode_prompt,
    format_prompt,
    normalize_question,
    render_prompt,
)
from zerosearch.data.qa import (
    KNOWN_SOURCES,
    DataError,
    QARow,
    load_qa,
    load_qa_dir,
    source_from_filename,
    write_parquet,
)

__all__ = [
    "DataError", "KNOWN_SOURCES", "QARow", "TEMPLATES", "encode_chat", "encode_prompt", "format_prompt", "load_qa",
    "load_qa_dir", "normalize_question", "render_prompt", "source_from_filename", "write_parquet",
]
