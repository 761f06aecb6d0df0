"""The study's tables, CSV, learning-curve plot, HTML report and summary, from its finished cells.

Every number is re-derived from the cell files, so a partial study tabulates what has finished so far
(missing cells show as ``-``). Spread is over seeds (each seed's value is the mean foreground Dice over
structures of the per-structure mean over test cases); "Δ vs scratch" pairs each method with the
random-initialised encoder of the same seed and K.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from S2DCCore.report import Section, write_report
from S2DCCore.study.cells import write_json
from S2DCCore.study.config import StudyConfig
from S2DCCore.study.plan import StudyData

FLOOR_INTENSITY = "intensity-only (floor)"


def collect(out: Path, config: StudyConfig) -> dict:
    """All finished cells: ``{"probe"|"finetune": {method: {(k, seed): cell}}, "floors": ..., "pretrain": ...}``."""
    found: dict = {"probe": {}, "finetune": {}, "floors": {}, "pretrain": {}}
    for method in config.methods:
        for path in sorted((out / "probe" / method).rglob("k*_s*.json")):
            cell = _read(path)
            found["probe"].setdefault(method, {})[(cell["k"], cell["seed"])] = cell
        for path in sorted((out / "finetune" / method).glob("k*_s*/result.json")):
            cell = _read(path)
            found["finetune"].setdefault(method, {})[(cell["k"], cell["seed"])] = cell
        if (out / "pretrain" / method / "result.json").exists():
            found["pretrain"][method] = _read(out / "pretrain" / method / "result.json")
    for path in sorted((out / "floors" / "intensity_only").glob("k*_s*.json")):
        cell = _read(path)
        found["floors"].setdefault(FLOOR_INTENSITY, {})[(cell["k"], cell["seed"])] = cell
    for path in sorted((out / "floors").glob("*/result.json")):
        found["floors"][path.parent.name.replace("_", " ") + " (floor)"] = {None: _read(path)}
    return found


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and (population) standard deviation, or None for no values."""
    arr = np.array([v for v in values if v is not None], dtype=float)
    return (None, None) if arr.size == 0 else (float(arr.mean()), float(arr.std()))


def grid(cells: dict, counts, seeds) -> dict:
    """Per K: the seeds' mean Dice values, and their mean and std."""
    table = {}
    for k in counts:
        values = [cells[(k, s)]["summary"]["mean_dice"] for s in seeds if (k, s) in cells]
        mean, std = mean_std(values)
        table[k] = {"values": values, "mean": mean, "std": std}
    return table


def paired_delta(cells: dict, base: dict, counts, seeds) -> dict:
    """Per K: mean ± std over seeds of (method − scratch), paired by seed."""
    table = {}
    for k in counts:
        diffs = [cells[(k, s)]["summary"]["mean_dice"] - base[(k, s)]["summary"]["mean_dice"]
                 for s in seeds if (k, s) in cells and (k, s) in base]
        mean, std = mean_std(diffs)
        table[k] = {"values": diffs, "mean": mean, "std": std}
    return table


def structure_means(found: dict, k: int, seeds) -> dict:
    """Per method: each structure's Dice at ``k``, averaged over seeds (cells present only)."""
    methods = {}
    for method, cells in found.items():
        chosen = [cells[(k, s)] for s in seeds if (k, s) in cells]
        names = list(dict.fromkeys(n for c in chosen for n in c["summary"]["structures"]))
        methods[method] = {n: mean_std([c["summary"]["structures"][n]["dice_mean"] for c in chosen
                                        if n in c["summary"]["structures"]])[0] for n in names}
    return {"k": k, "methods": methods} if methods else {}


def write_results(out: Path, plan: StudyData, config: StudyConfig) -> dict:
    """Write ``out/results/`` (CSV, table.md, learning_curve.png, report.html, summary.json); return the summary."""
    found = collect(out, config)
    folder = out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    counts, ft_counts, seeds = config.label_counts, config.finetuned_counts, config.seeds
    summary = {
        "probe": {m: grid(c, counts, seeds) for m, c in found["probe"].items()},
        "finetune": {m: grid(c, ft_counts, seeds) for m, c in found["finetune"].items()},
        "floors": {n: (grid(c, counts, seeds) if None not in c else {"all": {"mean": c[None]["summary"]["mean_dice"]}})
                   for n, c in found["floors"].items()},
        "timings_s": _timings(found),
        "data": plan.summary(),
        "config": {"methods": list(config.methods), "label_counts": list(counts), "finetune_label_counts":
                   list(ft_counts), "seeds": list(seeds), "preset": config.preset,
                   "pretrain_steps": config.pretrain_steps, "finetune_steps": config.finetune_steps},
    }
    for kind in ("probe", "finetune"):
        base = found[kind].get("scratch")
        if base:
            summary[f"{kind}_delta_vs_scratch"] = {
                m: paired_delta(c, base, counts if kind == "probe" else ft_counts, seeds)
                for m, c in found[kind].items() if m != "scratch"}
    summary["probe_structures"] = structure_means(found["probe"], max(counts), seeds)
    summary["finetune_structures"] = structure_means(found["finetune"], max(ft_counts), seeds) if ft_counts else {}
    _write_csv(folder / "results.csv", found)
    tables = _tables(summary, counts, ft_counts)
    (folder / "table.md").write_text(_markdown(tables, summary) + "\n")
    plot = learning_curve(summary, counts, folder / "learning_curve.png")
    write_report(folder / "report.html", "S2DC study: does pretraining pay off?", [
        Section("Setup", paragraphs=[_setup_text(summary)]),
        *[Section(title, tables=[(header, rows)]) for title, header, rows in tables],
        Section("Learning curve", images=[(plot, "mean foreground Dice vs labelled cases")]),
    ])
    write_json(folder / "summary.json", _jsonable(summary))
    return summary


def learning_curve(summary: dict, counts, path: Path) -> Path:
    """Mean Dice vs K per method (probe: lines; fine-tune: squares), ± std over seeds; floors dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {}
    for method, table in summary["probe"].items():
        ks = [k for k in counts if table[k]["mean"] is not None]
        line = ax.errorbar(ks, [table[k]["mean"] for k in ks], [table[k]["std"] for k in ks], marker="o",
                           capsize=3, label=f"{method} (linear probe)")
        colours[method] = line[0].get_color()
    for method, table in summary["finetune"].items():
        ks = [k for k in table if table[k]["mean"] is not None]
        ax.errorbar(ks, [table[k]["mean"] for k in ks], [table[k]["std"] for k in ks], marker="s", ls="none",
                    markersize=8, capsize=3, color=colours.get(method), label=f"{method} (fine-tuned)")
    for name, table in summary["floors"].items():
        if "all" in table:
            ax.axhline(table["all"]["mean"], ls=":", color="grey", label=name)
        else:
            ks = [k for k in counts if table[k]["mean"] is not None]
            ax.plot(ks, [table[k]["mean"] for k in ks], ls="--", color="black", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(counts), [str(k) for k in counts])
    ax.set_xlabel("labelled cases K")
    ax.set_ylabel("mean foreground Dice (test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tables(summary: dict, counts, ft_counts) -> list[tuple[str, list[str], list[list[str]]]]:
    probe_rows = [[m] + [_pm(t[k]) for k in counts] for m, t in summary["probe"].items()]
    probe_rows += [[n] + ([_pm(t[k]) for k in counts] if "all" not in t else [_f(t["all"]["mean"])] * len(counts))
                   for n, t in summary["floors"].items()]
    tables = [("Linear probe on the frozen encoder: mean foreground Dice (mean ± std over seeds)",
               ["method"] + [f"K={k}" for k in counts], probe_rows)]
    if summary.get("probe_delta_vs_scratch"):
        tables.append(("Linear probe: Δ Dice vs scratch, paired by seed",
                       ["method"] + [f"K={k}" for k in counts],
                       [[m] + [_pm(t[k], signed=True) for k in counts]
                        for m, t in summary["probe_delta_vs_scratch"].items()]))
    if summary["finetune"]:
        tables.append(("Fine-tuned: mean foreground Dice (mean ± std over seeds)", ["method"] +
                       [f"K={k}" for k in ft_counts], [[m] + [_pm(t[k]) for k in ft_counts]
                                                       for m, t in summary["finetune"].items()]))
    if summary.get("finetune_delta_vs_scratch"):
        tables.append(("Fine-tuned: Δ Dice vs scratch, paired by seed", ["method"] + [f"K={k}" for k in ft_counts],
                       [[m] + [_pm(t[k], signed=True) for k in ft_counts]
                        for m, t in summary["finetune_delta_vs_scratch"].items()]))
    for kind, label in (("probe", "Linear probe"), ("finetune", "Fine-tuned")):
        if summary.get(f"{kind}_structures"):
            per = summary[f"{kind}_structures"]
            k = per["k"]
            names = list(dict.fromkeys(n for t in per["methods"].values() for n in t))
            tables.append((f"{label} at K={k}: Dice per structure (mean over seeds and test cases)",
                           ["structure"] + list(per["methods"]),
                           [[n] + [_f(t.get(n)) for t in per["methods"].values()] for n in names]))
    timings = summary["timings_s"]
    tables.append(("Wall time (s)", ["method", "pretrain", "probe cell (mean)", "fine-tune cell (mean)"],
                   [[m, _f(t.get("pretrain"), 0), _f(t.get("probe"), 1), _f(t.get("finetune"), 0)]
                    for m, t in timings.items()]))
    return tables


def _markdown(tables, summary: dict) -> str:
    parts = [_setup_text(summary)]
    for title, header, rows in tables:
        parts.append(f"\n**{title}**\n")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "---|" * len(header))
        parts += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(parts)


def _setup_text(summary: dict) -> str:
    c, d = summary["config"], summary["data"]
    return (f"Preset {c['preset']}; pretraining {c['pretrain_steps']} steps per method on "
            f"{len(d['pretrain_images'])} unlabelled images (never a test image); fine-tuning {c['finetune_steps']} "
            f"steps; K labelled cases = the first K of {', '.join(d['labelled'])}; test cases "
            f"{', '.join(d['test'])}; seeds {', '.join(map(str, c['seeds']))}.")


def _timings(found: dict) -> dict:
    out: dict = {}
    for method, cell in found["pretrain"].items():
        out.setdefault(method, {})["pretrain"] = cell["seconds"]
    for kind in ("probe", "finetune"):
        for method, cells in found[kind].items():
            out.setdefault(method, {})[kind] = float(np.mean([c["seconds"] for c in cells.values()]))
    return out


def _write_csv(path: Path, found: dict) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["evaluation", "method", "k", "seed", "structure", "dice_mean_over_cases", "n_cases"])
        groups = [("probe", found["probe"]), ("finetune", found["finetune"]), ("floor", found["floors"])]
        for kind, methods in groups:
            for method, cells in methods.items():
                for key, cell in sorted(cells.items(), key=lambda kv: (kv[0] is not None, kv[0] or (0, 0))):
                    k, seed = key if key is not None else ("", "")
                    for name, stats in cell["summary"]["structures"].items():
                        writer.writerow([kind, method, k, seed, name, _f(stats["dice_mean"], 4), stats["n"]])
                    writer.writerow([kind, method, k, seed, "mean", _f(cell["summary"]["mean_dice"], 4), ""])


def _pm(stats: dict, signed: bool = False) -> str:
    if stats["mean"] is None:
        return "-"
    fmt = "+.3f" if signed else ".3f"
    return f"{stats['mean']:{fmt}} ± {stats['std']:.3f} (n={len(stats['values'])})"


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
