"""Turns the suite's raw JSON lines (in WORK) into bench/results/<date>.md and
<date>-throughput.svg. Usage: report.py WORK OUT_MD OUT_SVG"""
import json
import os
import sys


def lines(work, name):
    p = os.path.join(work, name)
    if not os.path.exists(p):
        return []
    out = []
    for line in open(p):
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def ratio(a, b):
    return a / b if a and b else None


def row(figure, basalt, peer, r, goal, met, note=""):
    fmt = lambda x: "—" if x is None else (f"{x:,.1f}" if isinstance(x, float) else str(x))
    verdict = "n/a" if met is None else ("**met**" if met else "**missed**")
    return f"| {figure} | {fmt(basalt)} | {fmt(peer)} | {fmt(r) if r is None else f'{r:.2f}×'} | {goal} | {verdict} | {note} |"


def svg(basalt, llama, path):
    W, H, L, R, T, B = 640, 400, 70, 150, 40, 50
    xs = [1, 2, 4, 8]
    ymax = max([p["aggregate_tok_s"] for p in basalt + llama] + [1]) * 1.15
    px = lambda c: L + (xs.index(c) if c in xs else 0) * (W - L - R) / (len(xs) - 1)
    py = lambda v: H - B - v / ymax * (H - T - B)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W/2}" y="22" font-size="14" text-anchor="middle">Output tokens/s of all streams together, against concurrency</text>']
    for i in range(6):
        v = ymax * i / 5
        parts.append(f'<line x1="{L}" x2="{W-R}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{L-8}" y="{py(v)+4:.1f}" text-anchor="end">{v:.0f}</text>')
    for c in xs:
        parts.append(f'<text x="{px(c):.1f}" y="{H-B+18}" text-anchor="middle">{c}</text>')
    parts.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">concurrent streams</text>')
    parts.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">tokens/s</text>')
    for name, pts, color, y in (("Basalt", basalt, "#c0392b", T + 20), ("llama-server -np 8", llama, "#2471a3", T + 40)):
        pts = sorted((p for p in pts if p["concurrency"] in xs), key=lambda p: p["concurrency"])
        if pts:
            d = " ".join(f'{px(p["concurrency"]):.1f},{py(p["aggregate_tok_s"]):.1f}' for p in pts)
            parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
            for p in pts:
                parts.append(f'<circle cx="{px(p["concurrency"]):.1f}" cy="{py(p["aggregate_tok_s"]):.1f}" r="3.5" fill="{color}"/>')
        parts.append(f'<line x1="{W-R+12}" x2="{W-R+32}" y1="{y-4}" y2="{y-4}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{W-R+38}" y="{y}">{name}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts) + "\n")


def main():
    work, out_md, out_svg = sys.argv[1:4]
    meta = json.load(open(os.path.join(work, "meta.json")))
    b_tok = lines(work, "basalt-tokens.jsonl")
    l1 = lines(work, "llama-np1-tokens.jsonl")
    l8 = lines(work, "llama-np8-tokens.jsonl")
    cache = (lines(work, "basalt-ttft-cache.jsonl") or [{}])[0]
    gw_b = {p["connections"]: p for p in lines(work, "gateway-basalt.jsonl")}
    gw_l = {p["connections"]: p for p in lines(work, "gateway-litellm.jsonl")}
    emb = {p["name"]: p for p in lines(work, "basalt-embed.jsonl") + lines(work, "st-embed.jsonl")}

    at = lambda pts, c: next((p for p in pts if p["concurrency"] == c), {})
    rows = []
    b1, p1 = at(b_tok, 1), at(l1, 1)
    for key, label in (("decode_tok_s", "decode tok/s, 1 stream"), ("prefill_tok_s", "prefill tok/s, 1 stream")):
        r = ratio(b1.get(key), p1.get(key))
        rows.append(row(label, b1.get(key), p1.get(key), r, "≥ 0.95×", None if r is None else r >= 0.95,
                        f"output tokens {b1.get('output_tokens')} vs {p1.get('output_tokens')}; "
                        f"prompt tokens {b1.get('prompt_tokens')} vs {p1.get('prompt_tokens')}"))
    b8, p8 = at(b_tok, 8), at(l8, 8)
    r = ratio(b8.get("aggregate_tok_s"), p8.get("aggregate_tok_s"))
    rows.append(row("aggregate tok/s, 8 streams", b8.get("aggregate_tok_s"), p8.get("aggregate_tok_s"), r,
                    "≥ 1.0×", None if r is None else r >= 1.0,
                    f"output tokens {b8.get('output_tokens')} vs {p8.get('output_tokens')}"))
    if "cached_ttft_ms" in cache:
        read = cache.get("cache_read_tokens") or 0
        rows.append(row("TTFT ms, cached ~2k-token prefix (peer: same request uncached)",
                        cache["cached_ttft_ms"], cache["uncached_ttft_ms"], cache["ratio"], "≤ 0.1×",
                        cache["ratio"] <= 0.1,
                        f"cacheReadInputTokens {read}, input tokens {cache.get('uncached_input_tokens')}"
                        + ("" if read else "; usage reported no cache read on the cached calls")))
    else:
        rows.append(row("TTFT, cached ~2k-token prefix", None, None, None, "≤ 0.1×", False,
                        cache.get("error", "not measured")))
    for c in (1, 16, 256):
        b, l = gw_b.get(c, {}), gw_l.get(c, {})
        r = ratio(b.get("rps"), l.get("rps"))
        rows.append(row(f"gateway req/s, {c} conn (CountTokens vs LiteLLM mock)", b.get("rps"), l.get("rps"), r,
                        "≥ 20×", None if r is None else r >= 20,
                        f"p50/p99 ms: Basalt {b.get('p50_ms')}/{b.get('p99_ms')}, "
                        f"LiteLLM {l.get('p50_ms')}/{l.get('p99_ms')}; errors {b.get('errors')}/{l.get('errors')}"))
    b = gw_b.get(1, {})
    rows.append(row("gateway p99 ms, 1 conn", b.get("p99_ms"), gw_l.get(1, {}).get("p99_ms"), None, "< 1 ms",
                    None if b.get("p99_ms") is None else b["p99_ms"] < 1.0, "absolute goal, Basalt only"))
    bc, st, tl = emb.get("basalt-cohere", {}), emb.get("sentence-transformers", {}), emb.get("basalt-titan-loop", {})
    r = ratio(bc.get("sentences_s"), st.get("sentences_s"))
    rows.append(row("embeddings sentences/s, batch 32 (Cohere InvokeModel vs sentence-transformers)",
                    bc.get("sentences_s"), st.get("sentences_s"), r, "≥ 2×", None if r is None else r >= 2,
                    f"torch {st.get('torch')}, {st.get('torch_threads')} threads"))
    rows.append(row("embeddings sentences/s, seed loop (Titan v2, one call per text)", tl.get("sentences_s"),
                    st.get("sentences_s"), ratio(tl.get("sentences_s"), st.get("sentences_s")), "—", None,
                    "what the seed's batch_embeddings gets"))

    md = [f"# Benchmark run {meta['date']}", "",
          f"Machine: {meta['cpu']}, {meta['cores']} cores, {meta['mem']}. Threads: {meta['threads']} "
          f"for Basalt, llama-server and torch. Basalt: `{meta['basalt']}`; llama-server {meta['llama']}; "
          f"LiteLLM {meta['litellm']}.", "",
          "| figure | Basalt | peer | ratio | goal | verdict | notes |", "|---|---|---|---|---|---|---|", *rows, "",
          "Tokens/s against concurrency (aggregate output tokens / batch wall time; llama-server `-np 8`):", "",
          "| streams | Basalt agg tok/s | Basalt decode/stream | llama-server agg tok/s | llama-server decode/stream |",
          "|---|---|---|---|---|"]
    for c in (1, 2, 4, 8):
        b, l = at(b_tok, c), at(l8, c)
        md.append(f"| {c} | {b.get('aggregate_tok_s', '—')} | {b.get('decode_tok_s', '—')} | "
                  f"{l.get('aggregate_tok_s', '—')} | {l.get('decode_tok_s', '—')} |")
    md += ["", f"![tokens/s against concurrency]({os.path.basename(out_svg)})", "",
           "Raw JSON lines of every part:", "", "```"]
    for f in sorted(os.listdir(work)):
        if f.endswith(".jsonl"):
            for line in open(os.path.join(work, f)):
                if line.startswith("{"):
                    md.append(f"{f}: {line.strip()}")
    md.append("```")
    open(out_md, "w").write("\n".join(md) + "\n")
    svg(b_tok, l8, out_svg)
    print("\n".join(md))


if __name__ == "__main__":
    main()
