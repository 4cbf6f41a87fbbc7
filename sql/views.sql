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

-- per-class evaluation of every run over the study's fixed evaluation classes (eval.classes): train_count = the
-- subset's count (0: not in the subset), corpus_count = the pre-training corpus's natural count; nc1, nc2_mean,
-- nc2_weight = per-class neural collapse (pipeline/evaluate.py). Undefined values are NULL (NaN never reaches SQL).
CREATE OR REPLACE VIEW per_class AS
SELECT run_id, concept_id, name, train_count, n_eval, correct, nullif(acc, 'NaN'::DOUBLE) AS acc, pred_count,
       corpus_count, nullif(nc1, 'NaN'::DOUBLE) AS nc1, nullif(nc2_mean, 'NaN'::DOUBLE) AS nc2_mean,
       nullif(nc2_weight, 'NaN'::DOUBLE) AS nc2_weight
FROM read_parquet('${WORKSPACE}/evaluate/*/per_class.parquet', union_by_name = true);

-- run-level metrics, labelled by study factor and level (a run shared by two levels appears under both). rho_* use
-- the subset's frequency (NULL on a flat subset), rho_*_corpus the corpus's natural frequency (defined on every
-- level); rho_nc*_freq correlate per-class neural collapse with training frequency. NULL = undefined, never NaN.
CREATE OR REPLACE VIEW run_metrics AS
SELECT r.run_id, r.study, r.factor, r.level, r.model, r.seed,
       nullif(m.top1, 'NaN'::DOUBLE) AS top1, nullif(m.top5, 'NaN'::DOUBLE) AS top5,
       nullif(m.rho_acc, 'NaN'::DOUBLE) AS rho_acc, nullif(m.rho_pred, 'NaN'::DOUBLE) AS rho_pred,
       nullif(m.head_acc, 'NaN'::DOUBLE) AS head_acc, nullif(m.mid_acc, 'NaN'::DOUBLE) AS mid_acc,
       nullif(m.tail_acc, 'NaN'::DOUBLE) AS tail_acc, nullif(m.nc1, 'NaN'::DOUBLE) AS nc1,
       nullif(m.nc2, 'NaN'::DOUBLE) AS nc2, nullif(m.acc_logfreq_slope, 'NaN'::DOUBLE) AS acc_logfreq_slope,
       nullif(m.trimmed_acc, 'NaN'::DOUBLE) AS trimmed_acc, nullif(m.rho_acc_corpus, 'NaN'::DOUBLE) AS rho_acc_corpus,
       nullif(m.rho_pred_corpus, 'NaN'::DOUBLE) AS rho_pred_corpus,
       nullif(m.rho_nc1_freq, 'NaN'::DOUBLE) AS rho_nc1_freq,
       nullif(m.rho_nc2_mean_freq, 'NaN'::DOUBLE) AS rho_nc2_mean_freq,
       nullif(m.rho_nc2_weight_freq, 'NaN'::DOUBLE) AS rho_nc2_weight_freq
FROM read_parquet('${WORKSPACE}/studies/*/runs.parquet') AS r
JOIN read_parquet('${WORKSPACE}/evaluate/*/metrics.parquet', union_by_name = true) AS m USING (run_id);

-- the paper's measured class frequencies (Wen et al. 2024, MIT): source = <corpus>_<dataset>[_ori]
CREATE OR REPLACE VIEW reference_freq AS
SELECT regexp_extract(filename, 'class_frequency_(.+)\.txt$', 1) AS source, name, count
FROM read_csv('${DATA}/reference/freqs/class_frequency_*.txt', delim = '\t', header = false, quote = '',
              columns = {'name': 'VARCHAR', 'count': 'BIGINT'}, filename = true);
