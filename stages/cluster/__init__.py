"""cluster: embed every document, k-means on a sample, CLIMB-style refinement, cluster descriptions.

Five passes; the per-shard ones are runner phases with their own markers, so a killed run resumes
where it stopped, and the global ones hold only a sample and the centroids in memory:

  1. embed   (per shard)  texts -> <embed.cache_dir>/<shard>-<sha256>-<model key>.npy (float16).
                          A shard whose file exists is not embedded again: re-clustering (another
                          k, another refinement) never calls the model.
  2. fit     (driver)     <= kmeans.sample_size embeddings drawn with run.seed -> k_init centroids;
                          the same sample's texts give the vocabulary of the descriptions.
  3. census  (per shard)  docs, tokens and mean quality of every k-means cluster, full corpus.
  4. refine  (driver)     prune low-quality clusters, merge the rest (Ward on centroids) to refine.k,
                          prune tiny ones (pipeline.models.kmeans.refine).
  5. write   (per shard)  <out>/<shard>.parquet with a `cluster` column; documents of pruned
                          clusters -> _rejected/ with reason `cluster:pruned`; partial descriptions
                          merged by `finalize` into <out>/clusters.json (+ centroids.npy).

Passes 1, 3 and 5 ask Ray for a GPU when this machine has one (see `_task`); pass 1 is the only
one that needs it. Intermediate state lives under <out>/_work/ (cleared by --force); the embedding
cache (<out>/_embeddings/ or embed.cache_dir) is never cleared: its file names say what made them.

Modules:

- `stage`     the driver: `auto` resolved once, the passes in order, refine, manifest and timings
- `passes`    the per-shard tasks (embed, census, write) and the k-means fit on a sample
- `describe`  term vocabulary, per-batch descriptions, distinctive terms, clusters.json (`finalize`)
"""
from stages.cluster.describe import CENTROIDS, CLUSTERS_JSON, distinctive_terms
from stages.cluster.passes import REASON_PRUNED
from stages.cluster.stage import SPEC, STAGE, run

__all__ = ["SPEC", "STAGE", "run", "CENTROIDS", "CLUSTERS_JSON", "REASON_PRUNED", "distinctive_terms"]
