"""results.csv, results.md and results.png from scored rows, and the merge of several result folders.

results.csv has one record per (method, dataset) plus two per method: `overall` (every row pooled, as
validation's `/all` metrics) and `average` (the mean of the per-dataset values: the paper's "Avg."
column). Columns: method, dataset, em, cover_em, f1, reward, answer_rate, searches_per_question,
mean_turns, rows, truncated (rows that ended on a budget). Scores are fractions in [0, 1]; results.md shows
them as percentages, with cover-EM as "EM" (what ZeroSearch and Search-R1 report) and exact EM and F1 in
their own tables beside it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

from zerosearch.eval.scoring import RowResult, aggregate
from zerosearch.eval.subsets import BENCHMARKS, TITLES

COLUMNS = ("method", "dataset", "em", "cover_em", "f1", "reward", "answer_rate", "searches_per_question",
           "mean_turns", "rows", "truncated")
OVERALL, AVERAGE = "overall", "average"
_SCORES = ("em", "cover_em", "f1", "reward", "answer_rate", "searches_per_question", "mean_turns")


def _record(method: str, dataset: str, a: dict[str, float]) -> dict[str, Any]:
    return {"method": method, "dataset": dataset, "em": a["em"], "cover_em": a["cover_em"], "f1": a["f1"],
            "reward": a["reward"], "answer_rate": a["answer_rate"], "searches_per_question": a["searches"],
            "mean_turns": a["turns"], "rows": int(a["n"]), "truncated": int(a["truncated"])}


def records(groups: dict[str, dict[str, Sequence[RowResult]]]) -> list[dict[str, Any]]:
    """{method label: {dataset: rows}} -> csv records (per dataset, then overall and average per method)."""
    out: list[dict[str, Any]] = []
    for method, by_ds in groups.items():
        per = [_record(method, ds, aggregate(rows)) for ds, rows in sorted(by_ds.items(), key=lambda kv: order_key(kv[0]))]
        out.extend(per)
        out.append(_record(method, OVERALL, aggregate([r for rows in by_ds.values() for r in rows])))
        if per:
            avg = {k: sum(p[k] for p in per) / len(per) for k in _SCORES}
            out.append({"method": method, "dataset": AVERAGE, **avg, "rows": sum(p["rows"] for p in per),
                        "truncated": sum(p["truncated"] for p in per)})
    return out


def order_key(dataset: str) -> tuple[int, str]:
    """The paper's column order for the seven benchmarks, then other datasets by name."""
    names = list(BENCHMARKS)
    return (names.index(dataset), "") if dataset in names else (len(names), dataset)


def write_csv(path: Path, recs: Sequence[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in recs:
            w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    return path


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in COLUMNS[2:]:
            r[k] = int(r[k]) if k in ("rows", "truncated") else float(r[k])
    return rows


def _datasets(recs: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({r["dataset"] for r in recs} - {OVERALL, AVERAGE}, key=order_key)


def _methods(recs: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in recs))


def markdown(recs: Sequence[dict[str, Any]], header: str = "") -> str:
    """The paper's layout: a row per method, a column per dataset plus the average, one table per score."""
    ds, methods = _datasets(recs), _methods(recs)
    cell = {(r["method"], r["dataset"]): r for r in recs}
    titles = [TITLES.get(d, d) for d in ds]
    lines = ["# Evaluation results", ""]
    if header:
        lines += [header, ""]
    for metric, name in (("cover_em", "EM (cover-EM: a gold answer is contained in the normalised prediction; "
                                      "what ZeroSearch and Search-R1 report as EM), %"),
                         ("em", "Exact EM (normalised prediction equals a gold answer), %"),
                         ("f1", "F1 (token F1, best over gold answers), %")):
        lines += [f"## {name}", "", "| Method | " + " | ".join(titles) + " | Avg. |",
                  "|---|" + "---:|" * (len(ds) + 1)]
        for m in methods:
            vals = [cell.get((m, d)) for d in ds] + [cell.get((m, AVERAGE))]
            lines.append(f"| {m} | " + " | ".join("-" if v is None else f"{100 * v[metric]:.1f}" for v in vals) + " |")
        lines.append("")
    lines += ["## Details", "", "| Method | Dataset | rows | answer rate | searches / question | mean turns | truncated |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for m in methods:
        for d in [*ds, OVERALL]:
            r = cell.get((m, d))
            if r is not None:
                lines.append(f"| {m} | {TITLES.get(d, d)} | {r['rows']} | {r['answer_rate']:.3f} | "
                             f"{r['searches_per_question']:.2f} | {r['mean_turns']:.2f} | {r['truncated']} |")
    return "\n".join(lines) + "\n"


def plot(recs: Sequence[dict[str, Any]], path: Path, metric: str = "cover_em") -> Path:
    """A bar chart of `metric` (%) per dataset (and the average), the methods side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds, methods = [*_datasets(recs), AVERAGE], _methods(recs)
    cell = {(r["method"], r["dataset"]): r[metric] for r in recs}
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(ds) * max(1, len(methods)) ** 0.5), 4.2))
    for i, m in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(ds))]
        ax.bar(xs, [100 * cell.get((m, d), 0.0) for d in ds], width, label=m)
    ax.set_xticks(range(len(ds)), [TITLES.get(d, "Avg." if d == AVERAGE else d) for d in ds])
    ax.set_ylabel("EM (cover-EM), %" if metric == "cover_em" else f"{metric}, %")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out_dir: Path, recs: Sequence[dict[str, Any]], header: str = "") -> dict[str, Path]:
    """results.csv, results.md and results.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_csv(out_dir / "results.csv", recs)}
    paths["md"] = out_dir / "results.md"
    paths["md"].write_text(markdown(recs, header))
    paths["png"] = plot(recs, out_dir / "results.png")
    return paths


def compare(dirs: Sequence[Path], out_dir: Path) -> dict[str, Path]:
    """Merge the results.csv of several result folders into one table (methods named after their folder
    when two folders use the same method name)."""
    loaded = []
    for d in dirs:
        p = Path(d) / "results.csv"
        if not p.is_file():
            raise FileNotFoundError(f"--compare {d}: no results.csv (run the evaluation there first)")
        loaded.append((Path(d), read_csv(p)))
    counts: dict[str, int] = {}
    for _, recs in loaded:
        for m in _methods(recs):
            counts[m] = counts.get(m, 0) + 1
    merged = []
    for d, recs in loaded:
        for r in recs:
            merged.append({**r, "method": r["method"] if counts[r["method"]] == 1 else f"{r['method']} [{d.name}]"})
    header = "Merged from: " + ", ".join(f"`{d}`" for d, _ in loaded)
    return write_report(Path(out_dir), merged, header)
