-- tailstudy catalog views over the workspace's Parquet artifacts.
-- Paths are relative to the workspace, so a moved or copied workspace keeps working without a rebuild: DuckDB resolves
-- them against `file_search_path`, which tailstudy's connections set to the workspace (the DuckDB CLI: run it in the
-- workspace, or `duckdb -cmd "SET file_search_path='WORKSPACE'" -readonly WORKSPACE/catalog.duckdb`). ${DATA} (the
-- package's shipped data) is read once into the catalog's own table. Each statement is applied on its own; one whose
-- files do not exist yet leaves the empty shape of sql/schema.sql in place.
-- Keys come from the end of each file name, anchored ('(?:^|/)corpus/([^/]+)/captions\.parquet$'): DuckDB reports
-- a file found through file_search_path by its absolute name and one found from the working directory by a relative
-- name (no leading '/'), and every client must read the same keys either way.

-- every artifact's stage, key and inputs (the manifest's `inputs` object, JSON), for joining keys to their inputs
CREATE OR REPLACE VIEW artifacts AS
SELECT regexp_extract(filename, '([^/]+)/([^/]+)/manifest\.json$', 1) AS stage,
       regexp_extract(filename, '([^/]+)/([^/]+)/manifest\.json$', 2) AS key,
       json_extract(content, '$.inputs') AS inputs
FROM read_text('*/*/manifest.json');

-- captions of every corpus artifact (corpus_key = the corpus stage key)
CREATE OR REPLACE VIEW captions AS
SELECT regexp_extract(filename, '(?:^|/)corpus/([^/]+)/captions\.parquet$', 1) AS corpus_key,
       sample_id, caption, title, tags, description, url, shard, key
FROM read_parquet('corpus/*/captions.parquet', filename = true);

-- per-sample status of every non-synthetic corpus: status = success | failed_to_download | failed_to_resize |
-- invalid_url | failed_to_decode | no_image | no_metadata | missing_file; error_kind groups errors (http_404, timeout,
-- connection, decode, invalid_url, ...); attempts counts fetches (retry rounds included); bytes = stored image size.
-- e.g. success rate: select corpus_key, avg((status = 'success')::int) from downloads group by all
CREATE OR REPLACE VIEW downloads AS
SELECT regexp_extract(filename, '(?:^|/)corpus/([^/]+)/downloads\.parquet$', 1) AS corpus_key,
       sample_id, url, status, error_kind, error_message, attempts, bytes, width, height, original_width,
       original_height, sha256, shard, key
FROM read_parquet('corpus/*/downloads.parquet', filename = true);

-- concept vocabularies used by the workspace's studies
CREATE OR REPLACE VIEW concepts AS
SELECT DISTINCT vocab, concept_id, key, name, synonyms, definition, negatives
FROM read_parquet('vocab/*/concepts.parquet');

-- caption -> concept matches (match_key = the match stage key; input_digest = the matched captions' content digest,
-- or the corpus key of a study's corpus)
CREATE OR REPLACE VIEW matches AS
SELECT m.match_key, sample_id, concept_id, method, score, a.input_digest
FROM (SELECT regexp_extract(filename, '(?:^|/)match/([^/]+)/matches/[^/]+$', 1) AS match_key, sample_id, concept_id,
             method, score
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
FROM (SELECT *, regexp_extract(filename, '(?:^|/)frequency/([^/]+)/concept_freq\.parquet$', 1) AS frequency_key
      FROM read_parquet('frequency/*/concept_freq.parquet', filename = true)) AS f
LEFT JOIN frequency_keys AS k USING (frequency_key);

-- imbalance statistics of each matched corpus
CREATE OR REPLACE VIEW imbalance AS
SELECT corpus, vocab, method, concepts, total, max, min_nonzero, max_min_ratio, zero_concepts, gini, top10_share,
       zipf_exponent, captions, no_concept, one_concept, several_concepts, k.frequency_key, k.match_key, k.input_digest
FROM (SELECT *, regexp_extract(filename, '(?:^|/)frequency/([^/]+)/imbalance\.parquet$', 1) AS frequency_key
      FROM read_parquet('frequency/*/imbalance.parquet', union_by_name = true, filename = true)) AS f
LEFT JOIN frequency_keys AS k USING (frequency_key);

-- which subset each study's factor level uses
CREATE OR REPLACE VIEW study_subsets AS
SELECT subset_key, study, factor, level FROM read_parquet('studies/*/subsets.parquet');

-- curated subsets, one row per (study factor level, sample, copy)
CREATE OR REPLACE VIEW subsets AS
SELECT s.subset_key, s.study, s.factor, s.level, m.sample_id, m.copy, m.label, m.caption
FROM read_parquet('studies/*/subsets.parquet') AS s
JOIN (SELECT regexp_extract(filename, '(?:^|/)curate/([^/]+)/subset\.parquet$', 1) AS subset_key, sample_id, copy,
             label, caption
      FROM read_parquet('curate/*/subset.parquet', filename = true)) AS m
  ON m.subset_key = s.subset_key;

-- per-class frequency of each subset
CREATE OR REPLACE VIEW subset_freq AS
SELECT regexp_extract(filename, '(?:^|/)curate/([^/]+)/subset_freq\.parquet$', 1) AS subset_key, concept_id, name,
       count, rank, share
FROM read_parquet('curate/*/subset_freq.parquet', filename = true);

-- the current runs of every study in the workspace (rewritten on each study run). Records written before the learner
-- column was named `learner` call it `model`: the empty shape gives every file both columns, so either reads
CREATE OR REPLACE VIEW runs AS
SELECT run_id, study, factor, level, coalesce(learner, model) AS learner, seed, subset_key, train_key, status
FROM (SELECT * FROM read_parquet('studies/*/runs.parquet', union_by_name = true)
      UNION ALL BY NAME SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS learner, NULL::VARCHAR AS model WHERE false);

-- per-class evaluation of every run over the study's fixed evaluation classes (evaluate.classes): train_count = the
-- subset's count (0: not in the subset), corpus_count = the pre-training corpus's natural count; nc1, nc2_mean,
-- nc2_weight = per-class neural collapse (pipeline/evaluate.py). Undefined values are NULL (NaN never reaches SQL).
CREATE OR REPLACE VIEW per_class AS
SELECT run_id, concept_id, name, train_count, n_eval, correct, nullif(acc, 'NaN'::DOUBLE) AS acc, pred_count,
       corpus_count, nullif(nc1, 'NaN'::DOUBLE) AS nc1, nullif(nc2_mean, 'NaN'::DOUBLE) AS nc2_mean,
       nullif(nc2_weight, 'NaN'::DOUBLE) AS nc2_weight
FROM read_parquet('evaluate/*/per_class.parquet', union_by_name = true);

-- run-level metrics, labelled by study factor and level (a run shared by two levels appears under both). rho_* use
-- the subset's frequency (NULL on a flat subset), rho_*_corpus the corpus's natural frequency (defined on every
-- level); rho_nc*_freq correlate per-class neural collapse with training frequency; top1_caption_prompt = CLIP's
-- top-1 with the prompt its own captions use (NULL for supervised learners): far above top1, the evaluation prompts are
-- out of distribution for that text tower. NULL = undefined, never NaN.
CREATE OR REPLACE VIEW run_metrics AS
SELECT r.run_id, r.study, r.factor, r.level, r.learner, r.seed,
       nullif(m.top1, 'NaN'::DOUBLE) AS top1, nullif(m.top5, 'NaN'::DOUBLE) AS top5,
       nullif(m.rho_acc, 'NaN'::DOUBLE) AS rho_acc, nullif(m.rho_pred, 'NaN'::DOUBLE) AS rho_pred,
       nullif(m.head_acc, 'NaN'::DOUBLE) AS head_acc, nullif(m.mid_acc, 'NaN'::DOUBLE) AS mid_acc,
       nullif(m.tail_acc, 'NaN'::DOUBLE) AS tail_acc, nullif(m.nc1, 'NaN'::DOUBLE) AS nc1,
       nullif(m.nc2, 'NaN'::DOUBLE) AS nc2, nullif(m.acc_logfreq_slope, 'NaN'::DOUBLE) AS acc_logfreq_slope,
       nullif(m.trimmed_acc, 'NaN'::DOUBLE) AS trimmed_acc, nullif(m.rho_acc_corpus, 'NaN'::DOUBLE) AS rho_acc_corpus,
       nullif(m.rho_pred_corpus, 'NaN'::DOUBLE) AS rho_pred_corpus,
       nullif(m.rho_nc1_freq, 'NaN'::DOUBLE) AS rho_nc1_freq,
       nullif(m.rho_nc2_mean_freq, 'NaN'::DOUBLE) AS rho_nc2_mean_freq,
       nullif(m.rho_nc2_weight_freq, 'NaN'::DOUBLE) AS rho_nc2_weight_freq,
       nullif(m.top1_caption_prompt, 'NaN'::DOUBLE) AS top1_caption_prompt
FROM runs AS r
-- evaluations of an older version have no top1_caption_prompt column: the empty shape adds it (NULL)
JOIN (SELECT * FROM read_parquet('evaluate/*/metrics.parquet', union_by_name = true)
      UNION ALL BY NAME SELECT NULL::VARCHAR AS run_id, NULL::DOUBLE AS top1_caption_prompt WHERE false) AS m
  USING (run_id);

-- per-epoch training log of every run (train_key = the train stage key): loss, optimisation steps, samples/s (in all;
-- per device = per GPU under DDP), fraction of the epoch spent waiting for data, peak RSS (MB, this process's
-- high-water mark + its data workers' RSS at the epoch's end) and peak GPU memory allocated (MB, NULL on CPU)
CREATE OR REPLACE VIEW train_log AS
SELECT regexp_extract(filename, '(?:^|/)train/([^/]+)/train_log\.parquet$', 1) AS train_key, epoch, loss, steps,
       seconds, samples, samples_per_s, samples_per_s_per_device, data_wait_frac, peak_rss_mb,
       nullif(peak_gpu_mb, 'NaN'::DOUBLE) AS peak_gpu_mb
FROM read_parquet('train/*/train_log.parquet', filename = true, union_by_name = true);

-- the paper's measured class frequencies (Wen et al. 2024, MIT): source = <corpus>_<dataset>[_ori]; copied into the
-- catalog (a table), so the catalog does not depend on where the package is installed
CREATE OR REPLACE TABLE reference_freq AS
SELECT regexp_extract(filename, 'class_frequency_(.+)\.txt$', 1) AS source, name, count
FROM read_csv('${DATA}/reference/freqs/class_frequency_*.txt', delim = '\t', header = false, quote = '',
              columns = {'name': 'VARCHAR', 'count': 'BIGINT'}, filename = true);

-- which corpus each match artifact counts (from the frequency artifacts' manifests): captions = the corpus's size
CREATE OR REPLACE VIEW corpus_matches AS
SELECT DISTINCT inputs.match AS match_key, corpus, vocab, method, imbalance.captions AS captions
FROM read_json('frequency/*/manifest.json', union_by_name = true);

-- co-occurrence of every pair of concepts matched in the same caption, per corpus (issue 15): count = captions matching
-- both; pmi = ln(count * captions / (count_a * count_b)); npmi = pmi / -ln(count / captions) (1 when every caption
-- holds both). Pairs that never co-occur are left out (their PMI is -infinity).
CREATE OR REPLACE VIEW concept_pairs AS
WITH m AS (SELECT DISTINCT match_key, sample_id, concept_id FROM matches),
     single AS (SELECT match_key, concept_id, count(*) AS n FROM m GROUP BY ALL),
     pair AS (SELECT a.match_key, a.concept_id AS concept_a, b.concept_id AS concept_b, count(*) AS n
              FROM m AS a JOIN m AS b
                ON a.match_key = b.match_key AND a.sample_id = b.sample_id AND a.concept_id < b.concept_id
              GROUP BY ALL)
SELECT k.corpus, k.vocab, k.method, p.concept_a, p.concept_b, sa.n AS count_a, sb.n AS count_b, p.n AS count,
       k.captions, ln(p.n::DOUBLE * k.captions / (sa.n::DOUBLE * sb.n)) AS pmi,
       CASE WHEN p.n = k.captions THEN 1.0
            ELSE ln(p.n::DOUBLE * k.captions / (sa.n::DOUBLE * sb.n)) / -ln(p.n::DOUBLE / k.captions) END AS npmi
FROM pair AS p
JOIN single AS sa ON sa.match_key = p.match_key AND sa.concept_id = p.concept_a
JOIN single AS sb ON sb.match_key = p.match_key AND sb.concept_id = p.concept_b
JOIN corpus_matches AS k ON k.match_key = p.match_key;

-- captions of every corpus indexed by `tailstudy match --index` (issue 15): row = input order, normalised = the phrase
-- rule's normalised caption; url / image_hash = the input's URL and image-hash columns (NULL where it has none or the
-- value is empty; pipeline/matching/inputs.py); index_key = the index artifact
CREATE OR REPLACE VIEW indexed_captions AS
SELECT i.corpus, i.key AS index_key, c.row, c.sample_id, c.caption, c.normalised, c.url, c.image_hash
FROM (SELECT * FROM read_parquet('index/*/captions/*.parquet', filename = true, union_by_name = true)
      UNION ALL BY NAME SELECT NULL::VARCHAR AS url, NULL::VARCHAR AS image_hash WHERE false) AS c
JOIN (SELECT key, corpus FROM read_json('index/*/manifest.json', union_by_name = true)) AS i
  ON i.key = regexp_extract(c.filename, '(?:^|/)index/([^/]+)/captions/[^/]+$', 1);

-- the token index (issue 15): every word of every indexed caption, with its caption row and its position among the
-- caption's words. e.g. captions holding "red fox":
-- select count(distinct a.row) from tokens a join tokens b on b.corpus = a.corpus and b.row = a.row and
--   b.pos = a.pos + 1 where a.term = 'red' and b.term = 'fox' and a.corpus = 'web'
CREATE OR REPLACE VIEW tokens AS
SELECT i.corpus, w.term::VARCHAR AS term, w.row, w.pos
FROM read_parquet('index/*/words/*.parquet', filename = true) AS w
JOIN (SELECT key, corpus FROM read_json('index/*/manifest.json', union_by_name = true)) AS i
  ON i.key = regexp_extract(w.filename, '(?:^|/)index/([^/]+)/words/[^/]+$', 1);

-- each matched (sample, concept) once per match artifact, labelled with its corpus, vocabulary and method: what the
-- duplicate-aware counts below group
CREATE OR REPLACE VIEW matched_samples AS
SELECT k.corpus, k.vocab, k.method, m.match_key, m.sample_id, m.concept_id
FROM (SELECT DISTINCT match_key, sample_id, concept_id FROM matches) AS m
JOIN corpus_matches AS k USING (match_key);

-- distinct non-NULL values of x, and the share of its non-NULL values that repeat one; NULL when x is NULL throughout
-- (the corpus has no such column): the duplicate-aware views below use them per URL and per image hash
CREATE OR REPLACE MACRO distinct_present(x) AS CASE WHEN count(x) > 0 THEN count(DISTINCT x) END;
CREATE OR REPLACE MACRO duplicate_rate_present(x) AS CASE WHEN count(x) > 0 THEN 1 - count(DISTINCT x) / count(x) END;

-- duplicate-aware concept counts of indexed corpora (issue 15): count = matched captions, distinct_captions = distinct
-- normalised captions among them, duplicate_rate = 1 - distinct_captions / count; where the input carries image URLs
-- or image hashes, distinct_urls / distinct_hashes among the matched captions that have one and
-- url_duplicate_rate / hash_duplicate_rate = 1 - distinct / (matched captions with one); NULL where none has one
CREATE OR REPLACE VIEW concept_freq_dedup AS
WITH keyed AS (SELECT DISTINCT inputs.match AS match_key, inputs.index AS index_key  -- which index covers which match
               FROM read_json('describe/*/manifest.json', union_by_name = true))
SELECT m.corpus, m.vocab, m.method, m.concept_id, count(*) AS count, count(DISTINCT c.normalised) AS distinct_captions,
       1 - count(DISTINCT c.normalised) / count(*) AS duplicate_rate,
       distinct_present(c.url) AS distinct_urls, duplicate_rate_present(c.url) AS url_duplicate_rate,
       distinct_present(c.image_hash) AS distinct_hashes, duplicate_rate_present(c.image_hash) AS hash_duplicate_rate
FROM matched_samples AS m
JOIN keyed USING (match_key)
JOIN indexed_captions AS c ON c.index_key = keyed.index_key AND c.sample_id = m.sample_id
GROUP BY ALL;

-- duplicates of each indexed corpus as a whole (issue 15), the same columns over all its captions
CREATE OR REPLACE VIEW corpus_dedup AS
SELECT corpus, count(*) AS captions, count(DISTINCT normalised) AS distinct_captions,
       1 - count(DISTINCT normalised) / count(*) AS duplicate_rate,
       distinct_present(url) AS distinct_urls, duplicate_rate_present(url) AS url_duplicate_rate,
       distinct_present(image_hash) AS distinct_hashes, duplicate_rate_present(image_hash) AS hash_duplicate_rate
FROM indexed_captions GROUP BY ALL;

-- raw (phrase) and verified (semantic) counts side by side where both matchers ran on a corpus (issue 15);
-- misalignment_rate = share of the phrase matches the semantic check rejected
CREATE OR REPLACE VIEW verified_freq AS
SELECT p.corpus, p.vocab, p.concept_id, p.name, p.count AS raw_count, s.count AS verified_count,
       CASE WHEN p.count > 0 THEN 1 - s.count / p.count END AS misalignment_rate
FROM concept_freq AS p
JOIN concept_freq AS s ON s.corpus = p.corpus AND s.vocab = p.vocab AND s.concept_id = p.concept_id
WHERE p.method = 'phrase' AND s.method = 'semantic';

-- how descriptive each concept's matched captions are (issue 15; pipeline/describe.py): caption length in words, words
-- beyond the concept's name, and the captions that are only a template around one of its names
CREATE OR REPLACE VIEW concept_descriptiveness AS
SELECT corpus, vocab, method, concept_id, name, captions, mean_words, p10_words, median_words, p90_words,
       mean_extra_words, median_extra_words, template_like, template_share
FROM read_parquet('describe/*/concept_descriptiveness.parquet');

-- distinct URLs and image hashes among each concept's matched captions, for study corpora (issue 15): url from the
-- corpus's captions, image_hash = the sha256 img2dataset computed for a downloaded image (the downloads view);
-- count = matched captions, distinct_* / *_duplicate_rate over those that have one (as concept_freq_dedup; NULL where
-- none has one)
CREATE OR REPLACE VIEW concept_freq_urls AS
WITH keyed AS (SELECT regexp_extract(filename, '(?:^|/)match/([^/]+)/manifest\.json$', 1) AS match_key,
                      inputs.corpus AS corpus_key
               FROM read_json('match/*/manifest.json', filename = true, union_by_name = true)),
     c AS (SELECT c.corpus_key, c.sample_id, nullif(c.url, '') AS url, nullif(d.sha256, '') AS image_hash
           FROM captions AS c LEFT JOIN downloads AS d USING (corpus_key, sample_id))
SELECT m.corpus, m.vocab, m.method, m.concept_id, count(*) AS count,
       distinct_present(c.url) AS distinct_urls, duplicate_rate_present(c.url) AS url_duplicate_rate,
       distinct_present(c.image_hash) AS distinct_hashes, duplicate_rate_present(c.image_hash) AS hash_duplicate_rate
FROM matched_samples AS m
JOIN keyed USING (match_key)
JOIN c ON c.corpus_key = keyed.corpus_key AND c.sample_id = m.sample_id
GROUP BY ALL;
