"""batchrun inside a Ray Data pipeline: map a ``ray.data.Dataset`` to one with answers.

Like Ray Data LLM's ``build_processor``, but every batch goes through batchrun's own
pipeline (the prompt template and response schema, retries that honour Retry-After,
rate-limit headers, answer-quality checks, a row that fails becomes a ``failed`` row
instead of failing the job) and every worker of the pipeline draws from one quota
(the same quota actor a ``--ray`` run uses), so four workers against a 1,200-RPM key
send 1,200 requests a minute between them, not 4 x ``qps``.

    import ray, batchrun.ray
    processor = batchrun.ray.build_processor(
        model="gpt-4o-mini", prompt="Sentiment of: {text}", workers=4, rpm=1200)
    answered = processor(ray.data.read_parquet("s3://bucket/reviews/"))
    answered.select_columns(["text", "status", "content"]).show()

The result has the input's columns followed by results.parquet's (``status``,
``content``, ``finish_reason``, usage, ``latency_ms``, ``error_code``, one column per
property of a JSON-schema answer, ...). With ``run_dir`` (on storage every node sees)
each batch keeps its journal under it, named by the batch's content: a batch Ray runs
again (a lost worker) resumes and sends only what was not answered. Importing this
module does not import Ray; `build_processor` does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Any

from batchrun._settings import Settings

DEFAULT_BATCH_ROWS = 256


class Processor:
    """Maps Datasets through batchrun (made by `build_processor`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 2,
        batch_size: int = DEFAULT_BATCH_ROWS,
        run_dir: str | None = None,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.batch_size = batch_size
        self.run_dir = os.path.abspath(run_dir) if run_dir else None
        self._service: Any = None

    def quota(self) -> Any:
        """The quota actor every worker draws from (made on first use, in this process)."""
        if self._service is None:
            from batchrun._api import api_key, endpoint_keys
            from batchrun._scale.driver import import_ray
            from batchrun._scale.quota import start_quota_service

            ray = import_ray()
            self._service = start_quota_service(ray, self.settings)
            keys = endpoint_keys(self.settings) if self.settings.endpoints else None
            ray.get(self._service.set_key.remote(api_key(self.settings), keys))
        return self._service

    def __call__(self, dataset: Any) -> Any:
        return dataset.map_batches(
            _Batches,
            fn_constructor_kwargs={
                "settings": self.settings,
                "service": self.quota(),
                "run_dir": self.run_dir,
            },
            batch_size=self.batch_size,
            batch_format="pyarrow",
            concurrency=self.workers,
            num_cpus=0.5,
        )


def build_processor(
    *,
    workers: int = 2,
    batch_size: int = DEFAULT_BATCH_ROWS,
    run_dir: str | None = None,
    **settings: Any,
) -> Processor:
    """A `Processor` for Datasets, from batchrun's settings as Python keywords
    (``model``, ``prompt``/``system``/``messages``, ``response_format``, ``base_url``,
    ``concurrency`` per worker, ``rpm``/``tpm`` for the whole pipeline, ``max_cost``,
    ``max_attempts``...). ``workers``: Ray Data actors; ``batch_size``: rows per batch.

        processor = build_processor(model="gpt-4o-mini", prompt="Translate: {text}")
    """
    from batchrun.errors import ConfigError

    built = Settings.build(input="dataset.parquet", skip_invalid=True, **settings)
    if not built.is_dataset:
        raise ConfigError("build_processor needs a prompt (prompt=, or messages=)")
    if built.ray is not None or built.out_dir is not None:
        raise ConfigError("build_processor: give run_dir=, not out_dir= or ray=")
    return Processor(built, workers=workers, batch_size=batch_size, run_dir=run_dir)


class _Batches:
    """One Ray Data actor: each batch is a batchrun run of its rows (see the module doc)."""

    def __init__(self, settings: Settings, service: Any, run_dir: str | None) -> None:
        import ray

        from batchrun._scale.quota import LeaseClient

        self.settings = settings
        self.service = service
        self.run_dir = run_dir
        self.key, self.keys = ray.get([service.key.remote(), service.keys.remote()])
        self.client = LeaseClient(
            service, f"data-{os.getpid()}", concurrency=settings.concurrency
        ).start()

    def __call__(self, batch: Any) -> Any:
        import anyio
        import pyarrow as pa
        import pyarrow.parquet as pq

        from batchrun._cost.budget import CostHooks
        from batchrun._engine.hooks import CompositeHooks
        from batchrun._engine.runner import Runner
        from batchrun._jobs.outputs import DatasetOutputHooks
        from batchrun._scale.worker import leased_accounts

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        data = sink.getvalue()
        name = hashlib.blake2b(data.to_pybytes(), digest_size=12).hexdigest()
        keep = self.run_dir is not None
        root = self.run_dir or tempfile.mkdtemp(prefix="batchrun-ray-")
        where = os.path.join(root, name)
        os.makedirs(where, exist_ok=True)
        path = os.path.join(where, "input.parquet")
        if not os.path.exists(path):
            staged = path + ".part"
            pq.write_table(batch, staged)
            os.replace(staged, path)
        out = os.path.join(where, "run")
        cfg = replace(self.settings, input=path, out_dir=out, quiet=True, write_parquet=True)
        runner = Runner(
            cfg,
            api_key=self.key,
            hooks=CompositeHooks(CostHooks(cfg), DatasetOutputHooks(cfg)),
            accounts=leased_accounts(cfg, self.client.accounts),
            api_keys=self.keys,
        )
        try:
            anyio.run(runner.run)
            table = pq.read_table(os.path.join(out, "results.parquet"))
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
        return table.drop_columns(["custom_id", "row"])

    def __del__(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()


__all__ = ["Processor", "build_processor"]
