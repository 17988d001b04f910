"""Start-up probes of the search servers a run depends on: fail in seconds, before any model loads, instead
of training for hours on fallback documents.

The trainer calls `probe_search(cfg, validation=...)` first thing. For every engine the run will use:

    simulation (SEARCH_MODE simulate_*, HTTP transports), for each server in search.simulation.servers (IP):
        1. reachable, and what it serves: GET /v1/models (vLLM, sglang, any OpenAI-compatible server), and
           sglang's GET /get_model_info when the transport is sglang;
        2. the model name that will be sent (search.simulation.model_name / SIMULATION_LLM) is among them
           (an empty name means "whatever it serves": the probe reports what that is);
        3. ONE real simulator call, built by the engine's transport (`HttpTransport.payload/path/extract`)
           from the engine's prompt templates for a sample question, parses into documents
           (`sim_parsing.parse_documents`).
    retrieval (a /retrieve server, search.retrieval.url): one query returns a well-formed result;
    google (SerpApi): one search with the key from the environment (401 -> the key is named).

Every failure is collected, then all are raised together as one `ProbeError` (a `ConfigError`, so the
launchers print it as one message and exit 2): each line names the server, what it serves, and the keys to
fix. `search.probe=false` skips the probes (for those who know their servers are up; a SerpApi probe costs
one search credit). The probes use httpx directly, with short timeouts for the GETs and the simulator's own
`search.simulation.timeout_s` for the one generation.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import httpx

from zerosearch.config.validate import ConfigError
from zerosearch.generation.types import SamplingParams
from zerosearch.search.http import parse_servers
from zerosearch.search.sim_parsing import parse_documents
from zerosearch.search.sim_prompts import PromptSet, SimPrompt
from zerosearch.search.sim_transports import HttpTransport, make_http_transport

if TYPE_CHECKING:
    from zerosearch.config.schema import RetrievalConfig, SimulationConfig, WebSearchConfig, ZeroSearchConfig

SIMULATED = ("simulate_sft", "simulate_prompt")
SIM_DEFAULT_PORT = 6001  # the simulation engine's default port (simulated.DEFAULT_PORT)
GET_TIMEOUT_S = 5.0      # a GET of a model list: a live server answers in milliseconds
# The sample row of the probe's simulator call: any well-known fact; the answer is only there because the
# useful templates condition on it.
SAMPLE_QUESTION = "Who wrote the novel Pride and Prejudice?"
SAMPLE_ANSWERS = ("Jane Austen",)
SAMPLE_QUERY = "Pride and Prejudice author"
SIM_KEYS = "search.simulation.servers (IP)"
NAME_KEYS = "search.simulation.model_name (SIMULATION_LLM)"
SERPAPI_KEY_ENVS = ("SERPAPI_API_KEY", "SER_API_KEY")  # ours, and the original's name


class ProbeError(ConfigError):
    """One or more search servers failed their start-up probe; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        ValueError.__init__(self, f"search server probe failed ({len(problems)} problem{'s' * (len(problems) != 1)})"
                                  f":\n{lines}\n  (search.probe=false skips these checks)")


class _Failed(Exception):
    """One server's problem, as the line the user will read."""


@dataclass(frozen=True)
class ProbeResult:
    """What one server answered to its probe."""

    engine: str                 # simulate_sft | simulate_prompt | retrieval | google
    server: str
    served: tuple[str, ...]     # model names it serves (simulation); () when it does not list them
    documents: int              # documents the probe call parsed into
    latency_s: float            # wall time of the probe call

    def line(self) -> str:
        what = f" serving {list(self.served)}" if self.served else ""
        return (f"[probe] {self.engine} server {self.server}{what}: ok, {self.documents} document(s) in "
                f"{self.latency_s:.2f}s")


# ---------------------------------------------------------------------------------------------- simulation
def served_model_names(client: httpx.Client, server: str, transport: str = "chat") -> tuple[str, ...]:
    """The model names `server` serves: the ids of GET /v1/models (OpenAI's list shape), or for the sglang
    transport sglang's /get_model_info (`served_model_name` or `model_path`) when /v1/models lists none.
    () when the server lists no names (the probe call then checks the name). Raises _Failed when the
    server cannot be reached."""
    names: tuple[str, ...] = ()
    try:
        resp = client.get(server + "/v1/models", timeout=GET_TIMEOUT_S)
        if resp.status_code == 200:
            data = resp.json()
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                names = tuple(str(m["id"]) for m in data["data"] if isinstance(m, dict) and "id" in m)
        if not names and transport == "sglang":
            resp = client.get(server + "/get_model_info", timeout=GET_TIMEOUT_S)
            if resp.status_code == 200 and isinstance(info := resp.json(), dict):
                name = info.get("served_model_name") or info.get("model_path")
                names = (str(name),) if name else ()
    except ValueError:  # a 200 whose body is not JSON: no list of names, the probe call decides
        return names
    except httpx.HTTPError as e:
        raise _Failed(f"simulation server {server} is not reachable ({type(e).__name__}: {e}): start it "
                      f"(bash scripts/launch_simulation_server.sh MODEL --port PORT) or fix {SIM_KEYS}") from None
    return names


def _sample_prompt(prompts: PromptSet, topk: int, words: int) -> SimPrompt:
    """The useful prompt the engine would send for the sample row, its family's system message included (the
    one place the probe renders one)."""
    return prompts.prompt(noisy=False, query=SAMPLE_QUERY, question=SAMPLE_QUESTION, answers=SAMPLE_ANSWERS,
                          topk=topk, words=words)


def probe_simulation_server(client: httpx.Client, server: str, transport: HttpTransport, sim: "SimulationConfig",
                            prompts: PromptSet, topk: int, engine: str = "simulate_sft") -> ProbeResult:
    """Probe one simulation server (see the module docstring); _Failed names what is wrong."""
    served = served_model_names(client, server, transport.name)
    name = sim.model_name
    serves = f"it serves {list(served)}" if served else "it lists no model names at /v1/models"
    if name and served and name not in served and transport.name != "sglang":  # sglang's /generate takes no name
        raise _Failed(f"simulation server {server} serves {list(served)}, not {name!r}: set {NAME_KEYS} to "
                      f"{served[0]!r}, or point {SIM_KEYS} at a server of {name!r}")
    # The engine's sampling settings (SimulatedSearchEngine.from_config), seeded for a reproducible probe.
    sampling = SamplingParams(temperature=sim.temperature, top_p=sim.top_p, max_new_tokens=sim.max_tokens,
                              stop_strings=(f"Doc {topk + 1}",))
    payload = transport.payload(_sample_prompt(prompts, topk, sim.words_per_doc), sampling, seed=0)
    url = server + transport.path
    t0 = time.monotonic()
    try:
        resp = client.post(url, json=payload, timeout=sim.timeout_s)
    except httpx.HTTPError as e:
        raise _Failed(f"simulation server {server} ({serves}) did not answer POST {transport.path} within "
                      f"search.simulation.timeout_s={sim.timeout_s:g} ({type(e).__name__}: {e}); check the server "
                      f"and {SIM_KEYS}") from None
    latency = time.monotonic() - t0
    if resp.status_code == 404 and name:
        raise _Failed(f"simulation server {server} ({serves}) answered 404 to model {name!r} at {transport.path}: "
                      f"{resp.text[:200]!r}; set {NAME_KEYS} to the served name, or point {SIM_KEYS} at a server "
                      f"of {name!r}")
    if resp.status_code >= 400:
        raise _Failed(f"simulation server {server} ({serves}) answered HTTP {resp.status_code} at {transport.path}: "
                      f"{resp.text[:200]!r}; check search.simulation.transport={transport.name!r} and {NAME_KEYS}")
    try:
        text = transport.extract(resp.json())
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise _Failed(f"simulation server {server} ({serves}) sent a body the {transport.name!r} transport cannot "
                      f"read ({type(e).__name__}: {e}; body {resp.text[:200]!r}): check "
                      f"search.simulation.transport") from None
    docs = parse_documents(text, topk)
    if not docs:
        raise _Failed(f"simulation server {server} ({serves}) answered the sample search with text that parses into "
                      f"no documents: {text[:300]!r}. A simulation LLM writes `Doc 1: ...` lines; check that "
                      f"{NAME_KEYS} names a simulator and that the prompt family "
                      f"(search.simulation.prompt_family / SEARCH_MODE) fits it")
    return ProbeResult(engine, server, served, len(docs), latency)


def probe_simulation(sim: "SimulationConfig", mode: str, topk: int) -> tuple[list[ProbeResult], list[str]]:
    """Probe every server of `search.simulation` for the prompts of `mode` (simulate_sft | simulate_prompt):
    (results of the servers that passed, problems of those that did not). All servers are probed at once."""
    prompts = PromptSet.load(sim.prompt_family or mode, sim.prompt_dir)
    transport = make_http_transport(sim.transport, sim.model_name, sim.model_path)
    servers = parse_servers(sim.servers, default_port=SIM_DEFAULT_PORT)
    results, problems = [], []
    with httpx.Client(trust_env=False) as client, \
            concurrent.futures.ThreadPoolExecutor(max_workers=min(len(servers), 16)) as pool:
        futures = [pool.submit(probe_simulation_server, client, s, transport, sim, prompts, topk, mode)
                   for s in servers]
        for f in futures:
            try:
                results.append(f.result())
            except _Failed as e:
                problems.append(str(e))
    return results, problems


# ---------------------------------------------------------------------------------------------- retrieval
def retrieval_call(query: str, topk: int, protocol: str = "search_r1") -> tuple[dict[str, Any], Callable[[Any], int]]:
    """(JSON body of one /retrieve call, a function counting the documents of its answer and raising
    ValueError when the answer is malformed). The one place the probe knows the retrieval contracts:
        search_r1   {"queries": [q], "topk": k, "return_scores": true} -> {"result": [[hit, ...]]}
        zerosearch  {"query": q, "top_k": k} -> [{"text": ...}, ...]   (ZeroSearch's wiki retriever)"""
    if protocol == "zerosearch":
        def count(data: Any) -> int:
            if not isinstance(data, list) or not all(isinstance(d, dict) and isinstance(d.get("text"), str)
                                                     for d in data):
                raise ValueError("the answer is not a JSON list of {\"text\": ...} objects")
            return len(data)

        return {"query": query, "top_k": topk}, count
    if protocol != "search_r1":
        raise ValueError(f"search.retrieval.protocol={protocol!r}: must be search_r1 or zerosearch")
    from zerosearch.search.retrieval import parse_retrieve_response

    return ({"queries": [query], "topk": topk, "return_scores": True},
            lambda data: len(parse_retrieve_response(data, 1, topk)[0]))


def probe_retrieval(cfg: "RetrievalConfig", topk: int) -> tuple[list[ProbeResult], list[str]]:
    """One /retrieve call to each server of `search.retrieval.url`."""
    from zerosearch.search.retrieval import parse_retrieve_urls

    protocol = getattr(cfg, "protocol", "search_r1")  # the key another change adds; honoured when present
    bases, path = parse_retrieve_urls(cfg.url or "")
    payload, count = retrieval_call(SAMPLE_QUERY, topk, protocol)
    results, problems = [], []
    with httpx.Client(trust_env=False) as client:
        for base in bases:
            t0 = time.monotonic()
            try:
                resp = client.post(base + path, json=payload, timeout=min(cfg.timeout_s, 30.0))
                if resp.status_code >= 400:
                    raise _Failed(f"retrieval server {base}{path} answered HTTP {resp.status_code}: {resp.text[:200]!r}; "
                                  f"check search.retrieval.url (and the request contract, protocol {protocol!r})")
                try:
                    n = count(resp.json())
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    raise _Failed(f"retrieval server {base}{path} answered a malformed result ({e}; body "
                                  f"{resp.text[:200]!r}): it does not speak the {protocol!r} /retrieve contract; "
                                  "check search.retrieval.url") from None
                results.append(ProbeResult("retrieval", base + path, (), n, time.monotonic() - t0))
            except httpx.HTTPError as e:
                problems.append(f"retrieval server {base}{path} is not reachable ({type(e).__name__}: {e}): start "
                                "it (python -m zerosearch.search.retrieval_server) or fix search.retrieval.url")
            except _Failed as e:
                problems.append(str(e))
    return results, problems


# ---------------------------------------------------------------------------------------------- SerpApi
def probe_serpapi(cfg: "WebSearchConfig", topk: int, endpoint: str | None = None) -> tuple[list[ProbeResult], list[str]]:
    """One search through SerpApi with the key from the environment; the key never appears in a message."""
    from zerosearch.search.web import SERPAPI_ENDPOINT, parse_serpapi_response, scrub

    endpoint = endpoint or SERPAPI_ENDPOINT
    env, key = next(((e, os.environ[e].strip()) for e in SERPAPI_KEY_ENVS if os.environ.get(e, "").strip()),
                    (SERPAPI_KEY_ENVS[0], ""))
    if not key:
        return [], [f"SEARCH_ENGINE google (SerpApi) needs an API key in the environment variable "
                    f"{SERPAPI_KEY_ENVS[0]}: export {SERPAPI_KEY_ENVS[0]}=<your key> (or evaluate offline with "
                    "SEARCH_ENGINE wiki / search.eval_engine=retrieval)"]
    params: dict[str, Any] = {"q": SAMPLE_QUERY, "engine": cfg.engine, "gl": cfg.gl, "hl": cfg.hl, "num": topk,
                              "api_key": key}
    if cfg.location:
        params["location"] = cfg.location
    t0 = time.monotonic()
    try:
        with httpx.Client(trust_env=False) as client:
            resp = client.get(endpoint, params=params, timeout=min(cfg.timeout_s, 30.0))
    except httpx.HTTPError as e:
        return [], [scrub(f"SerpApi ({endpoint}) is not reachable ({type(e).__name__}: {e})")]
    body = scrub(resp.text[:200]).replace(key, "<key>")
    if resp.status_code in (401, 403):
        return [], [f"SerpApi rejected the API key in {env} (HTTP {resp.status_code}: {body!r}): set a valid key "
                    f"with export {SERPAPI_KEY_ENVS[0]}=<your key>"]
    if resp.status_code >= 400:
        return [], [f"SerpApi ({endpoint}) answered HTTP {resp.status_code}: {body!r} (429: out of searches or "
                    f"throughput; check the account of the key in {env})"]
    try:
        docs = parse_serpapi_response(resp.json(), topk)
    except (ValueError, KeyError, TypeError) as e:
        return [], [f"SerpApi ({endpoint}) answered a malformed result: {scrub(str(e))[:200]}"]
    return [ProbeResult("google", endpoint, (), len(docs), time.monotonic() - t0)], []


# ---------------------------------------------------------------------------------------------- the run
def engines_to_probe(cfg: "ZeroSearchConfig", validation: bool) -> list[str]:
    """The engine kinds whose servers the run will call: the training engine, and the evaluation engine
    when validation will run (once each; `wiki` is retrieval). In-process engines have no server."""
    s = cfg.search
    kinds = [s.mode] + ([("retrieval" if s.eval_engine == "wiki" else s.eval_engine)] if validation else [])
    out: list[str] = []
    for kind in kinds:
        if kind in SIMULATED and s.simulation.transport == "inprocess":
            continue
        if kind == "retrieval" and not s.retrieval.url:
            continue  # a local index in this process
        if kind not in out:
            out.append(kind)
    return out


def probe_search(cfg: "ZeroSearchConfig", *, validation: bool, log: Callable[[str], Any] = print,
                 serpapi_endpoint: str | None = None) -> list[ProbeResult]:
    """Probe every search server the run depends on (see the module docstring); raise ProbeError listing
    every problem, or log one line per server and return the results. A no-op with search.probe=false."""
    s = cfg.search
    if not getattr(s, "probe", True):
        log("[probe] search.probe=false: search servers not checked")
        return []
    results: list[ProbeResult] = []
    problems: list[str] = []
    for kind in engines_to_probe(cfg, validation):
        if kind in SIMULATED:
            r, p = probe_simulation(s.simulation, kind, s.topk)
        elif kind == "retrieval":
            r, p = probe_retrieval(s.retrieval, s.topk)
        elif kind == "google":
            r, p = probe_serpapi(s.web, s.topk, serpapi_endpoint)
        else:
            continue  # an unknown kind is the config validator's to report
        results += r
        problems += p
    if problems:
        raise ProbeError(problems)
    for r in results:
        line = r.line()
        if r.engine in SIMULATED and not s.simulation.model_name:
            line += " (search.simulation.model_name is empty: requests go to the model it serves)"
        log(line)
    return results

