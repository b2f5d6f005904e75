"""Held-out precision and recall of the denied-topic and content-filter policies,
measured end to end through ApplyGuardrail on a fresh `basalt serve`.

`basalt guardrails calibrate` reports the same figures from its own scoring of the
held-out texts; this script asks the server, so it measures whatever pieces the server
scores a text by (windows, and sentences alone). Run from the repository root:

    BASALT_BIN=target/release/basalt BASALT_MODELS_DIR=~/.cache/basalt/models \
        .venv/bin/python crates/basalt-guardrails/scripts/heldout_via_api.py [per-text.json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "crates/basalt-guardrails/data"
sys.path.insert(0, str(ROOT / "tests/integration"))

import harness  # noqa: E402

CATEGORIES = ["HATE", "INSULTS", "SEXUAL", "VIOLENCE", "MISCONDUCT", "PROMPT_ATTACK"]
RANK = {"NONE": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3}
# A filter of this strength acts on this confidence and above (Bedrock's table).
CATCHES = {"LOW": 3, "MEDIUM": 2, "HIGH": 1}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ratio(a: int, b: int) -> str:
    return "n/a" if b == 0 else f"{a / b:.2f}"


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        srv = harness.BasaltServer(Path(work), name="heldout").start()
        try:
            harness.apply_client_env(srv, Path(work) / "aws")
            control = srv.client("bedrock")
            runtime = srv.client("bedrock-runtime")
            report(control, runtime)
        finally:
            srv.stop()


def create(control, **policies) -> str:
    return control.create_guardrail(
        name=f"heldout-{uuid.uuid4().hex[:8]}", blockedInputMessaging="no",
        blockedOutputsMessaging="no", **policies)["guardrailId"]


def apply(runtime, gid: str, text: str) -> dict:
    return runtime.apply_guardrail(
        guardrailIdentifier=gid, guardrailVersion="DRAFT", source="INPUT",
        content=[{"text": {"text": text}}], outputScope="FULL")["assessments"][0]


def report(control, runtime) -> None:
    items = [i for i in read_jsonl(DATA / "content_filters.jsonl") if i["split"] != "train"]
    gid = create(control, contentPolicyConfig={"filtersConfig": [
        {"type": c, "inputStrength": "HIGH",
         "outputStrength": "NONE" if c == "PROMPT_ATTACK" else "HIGH"} for c in CATEGORIES]})
    confidence = []
    for item in items:
        filters = apply(runtime, gid, item["text"]).get("contentPolicy", {}).get("filters", [])
        confidence.append({f["type"]: RANK[f["confidence"]] for f in filters})
    if len(sys.argv) > 1:
        # Per-text confidences, to compare two builds text by text.
        Path(sys.argv[1]).write_text(json.dumps(
            [{"text": i["text"], "labels": i["labels"], "confidence": c}
             for i, c in zip(items, confidence)], indent=1))
    print(f"### Content filters (held-out: {len(items)} texts)\n")
    print("| Category | Positives | LOW: P / R | MEDIUM: P / R | HIGH: P / R |")
    print("|---|---|---|---|---|")
    for c in CATEGORIES:
        actual = [c in i["labels"] for i in items]
        row = f"| {c} | {sum(actual)} |"
        for strength in ["LOW", "MEDIUM", "HIGH"]:
            predicted = [conf.get(c, 0) >= CATCHES[strength] for conf in confidence]
            tp = sum(p and a for p, a in zip(predicted, actual))
            fp = sum(p and not a for p, a in zip(predicted, actual))
            fn = sum(a and not p for p, a in zip(predicted, actual))
            row += f" {ratio(tp, tp + fp)} / {ratio(tp, tp + fn)} |"
        print(row)

    sets = read_jsonl(DATA / "denied_topics.jsonl")
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    held = 0
    for s in sets:
        t = s["topic"]
        gid = create(control, topicPolicyConfig={"topicsConfig": [{
            "name": t["name"], "definition": t["definition"],
            "examples": t.get("examples", []), "type": "DENY"}]})
        for text in s["texts"]:
            if text["split"] == "train":
                continue
            held += 1
            topics = apply(runtime, gid, text["text"]).get("topicPolicy", {}).get("topics", [])
            predicted = any(x["detected"] for x in topics)
            tally = tallies[t["name"]]
            tally[0] += predicted and text["match"]
            tally[1] += predicted and not text["match"]
            tally[2] += text["match"] and not predicted
    print(f"\n### Denied topics (held-out: {held} texts)\n")
    print("| Topic | Precision | Recall |\n|---|---|---|")
    total = [0, 0, 0]
    for name in sorted(tallies):
        tp, fp, fn = tallies[name]
        total = [a + b for a, b in zip(total, tallies[name])]
        print(f"| {name} | {ratio(tp, tp + fp)} | {ratio(tp, tp + fn)} |")
    tp, fp, fn = total
    print(f"| **all** | **{ratio(tp, tp + fp)}** | **{ratio(tp, tp + fn)}** |")


if __name__ == "__main__":
    main()
