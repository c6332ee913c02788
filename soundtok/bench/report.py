"""Summaries of a :class:`~soundtok.bench.run.BenchRun` and the files a run writes: ``bench.json``,
``bench.csv`` and a self-contained ``report.html`` (inline CSS, JavaScript and SVG plots, no network) with
``audio/`` and ``spec/`` beside it for the listening section.
"""

from __future__ import annotations

import csv
import html
import json
import math
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soundtok.bench.data import RATE
from soundtok.bench.run import PRIMARY, BenchRun, safe_name
from soundtok.eval import HIGHER, METRICS
from soundtok.eval.asr import pooled_wer
from soundtok.eval.stats import mean_ci

#: bitrate bands of the ranking, kbit/s (lower bound inclusive)
BANDS = ((0.0, 1.0, "< 1 kbit/s"), (1.0, 3.0, "1-3 kbit/s"), (3.0, 8.0, "3-8 kbit/s"), (8.0, math.inf, ">= 8 kbit/s"))


def _higher(metric: str) -> bool:
    return METRICS[metric].direction == HIGHER


def summarise(run: BenchRun) -> dict[str, Any]:
    """Per system: identity, costs, token statistics and, per domain and metric, mean, 95% interval half-width
    and clip count (dWER: pooled over the domain's clips, all word errors / all words, no interval)."""
    systems = []
    for e in run.entries:
        domains: dict[str, dict[str, Any]] = {}
        for domain, names in run.metrics.items():
            clips = [c for c in e.clips.values() if c["domain"] == domain]
            if not clips:
                continue
            cells: dict[str, Any] = {}
            for name in names:
                if name == "dwer":
                    pairs = [
                        (c["transcripts"]["ref"], c["transcripts"]["deg"])
                        for c in clips
                        if {"ref", "deg"} <= set(c["transcripts"]) and c["transcripts"]["ref"].strip()
                    ]
                    cells[name] = {"mean": pooled_wer(pairs), "ci": None, "n": len(pairs)} if pairs else None
                    continue
                values = [c["metrics"][name] for c in clips if c["metrics"].get(name) is not None]
                reasons = "; ".join(sorted({c["reasons"][name] for c in clips if name in c["reasons"]}))
                if values:
                    mean, half = mean_ci(values)
                    cells[name] = {"mean": mean, "ci": None if math.isnan(half) else half, "n": len(values)}
                else:
                    cells[name] = {"mean": None, "ci": None, "n": 0}
                if reasons:
                    cells[name]["reason"] = reasons
            domains[domain] = cells
        systems.append(
            {**e.system, **e.cost, **e.tokens, "domains": domains, "cached": e.cached, "computed_at": e.computed_at}
        )
    return {
        "data": {
            "name": run.clipset.name,
            "description": run.clipset.description,
            "hash": run.clipset.hash,
            "clips": len(run.clipset.clips),
            "seconds": run.clipset.seconds,
            "domains": {d: sum(c.domain == d for c in run.clipset.clips) for d in run.clipset.domains},
        },
        "metrics": {d: list(m) for d, m in run.metrics.items()},
        "primary": {d: PRIMARY[d] for d in run.metrics},
        "systems": systems,
        "failed": run.failed,
        "computed": run.computed,
        "cached": len(run.entries) - run.computed,
        "notes": run.notes,
    }


def ranking(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per domain and bitrate band, the systems in order of the domain's primary metric (best first)."""
    rows = []
    for domain, metric in summary["primary"].items():
        for low, high, label in BANDS:
            scored = []
            for s in summary["systems"]:
                cell = s["domains"].get(domain, {}).get(metric)
                if low <= s["bitrate"] / 1000 < high and cell and cell["mean"] is not None:
                    scored.append((cell["mean"], s["name"]))
            if scored:
                scored.sort(reverse=_higher(metric))
                rows.append(
                    {
                        "domain": domain,
                        "band": label,
                        "metric": metric,
                        "order": [{"system": n, "value": v} for v, n in scored],
                    }
                )
    return rows


def write_csv(summary: dict[str, Any], path: Path) -> None:
    """One row per (system, domain, metric): long format, easy to load into pandas or a spreadsheet."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "system",
                "kind",
                "fingerprint",
                "bitrate",
                "token_rate",
                "parameters",
                "encode_rtf",
                "decode_rtf",
                "peak_mib",
                "domain",
                "metric",
                "mean",
                "ci95",
                "n",
            ]
        )
        for s in summary["systems"]:
            head = [
                s["name"],
                s["kind"],
                s["fingerprint"],
                s["bitrate"],
                s["token_rate"],
                s["parameters"],
                s["encode_rtf"],
                s["decode_rtf"],
                s["peak_mib"],
            ]
            for domain, cells in s["domains"].items():
                for metric, cell in cells.items():
                    c = cell or {"mean": None, "ci": None, "n": 0}
                    w.writerow([*head, domain, metric, c["mean"], c["ci"], c["n"]])


# ------------------------------------------------------------------------------------------------ pictures
_CMAP = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an ``[H, W, 3]`` uint8 image (no imaging library needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def spectrogram_png(wav: torch.Tensor, floor_db: float = 80.0) -> bytes:
    """The log-mel spectrogram of a 16 kHz clip as a PNG (low frequencies at the bottom, 80 dB range)."""
    from soundtok.audio.mel import MelConfig, log_mel

    mel = log_mel(wav.float()[None], MelConfig(sample_rate=RATE))[0].numpy()  # [n_mels, frames], natural log
    db = mel * (10 / math.log(10)) * 2  # power dB of the magnitude
    top = db.max() if db.size else 0.0
    x = np.clip((db - (top - floor_db)) / floor_db, 0, 1)[::-1]
    x = np.repeat(x, 2, axis=0)
    pos = x * (len(_CMAP) - 1)
    i = np.minimum(pos.astype(int), len(_CMAP) - 2)
    frac = (pos - i)[..., None]
    rgb = _CMAP[i] * (1 - frac) + _CMAP[i + 1] * frac
    return png_bytes(rgb.round().astype(np.uint8))


def _mean(system: dict[str, Any], domain: str, metric: str) -> float | None:
    cell = system["domains"].get(domain, {}).get(metric)
    return None if cell is None else cell["mean"]


def _svg_scatter(points: list[tuple[float, float | None, str]], x_label: str, y_label: str, title: str) -> str:
    """An inline SVG scatter plot with a log-scaled x axis; each point labelled (points without a value skipped)."""
    w, h, left, right, top, bottom = 720, 380, 64, 170, 30, 48
    pts = [(x, y, n) for x, y, n in points if y is not None and x > 0 and math.isfinite(y)]
    if not pts:
        return f'<p class="empty">{html.escape(title)}: nothing to plot</p>'
    lx = [math.log10(x) for x, _, _ in pts]
    ys = [y for _, y, _ in pts]
    x0, x1 = math.floor(min(lx)), math.ceil(max(lx))
    x1 = max(x1, x0 + 1)
    pad = (max(ys) - min(ys)) * 0.08 or 0.05
    y0, y1 = min(ys) - pad, max(ys) + pad

    def px(v: float) -> float:
        return left + (math.log10(v) - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)

    out = [
        f'<svg class="plot" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>',
        f'<text x="{w / 2}" y="18" text-anchor="middle" class="t">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" class="frame"/>',
    ]
    for e in range(x0, x1 + 1):
        x = left + (e - x0) / (x1 - x0) * (w - left - right)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{h - bottom}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="middle">{10.0**e:g}</text>')
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        out.append(f'<line x1="{left}" y1="{py(v):.1f}" x2="{w - right}" y2="{py(v):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text x="{(w - right + left) / 2}" y="{h - 8}" text-anchor="middle">{html.escape(x_label)}</text>')
    out.append(
        f'<text transform="translate(16 {(h - bottom + top) / 2}) rotate(-90)" text-anchor="middle">'
        f"{html.escape(y_label)}</text>"
    )
    for x, y, name in pts:
        out.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" class="pt"><title>{html.escape(name)}: '
            f"{y:.3f}</title></circle>"
        )
        out.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) + 4:.1f}" class="lab">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ html
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0 16px}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f4f4;cursor:pointer;user-select:none;white-space:nowrap}th.asc:after{content:" \\25B2"}
th.desc:after{content:" \\25BC"}td:first-child,th:first-child{text-align:left}.ci{color:#888;font-size:12px}
.muted{color:#777}.plot text{font-size:11px;fill:#333}.plot .t{font-size:13px;font-weight:600}
.plot .frame{fill:none;stroke:#999}.plot .grid{stroke:#eee}.plot .pt{fill:#c0392b;opacity:.8}
.plot .lab{font-size:10px;fill:#555}audio{height:32px;width:260px}img.spec{height:80px;image-rendering:pixelated}
"""
_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(asc ? 'asc' : 'desc');
      function key(r) {
        var c = r.cells[col], v = c.getAttribute('data-v');
        if (v === null) return c.textContent.trim().toLowerCase();
        return v === '' ? null : parseFloat(v);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        var d = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return '<td data-v="">-</td>'
    return f'<td data-v="{v:.6g}">{v:.{digits}f}</td>'


def _table(head: list[str], rows: list[str], cls: str = "sortable") -> str:
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _quality_table(summary: dict[str, Any], domain: str) -> str:
    names = summary["metrics"][domain]
    head = ["system", "kbit/s", "tokens/s"] + [f"{n} {'↑' if _higher(n) else '↓'}" for n in names]
    rows = []
    for s in summary["systems"]:
        cells = s["domains"].get(domain)
        if cells is None:
            continue
        tds = [f"<td>{html.escape(s['name'])}</td>", _num(s["bitrate"] / 1000, 2), _num(s["token_rate"], 1)]
        for n in names:
            c = cells.get(n)
            if not c or c["mean"] is None:
                why = html.escape((c or {}).get("reason", "not computed"))
                tds.append(f'<td data-v="" title="{why}">n/a</td>')
                continue
            ci = f' <span class="ci">±{c["ci"]:.3f}</span>' if c["ci"] is not None else ""
            if c["n"] < summary["data"]["domains"][domain]:  # the metric could not score some clips
                ci += f' <span class="ci" title="{html.escape(c.get("reason", ""))}">(n={c["n"]})</span>'
            tds.append(f'<td data-v="{c["mean"]:.6g}">{c["mean"]:.3f}{ci}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return _table(head, rows)


def _cost_table(summary: dict[str, Any]) -> str:
    head = [
        "system",
        "kind",
        "kbit/s",
        "tokens/s",
        "parameters (M)",
        "encode RTF",
        "decode RTF",
        "peak MiB",
        "codebook usage",
        "entropy kbit/s",
        "fingerprint",
    ]
    rows = []
    for s in summary["systems"]:
        usage = s.get("codebook_usage")
        usage_mean = sum(usage) / len(usage) if usage else None
        params = s["parameters"] / 1e6 if s["parameters"] is not None else None
        entropy = s.get("entropy_bitrate")
        rows.append(
            "<tr>"
            + "".join(
                [
                    f"<td>{html.escape(s['name'])}</td>",
                    f"<td>{html.escape(s['kind'])}</td>",
                    _num(s["bitrate"] / 1000, 2),
                    _num(s["token_rate"], 1),
                    _num(params, 2),
                    _num(s["encode_rtf"], 4),
                    _num(s["decode_rtf"], 4),
                    _num(s["peak_mib"], 0),
                    _num(usage_mean, 3),
                    _num(entropy / 1000 if entropy is not None else None, 2),
                    f"<td><code>{html.escape(s['fingerprint'])}</code></td>",
                ]
            )
            + "</tr>"
        )
    return _table(head, rows)


def _ranking_table(summary: dict[str, Any]) -> str:
    rows = []
    for r in ranking(summary):
        order = ", ".join(f"{html.escape(o['system'])} ({o['value']:.3f})" for o in r["order"])
        rows.append(
            f"<tr><td>{r['domain']}</td><td>{r['band']}</td><td>{r['metric']}</td>"
            f'<td style="text-align:left">{order}</td></tr>'
        )
    return _table(["domain", "bitrate band", "by", "best first"], rows)


def _recorded_section(recorded: list[dict[str, Any]]) -> str:
    if not recorded:
        return '<p class="muted">No recorded probe, in-context-learning or audio-LLM results were found.</p>'
    parts = []
    for block in recorded:
        rows = ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in block["rows"]]
        parts.append(
            f'<h3>{html.escape(block["title"])}</h3><p class="muted">{html.escape(block["source"])}'
            f"</p>{_table(block['head'], rows)}"
        )
    return "\n".join(parts)


def write_report(
    run: BenchRun,
    out: Path,
    *,
    listen: int | None = None,
    command: str = "",
    recorded: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write bench.json, bench.csv and report.html (+ audio/, spec/) into ``out``; return the summary.

    listen: clips per domain in the listening section (None: all; 0: none, no audio copied).
    """
    from soundtok.audio.io import save_audio

    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(run)
    summary["command"] = command
    summary["recorded"] = recorded or []
    (out / "bench.json").write_text(json.dumps(summary, indent=1))
    write_csv(summary, out / "bench.csv")
    for sub in ("audio", "spec"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir()

    plots = []
    for domain, metric in summary["primary"].items():
        pts = [(s["bitrate"] / 1000, _mean(s, domain, metric), s["name"]) for s in summary["systems"]]
        plots.append(_svg_scatter(pts, "bitrate, kbit/s (log)", metric, f"{domain}: {metric} against bitrate"))
    speech = "speech" if "speech" in summary["primary"] else next(iter(summary["primary"]), None)
    if speech is not None:
        metric = summary["primary"][speech]
        pts = [(s["encode_rtf"] + s["decode_rtf"], _mean(s, speech, metric), s["name"]) for s in summary["systems"]]
        plots.append(
            _svg_scatter(pts, "encode + decode time / audio time (log)", metric, f"{speech}: {metric} against compute")
        )

    listening = []
    by_domain: dict[str, int] = {}
    for clip in run.clipset.clips:
        if listen is not None and by_domain.get(clip.domain, 0) >= listen:
            continue
        by_domain[clip.domain] = by_domain.get(clip.domain, 0) + 1
        base = safe_name(clip.id)
        save_audio(out / "audio" / f"{base}.original.flac", clip.wav, RATE, force=True)
        (out / "spec" / f"{base}.original.png").write_bytes(spectrogram_png(clip.wav))
        rows = [_listen_row("original", "", f"{base}.original")]
        for e in run.entries:
            src = e.audio_path(clip.id)
            if not src.is_file():
                continue
            stem = f"{base}.{safe_name(e.system['name'])}"
            shutil.copyfile(src, out / "audio" / f"{stem}.flac")
            from soundtok.audio.io import load_audio

            wav, _ = load_audio(src, sample_rate=RATE, channels=1)
            (out / "spec" / f"{stem}.png").write_bytes(spectrogram_png(wav[0]))
            rows.append(_listen_row(e.system["name"], f"{e.system['bitrate'] / 1000:.2f}", stem))
        text = f" — “{html.escape(clip.text)}”" if clip.text else ""
        listening.append(
            f"<h3>{html.escape(clip.id)} ({clip.domain}, {clip.seconds:.1f} s){text}</h3>"
            + _table(["system", "kbit/s", "listen", "log-mel spectrogram"], rows, "listen")
        )

    data = summary["data"]
    failed = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in summary["failed"].items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>soundtok bench: {html.escape(data["name"])}</title>
<style>{_CSS}</style></head><body>
<h1>soundtok bench — {html.escape(data["name"])}</h1>
<p>{html.escape(data["description"])}: {data["clips"]} clips, {data["seconds"]:.1f} s
({", ".join(f"{d} {n}" for d, n in data["domains"].items())}); clip-set hash <code>{data["hash"]}</code>.
{summary["computed"]} system(s) computed in this run, {summary["cached"]} loaded from the cache.</p>
<p class="muted">Command: <code>{html.escape(command)}</code>. Cells are means over clips with the half-width of a
95% t-interval; dWER is pooled over a domain's clips (Whisper's word errors on the decoded clip against its
transcript of the original). Click a column header to sort. With a handful of clips, differences inside the
intervals are not differences.</p>
<h2 id="ranking">Ranking per bitrate band</h2>{_ranking_table(summary)}
<h2 id="quality">Quality per domain</h2>
{"".join(f"<h3>{d}</h3>{_quality_table(summary, d)}" for d in summary["metrics"])}
<h2 id="plots">Plots</h2>{"".join(plots)}
<h2 id="cost">Cost and tokens</h2>{_cost_table(summary)}
<p class="muted">RTF: seconds of compute per second of audio on {html.escape(_first_machine(summary))}
(batch of one clip, after one untimed warm-up call); peak MiB: what a fresh process needs to load the system and
encode + decode the bundled 4.8 s speech clip (its peak resident memory minus that after the imports); codebook
usage: fraction of codes used, mean over levels.</p>
<h2 id="recorded">Probes, in-context learning, audio LLM (recorded)</h2>{_recorded_section(summary["recorded"])}
<h2 id="listen">Listen</h2>{"".join(listening) or '<p class="muted">No clips in the listening section.</p>'}
{f"<h2>Systems that could not run</h2><ul>{failed}</ul>" if failed else ""}
<h2>Notes</h2><ul>{notes}</ul>
<script>{_JS}</script></body></html>
"""
    (out / "report.html").write_text(doc)
    return summary


def _listen_row(name: str, kbps: str, stem: str) -> str:
    return (
        f"<tr><td>{html.escape(name)}</td><td>{kbps}</td>"
        f'<td><audio controls preload="metadata" src="audio/{stem}.flac"></audio></td>'
        f'<td><img class="spec" alt="spectrogram of {html.escape(name)}" src="spec/{stem}.png"></td></tr>'
    )


def _first_machine(summary: dict[str, Any]) -> str:
    machines = sorted({s["machine"] for s in summary["systems"]})
    return "; ".join(machines) if machines else "this machine"
