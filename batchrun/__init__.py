"""batchrun: run large batches of OpenAI-compatible chat completions.

$ batchrun run requests.jsonl -o runs/first --base-url sim
$ batchrun status runs/first
"""

from __future__ import annotations

__version__ = "0.1.0"
