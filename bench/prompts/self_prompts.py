"""A second distillation prompt set, ``distill-self.jsonl``: requests SmolLM2 wrote itself, templated
requests over many topics, and more code.

    python -m bench.prompts.self_prompts               # writes bench/prompts/distill-self.jsonl

Issue 26 asks for ten times the self-distilled data; seven samples of the 522 prompts of
``distill.jsonl`` gave 588k answer tokens, and more samples of the same prompts add little new.
Here the model writes the requests: for each (topic, kind) pair below, SmolLM2-135M-Instruct is
asked (chat template, temperature 1.0, up to 64 new tokens, 128 for paragraphs; 7.4 minutes here) to write one
request of that kind about that topic; a request is kept if the model finished it, its first paragraph
is 20-600 characters of ASCII text ending a sentence, it is not a refusal, an echo of the
instruction or a meta remark, and it is new (case-insensitive). Two kinds embed a
paragraph the model wrote into a task (summarize it, answer a question about it: the shape of
Spec-Bench's summarization and RAG prompts). Most of what a 135M model writes is odd (it often
answers instead of asking), so the set also holds ``TOPIC_FORMS`` x ``TOPICS``: plain requests
written here over the same topics. Code: prefixes of standard-library *train* files that
``distill.jsonl`` did not use. Nothing held out is among them (``tests/test_prompts.py``).
Records: ``{"id": "self-NNNNN", "prompt": ...}`` and ``{"id": "code2-NNNN", "prefix": ...}``;
the raw generations go to ``--work`` (resumable).
"""

import argparse
import hashlib
import json
import re
from pathlib import Path

import torch

from bench.prompts.make_prompts import code_prefixes
from specdec.demo import load_demo
from specdec.training.distill import distill, read_prompts, render

HERE = Path(__file__).resolve().parent
SAMPLES = 1

TOPICS = [
    "cooking pasta", "baking bread", "vegetarian recipes", "coffee", "tea", "wine regions", "chocolate",
    "travel in Japan", "travel in Italy", "backpacking in South America", "planning a road trip", "airports",
    "ancient Rome", "ancient Egypt", "the Renaissance", "the Industrial Revolution", "World War II",
    "the French Revolution", "the history of the internet", "the space race", "medieval castles",
    "the solar system", "black holes", "volcanoes", "earthquakes", "ocean currents", "climate change",
    "renewable energy", "electric cars", "recycling", "rainforests", "deserts", "coral reefs", "bees",
    "dogs", "cats", "birds migrating", "dinosaurs", "evolution", "DNA", "the human brain", "sleep",
    "nutrition", "running a marathon", "yoga", "strength training", "mental health", "meditation",
    "the common cold", "allergies", "first aid", "personal budgeting", "saving for retirement",
    "the stock market", "cryptocurrency", "starting a small business", "marketing on social media",
    "job interviews", "negotiating a salary", "remote work", "time management", "leadership",
    "team meetings", "customer service", "writing a novel", "poetry", "screenwriting", "journalism",
    "learning Spanish", "learning French", "learning German", "grammar", "public speaking", "debating",
    "philosophy of mind", "ethics", "Greek mythology", "classical music", "jazz", "learning guitar",
    "painting with watercolors", "photography", "film history", "video games", "board games", "chess",
    "football", "basketball", "the Olympic Games", "gardening", "houseplants", "home repair",
    "interior design", "moving to a new city", "raising children", "friendship", "weddings",
    "Python programming", "JavaScript", "SQL databases", "web development", "data science",
    "machine learning", "cybersecurity", "cloud computing", "Linux command line", "git",
    "algorithms", "operating systems", "computer networks", "mobile apps", "spreadsheets",
    "statistics", "probability", "geometry", "algebra", "fractions", "percentages", "unit conversion",
    "physics of motion", "electricity", "magnets", "light and color", "sound", "chemistry in the kitchen",
    "the periodic table", "weather forecasting", "maps and navigation", "economics", "inflation",
    "voting and elections", "human rights", "the United Nations", "law and contracts", "architecture",
    "famous bridges", "trains", "airplanes", "the future of robots", "artificial intelligence",
]
KINDS = {
    "question": "Write one question that a curious person might ask an AI assistant about {topic}. Write only the question.",
    "howto": "Write a request in which a user asks an AI assistant for step-by-step instructions about {topic}. Write only the request.",
    "explain": "Write a request asking an AI assistant to explain something specific about {topic} to a beginner. Write only the request.",
    "writing": "Write a request asking an AI assistant to write a short poem, story, blog post or speech about {topic}. Write only the request.",
    "advice": "Write a message in which someone describes a small problem with {topic} and asks an AI assistant for advice. Write only the message.",
    "math": "Write a short math word problem about {topic} that has a numerical answer. Write only the problem.",
    "compare": "Write a question asking an AI assistant to compare two things related to {topic}. Write only the question.",
    "code": "Write a request asking an AI assistant for a short Python program related to {topic}. Write only the request.",
    "paragraph": "Write a short informative paragraph about {topic}.",
}
TOPIC_FORMS = [
    "What are the most important things a beginner should know about {topic}?",
    "Give me a short beginner's guide to {topic}.", "Write a short poem about {topic}.",
    "Write the opening paragraph of a blog post about {topic}.", "What are common misconceptions about {topic}?",
    "Summarize the history of {topic} in one paragraph.", "Give me three practical tips about {topic}.",
    "Write a very short story that involves {topic}.", "What are the pros and cons of {topic}?",
    "Explain {topic} to a ten-year-old.", "Write a quiz of three questions about {topic}, with answers.",
    "Write a short, upbeat social media post about {topic}.",
]
PARAGRAPH_TASKS = [
    "Summarize the following text in two sentences.\n\n{text}",
    "Read the text below and list its three main points.\n\n{text}",
    "{text}\n\nBased only on the text above, what is its main idea? Explain briefly.",
    "Here is a paragraph:\n\n{text}\n\nRewrite it for a ten-year-old reader.",
]
ECHO = re.compile(r"(?i)(write (a|one|only) (request|question|message|problem)|this (request|question))")
REJECT = re.compile(r"(?i)\b(i'm sorry|i cannot|as an ai|here is|here's|sure[,!]|certainly)\b")


def seed_records() -> list[dict]:
    """The instructions the model answers: one per (topic, kind)."""
    return [{"id": f"seed-{k}-{i:03d}", "prompt": template.format(topic=topic)}
            for i, topic in enumerate(TOPICS) for k, template in KINDS.items()]


def clean(response: str) -> str | None:
    """The request in one finished response (first paragraph, labels and quotes stripped), or None."""
    if "<|im_end|>" not in response:
        return None
    text = response.split("<|im_end|>")[0].strip().split("\n\n")[0].strip()
    text = re.sub(r"^(?i:question|request|problem|message|user)\s*:\s*", "", text).strip().strip('"').strip()
    if not 20 <= len(text) <= 600 or text[-1] not in ".?!)" or REJECT.search(text) or ECHO.match(text):
        return None
    return text if sum(c.isascii() for c in text) >= 0.98 * len(text) else None


def paragraph(response: str) -> str | None:
    """A generated paragraph worth summarizing (200-1500 characters, finished), or None."""
    text = response.split("<|im_end|>")[0].strip()
    return text if 200 <= len(text) <= 1500 and text[-1] in ".!?" and not REJECT.search(text[:80]) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/self-prompts"))
    p.add_argument("--code", type=int, default=300, help="new code prefixes")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(2)
    model, tokenizer, _ = load_demo("smollm2-135m", draft="firp")
    seeds = seed_records()
    raw = args.work / "generations.jsonl"
    args.work.mkdir(parents=True, exist_ok=True)
    for long in (False, True):
        group = [r for r in seeds if r["id"].startswith("seed-paragraph") == long]
        distill(model, tokenizer, group, raw, temperature=1.0, max_new_tokens=128 if long else 64, batch_size=args.batch_size,
                samples=SAMPLES, seed=26, resume=raw.exists())
    rendered = {r["id"]: render(r, tokenizer) for r in seeds}
    old = read_prompts(HERE / "distill.jsonl")
    seen = {r["prompt"].strip().lower() for r in old if "prompt" in r}
    requests = []
    for line in raw.read_text().splitlines():
        record = json.loads(line)
        response = record["text"][len(rendered[record["id"]]) :]
        kind = record["id"].split("-")[1]
        if kind == "paragraph":
            text = paragraph(response)
            task = PARAGRAPH_TASKS[int(hashlib.sha256(line.encode()).digest()[0]) % len(PARAGRAPH_TASKS)]
            request = task.format(text=text) if text else None
        else:
            request = clean(response)
        if request and request.lower() not in seen:
            seen.add(request.lower())
            requests.append(request)
    templated = [form.format(topic=topic) for topic in TOPICS for form in TOPIC_FORMS]
    chats = [{"id": f"self-{i:05d}", "prompt": r} for i, r in enumerate(requests)]
    chats += [{"id": f"topic-{i:05d}", "prompt": r} for i, r in enumerate(templated) if r.lower() not in seen]
    used = {r["prefix"] for r in old if "prefix" in r}
    codes = [{"id": f"code2-{i:04d}", "prefix": p} for i, p in enumerate(code_prefixes(args.code, offsets=(1, 2), salt=1, used=used))]
    out = HERE / "distill-self.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in chats + codes))
    print(f"{len(seeds) * SAMPLES} generations -> {len(requests)} requests kept; {len(chats) - len(requests)} templated requests; "
          f"{len(codes)} code prefixes; wrote {out}")


if __name__ == "__main__":
    main()
