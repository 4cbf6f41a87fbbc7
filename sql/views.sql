-- tailstudy catalog views over the workspace's Parquet artifacts.
-- Paths are relative to the workspace, so a moved or copied workspace keeps working without a rebuild: DuckDB resolves
-- them against `file_search_path`, which tailstudy's connections set to the workspace (the DuckDB CLI: run it in the
-- workspace, or `duckdb -cmd "SET file_search_path='WORKSPACE'" -readonly WORKSPACE/catalog.duckdb`). ${DATA} (the
-- package's shipped data) is read once into the catalog's own table. Each statement is applied on its own; one whose
-- files do not exist yet leaves the empty shape of sql/schema.sql in place.

-- every artifact's stage, key and inputs (the manifest's `inputs` object, JSON), for joining keys to their inputs
CREATE OR REPLACE VIEW artifacts AS
SELECT regexp_extract(filename, '([^/]+)/([^/]+)/manifest\.json$', 1) AS stage,
       regexp_extract(filename, '([^/]+)/([^/]+)/manifest\.json$', 2) AS key,
       json_extract(content, '$.inputs') AS inputs
FROM read_text('*/*/manifest.json');

-- captions of every corpus artifact (corpus_key = the corpus stage key)
CREATE OR REPLACE VIEW captions AS
SELECT regexp_extract(filename, '/corpus/([^/]+)/', 1) AS corpus_key,
       sample_id, caption, title, tags, description, url, shard, key
FROM read_parquet('corpus/*/captions.parquet', filename = true);

-- per-sample status of every non-synthetic corpus: status = success | failed_to_download | failed_to_resize |
-- invalid_url | failed_to_decode | no_image | no_metadata | missing_file; error_kind groups errors (http_404, timeout,
-- connection, decode, invalid_url, ...); attempts counts fetches (retry rounds included); bytes = stored image size.
-- e.g. success rate: select corpus_key, avg((status = 'success')::int) from downloads group by all
CREATE OR REPLACE VIEW downloads AS
SELECT regexp_extract(filename, '/corpus/([^/]+)/', 1) AS corpus_key,
       sample_id, url, status, error_kind, error_message, attempts, bytes, width, height, original_width,
       original_height, shard, key
FROM read_parquet('corpus/*/downloads.parquet', filename = true);

-- concept vocabularies used by the workspace's studies
CREATE OR REPLACE VIEW concepts AS
SELECT DISTINCT vocab, concept_id, key, name, synonyms, definition, negatives
FROM read_parquet('vocab/*/concepts.parquet');

-- caption -> concept matches (match_key = the match stage key; input_digest = the matched captions' content digest,
-- or the corpus key of a study's corpus)
CREATE OR REPLACE VIEW matches AS
SELECT m.match_key, sample_id, concept_id, method, score, a.input_digest
FROM (SELECT regexp_extract(filename, '/match/([^/]+)/', 1) AS match_key, sample_id, concept_id, method, score
      FROM read_parquet('match/*/matches/*.parquet', filename = true)) AS m
LEFT JOIN (SELECT key AS match_key,
                  coalesce(inputs ->> 'captions', inputs ->> 'corpus') AS input_digest
           FROM artifacts WHERE stage = 'match') AS a USING (match_key);

-- the keys of each frequency artifact: its own, its match artifact's and the matched input's digest
CREATE OR REPLACE VIEW frequency_keys AS
SELECT f.key AS frequency_key, (f.inputs ->> 'match') AS match_key,
       coalesce(m.inputs ->> 'captions', m.inputs ->> 'corpus') AS input_digest
FROM artifacts AS f LEFT JOIN artifacts AS m ON m.stage = 'match' AND m.key = (f.inputs ->> 'match')
WHERE f.stage = 'frequency';

-- per-concept caption counts of each matched corpus (one frequency_key per artifact: group or filter by it, never
-- sum over corpora that share a name)
CREATE OR REPLACE VIEW concept_freq AS
SELECT corpus, vocab, method, concept_id, name, count, rank, share, k.frequency_key, k.match_key, k.input_digest
FROM (SELECT *, regexp_extract(filename, '/frequency/([^/]+)/', 1) AS frequency_key
      FROM read_parquet('frequency/*/concept_freq.parquet', filename = true)) AS f
LEFT JOIN frequency_keys AS k USING (frequency_key);

-- imbalance statistics of each matched corpus
CREATE OR REPLACE VIEW imbalance AS
SELECT corpus, vocab, method, concepts, total, max, min_nonzero, max_min_ratio, zero_concepts, gini, top10_share,
       zipf_exponent, captions, no_concept, one_concept, several_concepts, k.frequency_key, k.match_key, k.input_digest
FROM (SELECT *, regexp_extract(filename, '/frequency/([^/]+)/', 1) AS frequency_key
      FROM read_parquet('frequency/*/imbalance.parquet', union_by_name = true, filename = true)) AS f
LEFT JOIN frequency_keys AS k USING (frequency_key);

-- which subset each study's factor level uses
CREATE OR REPLACE VIEW study_subsets AS
SELECT subset_key, study, factor, level FROM read_parquet('studies/*/subsets.parquet');

-- curated subsets, one row per (study factor level, sample, copy)
CREATE OR REPLACE VIEW subsets AS
SELECT s.subset_key, s.study, s.factor, s.level, m.sample_id, m.copy, m.label, m.caption
FROM read_parquet('studies/*/subsets.parquet') AS s
JOIN (SELECT regexp_extract(filename, '/curate/([^/]+)/', 1) AS subset_key, sample_id, copy, label, caption
      FROM read_parquet('curate/*/subset.parquet', filename = true)) AS m
  ON m.subset_key = s.subset_key;

-- per-class frequency of each subset
CREATE OR REPLACE VIEW subset_freq AS
SELECT regexp_extract(filename, '/curate/([^/]+)/', 1) AS subset_key, concept_id, name, count, rank, share
FROM read_parquet('curate/*/subset_freq.parquet', filename = true);

-- the current runs of every study in the workspace (rewritten on each study run)
CREATE OR REPLACE VIEW runs AS
SELECT run_id, study, factor, level, model, seed, subset_key, train_key, status
FROM read_parquet('studies/*/runs.parquet');

-- per-class evaluation of every run
CREATE OR REPLACE VIEW per_class AS
SELECT run_id, concept_id, name, train_count, n_eval, correct, acc, pred_count
FROM read_parquet('evaluate/*/per_class.parquet');

-- run-level metrics, labelled by study factor and level (a run shared by two levels appears under both)
CREATE OR REPLACE VIEW run_metrics AS
SELECT r.run_id, r.study, r.factor, r.level, r.model, r.seed,
       m.top1, m.top5, m.rho_acc, m.rho_pred, m.head_acc, m.mid_acc, m.tail_acc, m.nc1, m.nc2, m.acc_logfreq_slope,
       m.trimmed_acc
FROM read_parquet('studies/*/runs.parquet') AS r
JOIN read_parquet('evaluate/*/metrics.parquet', union_by_name = true) AS m USING (run_id);

-- the paper's measured class frequencies (Wen et al. 2024, MIT): source = <corpus>_<dataset>[_ori]; copied into the
-- catalog (a table), so the catalog does not depend on where the package is installed
CREATE OR REPLACE TABLE reference_freq AS
SELECT regexp_extract(filename, 'class_frequency_(.+)\.txt$', 1) AS source, name, count
FROM read_csv('${DATA}/reference/freqs/class_frequency_*.txt', delim = '\t', header = false, quote = '',
              columns = {'name': 'VARCHAR', 'count': 'BIGINT'}, filename = true);
