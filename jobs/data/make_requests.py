"""Write jobs/requests.jsonl: 50 OpenAI Batch API request lines with varied bodies.

Each line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``,
exactly what OpenAI's Batch API accepts, so the same file can go to either. The bodies
cover what a real batch holds: plain questions, system prompts, max_tokens, stop
sequences, a json_object response, a json_schema one, tool calls, n = 2, seeds.

    $ python jobs/data/make_requests.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "requests.jsonl"
MODEL = "gpt-4o-mini"

QUESTIONS = [
    "Explain what a hash table is in two sentences.",
    "Give me three names for a bakery that sells only sourdough.",
    "What is the difference between TCP and UDP?",
    "Write a haiku about a rainy Monday.",
    "Summarise the plot of Hamlet in one paragraph.",
    "Why is the sky blue? Answer for a ten-year-old.",
    "List four tips for writing clear error messages.",
    "Translate 'Where is the train station?' into French, Spanish and German.",
    "What are the trade-offs of using a message queue?",
    "Suggest a weekend itinerary for Lisbon.",
    "Explain exponential backoff with jitter.",
    "What does idempotent mean for an HTTP request?",
    "Write a limerick about a cat who learns to code.",
    "How do vaccines train the immune system?",
    "Compare Parquet and CSV for analytics workloads.",
    "Give a short definition of 'opportunity cost'.",
    "What is a good way to name a boolean variable?",
    "Describe the water cycle in five steps.",
    "Write a polite email declining a meeting invitation.",
    "Explain what a p-value is, without formulas.",
]

SYSTEMS = [
    "You are a concise assistant. Answer in at most three sentences.",
    "You are a friendly tutor for secondary-school students.",
    "You are a senior software engineer reviewing a design.",
    "Answer in plain English, no Markdown.",
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}


def body_for(i: int) -> dict[str, Any]:
    question = QUESTIONS[i % len(QUESTIONS)]
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
    kind = i % 10
    if kind in (1, 4, 7):
        body["messages"].insert(0, {"role": "system", "content": SYSTEMS[i % len(SYSTEMS)]})
    if kind in (2, 5):
        body["max_tokens"] = 40 + 20 * (i % 4)
    if kind == 3:
        body["temperature"] = 0.9
        body["seed"] = 1000 + i
    if kind == 6:
        body["messages"] = [
            {"role": "system", "content": "Reply with a JSON object with keys 'topic' and 'tags'."},
            {"role": "user", "content": f"Classify this request: {question}"},
        ]
        body["response_format"] = {"type": "json_object"}
    if kind == 8:
        city = ["Lisbon", "Nairobi", "Osaka", "Montevideo", "Tromsø"][i % 5]
        body["messages"] = [{"role": "user", "content": f"What's the weather in {city} right now?"}]
        body["tools"] = [WEATHER_TOOL]
        body["tool_choice"] = "auto"
    if kind == 9:
        body["n"] = 2
        body["temperature"] = 1.0
        body["max_tokens"] = 60
    if i == 10:
        body["stop"] = ["\n\n"]
    if i == 20:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {
                        "answer": {"type": "string"},
                        "confidence": {"type": "number"},
                    },
                    "required": ["answer", "confidence"],
                    "additionalProperties": False,
                },
            },
        }
    return body


def main() -> None:
    with OUT.open("w", encoding="utf-8") as fh:
        for i in range(50):
            line = {
                "custom_id": f"request-{i + 1}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body_for(i),
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
