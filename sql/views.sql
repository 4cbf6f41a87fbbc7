-- tailstudy catalog views over the workspace's Parquet artifacts.
-- ${WORKSPACE} and ${DATA} are replaced by absolute paths when the catalog is refreshed, so the catalog file can be
-- opened from any directory (e.g. `duckdb -readonly WORKSPACE/catalog.duckdb`). Each statement is applied on its own;
-- one whose files do not exist yet leaves the empty view of sql/schema.sql in place.

-- captions of every corpus artifact (corpus_key = the corpus stage key)
CREATE OR REPLACE VIEW captions AS
SELECT regexp_extract(filename, '/corpus/([^/]+)/', 1) AS corpus_key,
       sample_id, caption, title, tags, description, url, shard, key
FROM read_parquet('${WORKSPACE}/corpus/*/captions.parquet', filename = true);

-- per-sample status of every non-synthetic corpus: status = success | failed_to_download | failed_to_resize |
-- invalid_url | failed_to_decode | no_image | no_metadata | missing_file; error_kind groups errors (http_404, timeout,
-- connection, decode, invalid_url, ...); attempts counts fetches (retry rounds included); bytes = stored image size.
-- e.g. success rate: select corpus_key, avg((status = 'success')::int) from downloads group by all
CREATE OR REPLACE VIEW downloads AS
SELECT regexp_extract(filename, '/corpus/([^/]+)/', 1) AS corpus_key,
       sample_id, url, status, error_kind, error_message, attempts, bytes, width, height, original_width,
       original_height, shard, key
FROM read_parquet('${WORKSPACE}/corpus/*/downloads.parquet', filename = true);

-- concept vocabularies used by the workspace's studies
CREATE OR REPLACE VIEW concepts AS
SELECT DISTINCT vocab, concept_id, key, name, synonyms, definition, negatives
FROM read_parquet('${WORKSPACE}/vocab/*/concepts.parquet');

-- caption -> concept matches (match_key = the match stage key)
CREATE OR REPLACE VIEW matches AS
SELECT regexp_extract(filename, '/match/([^/]+)/', 1) AS match_key, sample_id, concept_id, method, score
FROM read_parquet('${WORKSPACE}/match/*/matches/*.parquet', filename = true);

-- per-concept caption counts of each matched corpus
CREATE OR REPLACE VIEW concept_freq AS
SELECT corpus, vocab, method, concept_id, name, count, rank, share
FROM read_parquet('${WORKSPACE}/frequency/*/concept_freq.parquet');

-- imbalance statistics of each matched corpus
CREATE OR REPLACE VIEW imbalance AS
SELECT corpus, vocab, method, concepts, total, max, min_nonzero, max_min_ratio, zero_concepts, gini, top10_share,
       zipf_exponent, captions, no_concept, one_concept, several_concepts
FROM read_parquet('${WORKSPACE}/frequency/*/imbalance.parquet', union_by_name = true);

-- which subset each study's factor level uses
CREATE OR REPLACE VIEW study_subsets AS
SELECT subset_key, study, factor, level FROM read_parquet('${WORKSPACE}/studies/*/subsets.parquet');

-- curated subsets, one row per (study factor level, sample, copy)
CREATE OR REPLACE VIEW subsets AS
SELECT s.subset_key, s.study, s.factor, s.level, m.sample_id, m.copy, m.label, m.caption
FROM read_parquet('${WORKSPACE}/studies/*/subsets.parquet') AS s
JOIN (SELECT regexp_extract(filename, '/curate/([^/]+)/', 1) AS subset_key, sample_id, copy, label, caption
      FROM read_parquet('${WORKSPACE}/curate/*/subset.parquet', filename = true)) AS m
  ON m.subset_key = s.subset_key;

-- per-class frequency of each subset
CREATE OR REPLACE VIEW subset_freq AS
SELECT regexp_extract(filename, '/curate/([^/]+)/', 1) AS subset_key, concept_id, name, count, rank, share
FROM read_parquet('${WORKSPACE}/curate/*/subset_freq.parquet', filename = true);

-- the current runs of every study in the workspace (rewritten on each study run)
CREATE OR REPLACE VIEW runs AS
SELECT run_id, study, factor, level, model, seed, subset_key, train_key, status
FROM read_parquet('${WORKSPACE}/studies/*/runs.parquet');

-- per-class evaluation of every run
CREATE OR REPLACE VIEW per_class AS
SELECT run_id, concept_id, name, train_count, n_eval, correct, acc, pred_count
FROM read_parquet('${WORKSPACE}/evaluate/*/per_class.parquet');

-- run-level metrics, labelled by study factor and level (a run shared by two levels appears under both)
CREATE OR REPLACE VIEW run_metrics AS
SELECT r.run_id, r.study, r.factor, r.level, r.model, r.seed,
       m.top1, m.top5, m.rho_acc, m.rho_pred, m.head_acc, m.mid_acc, m.tail_acc, m.nc1, m.nc2, m.acc_logfreq_slope,
       m.trimmed_acc
FROM read_parquet('${WORKSPACE}/studies/*/runs.parquet') AS r
JOIN read_parquet('${WORKSPACE}/evaluate/*/metrics.parquet', union_by_name = true) AS m USING (run_id);

-- per-epoch training log of every run (train_key = the train stage key): loss, optimisation steps, samples/s (in all;
-- per device = per GPU under DDP), fraction of the epoch spent waiting for data, peak RSS (MB, this process's
-- high-water mark + its data workers' RSS at the epoch's end) and peak GPU memory allocated (MB, NULL/NaN on CPU)
CREATE OR REPLACE VIEW train_log AS
SELECT regexp_extract(filename, '/train/([^/]+)/', 1) AS train_key, epoch, loss, steps, seconds, samples,
       samples_per_s, samples_per_s_per_device, data_wait_frac, peak_rss_mb, peak_gpu_mb
FROM read_parquet('${WORKSPACE}/train/*/train_log.parquet', filename = true, union_by_name = true);

-- the paper's measured class frequencies (Wen et al. 2024, MIT): source = <corpus>_<dataset>[_ori]
CREATE OR REPLACE VIEW reference_freq AS
SELECT regexp_extract(filename, 'class_frequency_(.+)\.txt$', 1) AS source, name, count
FROM read_csv('${DATA}/reference/freqs/class_frequency_*.txt', delim = '\t', header = false, quote = '',
              columns = {'name': 'VARCHAR', 'count': 'BIGINT'}, filename = true);
