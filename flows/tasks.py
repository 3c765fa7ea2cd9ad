"""Prefect tasks: thin shims over pipeline.steps, shared by the flows.

Tasks exchange counts, ids and vectors, never passage text in their results'
names or logs, and the flow's own process does every database write (DuckDB
has one writer); only pure batch work (encoding, scoring) may run elsewhere.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline import learn_steps, review_steps, steps

begin_run = task(steps.begin_run, name="begin-run", cache_policy=NO_CACHE)
ingest_round = task(steps.ingest_round, name="ingest", cache_policy=NO_CACHE, retries=1)
embed_passages = task(steps.embed_passages, name="embed", cache_policy=NO_CACHE, retries=1)
code_passages = task(steps.code_passages, name="code", cache_policy=NO_CACHE, retries=1)
write_round_reports = task(steps.write_round_reports, name="report", cache_policy=NO_CACHE, retries=1)
finish_run = task(steps.finish_run, name="finish-run", cache_policy=NO_CACHE)
import_inbox = task(review_steps.import_inbox, name="import-reviews", cache_policy=NO_CACHE)
train_if_new_gold = task(learn_steps.train_if_new_gold, name="train", cache_policy=NO_CACHE)

# Batch work that a Dask cluster can take: no database access inside.
pending_embeddings = task(steps.pending_embeddings, name="find-unembedded", cache_policy=NO_CACHE)
encode_texts = task(steps.encode_texts, name="encode-batch", cache_policy=NO_CACHE, retries=2)
prepare_coding = task(steps.prepare_coding, name="prepare-coding", cache_policy=NO_CACHE)
score_batch = task(steps.score_batch, name="score-batch", cache_policy=NO_CACHE, retries=2)


def embed_on_workers(settings) -> dict:
    """Encode unembedded passages as batch tasks on the flow's task runner; store results here, one writer."""
    encoder, model_id, missing = pending_embeddings(settings)
    chunks = [missing[i:i + steps.EMBED_CHUNK] for i in range(0, len(missing), steps.EMBED_CHUNK)]
    futures = [encode_texts.submit(encoder, [text for _, text in chunk])
               for chunk in chunks]
    for chunk, future in zip(chunks, futures):
        steps.store_embeddings(settings, model_id, [h for h, _ in chunk], future.result())
    passages = steps.active_passage_count(settings)
    return {"passages": passages, "embedded": len(missing), "cache_hits": passages - len(missing), "model_id": model_id}


def code_on_workers(settings, run_id: str) -> dict:
    """Score uncoded passages as batch tasks on the flow's task runner; store results here, one writer."""
    plan = prepare_coding(settings)
    ids, vectors, coder = plan["passage_ids"], plan["vectors"], plan["coder"]
    spans = [(i, min(i + steps.EMBED_CHUNK, len(ids))) for i in range(0, len(ids), steps.EMBED_CHUNK)]
    futures = [score_batch.submit(coder, vectors[a:b]) for a, b in spans]
    applied = 0
    for (a, b), future in zip(spans, futures):
        scores, decisions = future.result()
        applied += steps.store_codings(settings, coder_id=plan["coder_id"], codebook_version=plan["codebook_version"],
                                       run_id=run_id, passage_ids=ids[a:b], code_ids=list(coder.classes_),
                                       scores=scores, applied=decisions)
    return {"coder_id": plan["coder_id"], "codebook_version": plan["codebook_version"], "coded": len(ids),
            "applied": applied}
