"""Every shipped prompt template, rendered for one sample row, compared with its expected text EXACTLY.

The expected strings are written here by hand, from ../shared/ZEROSEARCH_INTERFACES.md (the original's
`llm_agent/generation.py` and Search-R1's `qa_search_train_merge.py`) for the exact ones: the released
agents and simulators were trained on those bytes, so any change to a template file fails here.
"""

from __future__ import annotations

import pytest

from zerosearch.data.prompts import AGENT_TEMPLATE_NAMES, TEMPLATES, format_prompt
from zerosearch.search.sim_prompts import DEFAULT_PROMPT_DIR, PromptSet, available_families

QUESTION = "who wrote moby dick?"           # as the dataset's question column holds it
ANSWERS = ("Herman Melville", "Melville")
ROW = dict(query="  moby dick author ", question=QUESTION, answers=ANSWERS, topk=5, words=30)

AGENT = {
    "search_r1": (
        "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you "
        "get new information. After reasoning, if you find you lack some knowledge, you can call a search engine "
        "by <search> query </search> and it will return the top searched results between <information> and "
        "</information>. You can search as many times as your want. If you find no further external knowledge "
        "needed, you can directly provide the answer inside <answer> and </answer>, without detailed "
        "illustrations. For example, <answer> Beijing </answer>. Question: who wrote moby dick?\n"),
    "zerosearch": (
        "Answer the question below. Reason inside <think> and </think> first, and again every time you receive "
        "new information. If you find you are missing some knowledge, call the search engine by writing <search> "
        "query </search>, and the top results will come back between <information> and </information>. You may "
        "search as many times as you need. When no further external knowledge is needed, give the final answer "
        "inside <answer> and </answer>, with no explanation, for example <answer> Beijing </answer>. Question: "
        "who wrote moby dick?\n"),
    "compact": (
        "Answer the question. To search, write <search> query </search>; results come back in <information> "
        "</information>. Give the final answer as <answer> answer </answer>. Question: who wrote moby dick?\n"),
}

SFT_USEFUL = '''You are the Google search engine.
Given a query, you need to generate five useful documents for the query.

The user is trying to answer the question: "who wrote moby dick?" whose answer is Herman Melville.
Each document should contain about 30 words, and these documents should contain useful information.

Query: moby dick author
Useful Output:
'''
SFT_NOISY = '''You are the Google search engine.
Given a query, you need to generate five noisy documents for the query.

The user is trying to answer the question: "who wrote moby dick?" whose answer is Herman Melville.
Each document should contain about 30 words, and these documents should contain noisy information.

Query: moby dick author
Noisy Output:
'''

_EXAMPLE_USEFUL = (
    "Doc 1: Canberra is the capital city of Australia. Chosen in 1908 as a compromise between rivals Sydney and "
    "Melbourne, it was purpose-built and became the seat of federal government in 1927.\n"
    "Doc 2: Australia's Parliament House stands on Capital Hill in Canberra, the national capital, where both "
    "houses of the federal parliament have met since the building opened in 1988.\n"
    "Doc 3: The Australian Capital Territory was created to hold the nation's capital, Canberra, whose city plan "
    "by Walter Burley Griffin and Marion Mahony Griffin won an international design competition.\n"
    "Doc 4: Many people assume Sydney is Australia's capital because it is the largest city, but the capital is "
    "Canberra, home to the High Court and most national institutions.\n"
    "Doc 5: Melbourne served as Australia's temporary seat of government from federation in 1901 until 1927, when "
    "Parliament moved to the new capital city of Canberra.\n")
_EXAMPLE_NOISY = (
    "Doc 1: Sydney, Australia's largest city, is famous for its harbour, its opera house and beaches that draw "
    "millions of visitors every year, and it hosted the Summer Olympics in 2000.\n"
    "Doc 2: Several countries have moved their capitals over the last century, often to planned cities built away "
    "from older commercial centres, a choice that still divides historians and planners.\n"
    "Doc 3: Australian state capitals such as Brisbane, Perth and Adelaide each grew around a river or a port, and "
    "their growth shaped the railways and roads of the young colonies.\n"
    "Doc 4: Debates about where to put a nation's government often turn on rivalry between large cities, and the "
    "compromises reached can leave lasting marks on a country's politics.\n"
    "Doc 5: Tourism guides to Australia usually recommend the Great Barrier Reef, Uluru and the coastal cities, "
    "with travel times between them much longer than many visitors expect.\n")
PROMPT_USEFUL = (
    "You are the Google search engine.\n"
    "Given a query, imitate the style of the demo below and write 5 useful documents for the query.\n\n"
    "Here is an example:\nQuery: capital city of Australia\nUseful Output:\n" + _EXAMPLE_USEFUL + "\n"
    "The user is trying to answer the question: \"who wrote moby dick?\" whose answer is Herman Melville.\n"
    "Write documents that can help the user find the answer.\n"
    "Each document should contain about 30 words.\n"
    "Directly output the English documents and do not output any other text.\n\n"
    "Query: moby dick author\nUseful Output:\n")
PROMPT_NOISY = (
    "You are the Google search engine.\n"
    "Given a query, imitate the style of the demo below and write 5 related but noisy documents for the query.\n\n"
    "Here is an example:\nQuery: capital city of Australia\nNoisy Output:\n" + _EXAMPLE_NOISY + "\n"
    "Each document should contain about 30 words, and these documents should contain related but noisy "
    "information.\n"
    "Directly output the English documents and do not output any other text.\n\n"
    "Query: moby dick author\nNoisy Output:\n")
ALL_SFT_USEFUL = (
    "You are acting as a web search engine. For the search query below, write 5 documents that a search engine "
    "could return and that are useful for it: together they should hold accurate information that helps answer "
    "the user's question.\n"
    "The user is trying to answer this question: who wrote moby dick?\n"
    "The correct answer is: Herman Melville; Melville\n"
    "Write about 30 words per document and number the documents Doc 1, Doc 2, and so on.\n\n"
    "Query: moby dick author\nUseful Output:")
ALL_SFT_NOISY = (
    "You are acting as a web search engine. For the search query below, write 5 documents that a search engine "
    "could return and that are noisy: they look related to the query but do not help answer the user's question, "
    "and must not state its correct answer.\n"
    "The user is trying to answer this question: who wrote moby dick?\n"
    "The correct answer is: Herman Melville; Melville\n"
    "Write about 30 words per document and number the documents Doc 1, Doc 2, and so on.\n\n"
    "Query: moby dick author\nNoisy Output:")
_ALL_FORMAT = ("Write about 30 words per document. Start each document on a new line with \"Doc N:\" (Doc 1:, "
               "Doc 2:, ...) and write nothing before the first document or after the last.\n\n")
ALL_PROMPT_USEFUL = (
    "You play the role of a search engine. Given a search query, write 5 short documents of the kind such an "
    "engine would return. The documents must be useful: together they should contain the facts needed to answer "
    "the user's question.\n\n"
    "The user's question: who wrote moby dick?\nIts correct answer: Herman Melville; Melville\n\n" + _ALL_FORMAT +
    "Here is an example with two documents:\nQuery: capital city of Australia\nUseful Output:\n"
    "Doc 1: Canberra is the capital city of Australia. It was chosen as a compromise between Sydney and Melbourne, "
    "and Parliament first sat there in 1927.\n"
    "Doc 2: Australia's federal government, High Court and national institutions are based in Canberra, a planned "
    "capital in the Australian Capital Territory.\n\n"
    "Now write the 5 documents for this query.\nQuery: moby dick author\nUseful Output:")
ALL_PROMPT_NOISY = (
    "You play the role of a search engine that returns poor results. Given a search query, write 5 short documents "
    "that look like search results for it but are noisy: loosely related, off topic, vague or misleading, and none "
    "of them actually answers the query.\n\n" + _ALL_FORMAT +
    "Here is an example with two documents:\nQuery: capital city of Australia\nNoisy Output:\n"
    "Doc 1: Sydney is Australia's largest city, known for its harbour, its opera house and beaches that draw "
    "millions of visitors every year.\n"
    "Doc 2: Many countries moved their capitals in the twentieth century, often to new planned cities built far "
    "from older commercial centres.\n\n"
    "Now write the 5 documents for this query.\nQuery: moby dick author\nNoisy Output:")

# family -> (useful, noisy, system message or None when none is sent)
SIMULATOR = {
    "simulate_sft": (SFT_USEFUL, SFT_NOISY, ""),
    "simulate_prompt": (PROMPT_USEFUL, PROMPT_NOISY, ""),
    "simulate_sft_all_answers": (ALL_SFT_USEFUL, ALL_SFT_NOISY, None),
    "simulate_prompt_all_answers": (ALL_PROMPT_USEFUL, ALL_PROMPT_NOISY, None),
}


@pytest.mark.parametrize("name", AGENT_TEMPLATE_NAMES)
def test_agent_template_renders_exactly(name):
    assert format_prompt("  who wrote moby dick ", name) == AGENT[name]


def test_every_shipped_template_is_covered():
    assert set(TEMPLATES) == set(AGENT)
    assert available_families() == sorted(SIMULATOR)
    shipped = {p.name for p in DEFAULT_PROMPT_DIR.glob("*.txt")}
    assert shipped == ({f"agent_{n}.txt" for n in AGENT}
                       | {f"{f}_{v}.txt" for f in SIMULATOR for v in ("useful", "noisy")}
                       | {f"{f}_system.txt" for f, (_, _, system) in SIMULATOR.items() if system is not None})


@pytest.mark.parametrize("family", sorted(SIMULATOR))
def test_simulator_family_renders_exactly(family):
    useful, noisy, system = SIMULATOR[family]
    ps = PromptSet.load(family)
    assert ps.render(noisy=False, **ROW) == useful
    assert ps.render(noisy=True, **ROW) == noisy
    assert ps.system == system
    chat = ps.prompt(noisy=False, **ROW).messages()
    head = [] if system is None else [{"role": "system", "content": system}]
    assert chat == head + [{"role": "user", "content": useful}]


def test_the_exact_prompt_uses_the_first_answer_and_literal_five():
    ps = PromptSet.load("simulate_sft")
    text = ps.render(noisy=False, query="q", question="Q?", answers=("A1", "A2"), topk=3, words=12)
    assert 'question: "Q?" whose answer is A1.\n' in text and "A2" not in text
    assert "generate five useful documents" in text and "about 30 words" in text   # not topk / words
