-- tailstudy catalog: the empty, typed shape of every view.
-- Run first on every refresh; sql/views.sql then points each view at the workspace's Parquet artifacts. A view whose
-- artifacts do not exist yet keeps this empty shape, so queries never fail on a fresh workspace.

CREATE OR REPLACE VIEW captions AS SELECT NULL::VARCHAR AS corpus_key, NULL::VARCHAR AS sample_id,
    NULL::VARCHAR AS caption, NULL::VARCHAR AS title, NULL::VARCHAR AS tags, NULL::VARCHAR AS description,
    NULL::VARCHAR AS url, NULL::VARCHAR AS shard, NULL::VARCHAR AS key WHERE false;

CREATE OR REPLACE VIEW downloads AS SELECT NULL::VARCHAR AS corpus_key, NULL::VARCHAR AS sample_id,
    NULL::VARCHAR AS url, NULL::VARCHAR AS status, NULL::VARCHAR AS error_kind, NULL::VARCHAR AS error_message,
    NULL::INTEGER AS attempts, NULL::BIGINT AS bytes, NULL::INTEGER AS width, NULL::INTEGER AS height,
    NULL::INTEGER AS original_width, NULL::INTEGER AS original_height, NULL::VARCHAR AS sha256, NULL::VARCHAR AS shard,
    NULL::VARCHAR AS key WHERE false;

CREATE OR REPLACE VIEW concepts AS SELECT NULL::VARCHAR AS vocab, NULL::INTEGER AS concept_id, NULL::VARCHAR AS key,
    NULL::VARCHAR AS name, NULL::VARCHAR[] AS synonyms, NULL::VARCHAR AS definition, NULL::VARCHAR[] AS negatives
    WHERE false;

CREATE OR REPLACE VIEW artifacts AS SELECT NULL::VARCHAR AS stage, NULL::VARCHAR AS key, NULL::JSON AS inputs
    WHERE false;

CREATE OR REPLACE VIEW frequency_keys AS SELECT NULL::VARCHAR AS frequency_key, NULL::VARCHAR AS match_key,
    NULL::VARCHAR AS input_digest WHERE false;

CREATE OR REPLACE VIEW matches AS SELECT NULL::VARCHAR AS match_key, NULL::VARCHAR AS sample_id,
    NULL::INTEGER AS concept_id, NULL::VARCHAR AS method, NULL::FLOAT AS score, NULL::VARCHAR AS input_digest
    WHERE false;

CREATE OR REPLACE VIEW concept_freq AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS vocab, NULL::VARCHAR AS method,
    NULL::INTEGER AS concept_id, NULL::VARCHAR AS name, NULL::BIGINT AS count, NULL::INTEGER AS rank,
    NULL::DOUBLE AS share, NULL::VARCHAR AS frequency_key, NULL::VARCHAR AS match_key, NULL::VARCHAR AS input_digest
    WHERE false;

CREATE OR REPLACE VIEW imbalance AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS vocab, NULL::VARCHAR AS method,
    NULL::BIGINT AS concepts, NULL::BIGINT AS total, NULL::BIGINT AS max, NULL::BIGINT AS min_nonzero,
    NULL::DOUBLE AS max_min_ratio, NULL::BIGINT AS zero_concepts, NULL::DOUBLE AS gini, NULL::DOUBLE AS top10_share,
    NULL::DOUBLE AS zipf_exponent, NULL::BIGINT AS captions, NULL::BIGINT AS no_concept, NULL::BIGINT AS one_concept,
    NULL::BIGINT AS several_concepts, NULL::VARCHAR AS frequency_key, NULL::VARCHAR AS match_key,
    NULL::VARCHAR AS input_digest WHERE false;

CREATE OR REPLACE VIEW study_subsets AS SELECT NULL::VARCHAR AS subset_key, NULL::VARCHAR AS study,
    NULL::VARCHAR AS factor, NULL::VARCHAR AS level WHERE false;

CREATE OR REPLACE VIEW subsets AS SELECT NULL::VARCHAR AS subset_key, NULL::VARCHAR AS study, NULL::VARCHAR AS factor,
    NULL::VARCHAR AS level, NULL::VARCHAR AS sample_id, NULL::INTEGER AS copy, NULL::INTEGER AS label,
    NULL::VARCHAR AS caption WHERE false;

CREATE OR REPLACE VIEW subset_freq AS SELECT NULL::VARCHAR AS subset_key, NULL::INTEGER AS concept_id,
    NULL::VARCHAR AS name, NULL::BIGINT AS count, NULL::INTEGER AS rank, NULL::DOUBLE AS share WHERE false;

CREATE OR REPLACE VIEW runs AS SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS study, NULL::VARCHAR AS factor,
    NULL::VARCHAR AS level, NULL::VARCHAR AS learner, NULL::BIGINT AS seed, NULL::VARCHAR AS subset_key,
    NULL::VARCHAR AS train_key, NULL::VARCHAR AS status WHERE false;

CREATE OR REPLACE VIEW per_class AS SELECT NULL::VARCHAR AS run_id, NULL::INTEGER AS concept_id, NULL::VARCHAR AS name,
    NULL::BIGINT AS train_count, NULL::BIGINT AS n_eval, NULL::BIGINT AS correct, NULL::DOUBLE AS acc,
    NULL::BIGINT AS pred_count, NULL::BIGINT AS corpus_count, NULL::DOUBLE AS nc1, NULL::DOUBLE AS nc2_mean,
    NULL::DOUBLE AS nc2_weight WHERE false;

CREATE OR REPLACE VIEW run_metrics AS SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS study, NULL::VARCHAR AS factor,
    NULL::VARCHAR AS level, NULL::VARCHAR AS learner, NULL::BIGINT AS seed, NULL::DOUBLE AS top1, NULL::DOUBLE AS top5,
    NULL::DOUBLE AS rho_acc, NULL::DOUBLE AS rho_pred, NULL::DOUBLE AS head_acc, NULL::DOUBLE AS mid_acc,
    NULL::DOUBLE AS tail_acc, NULL::DOUBLE AS nc1, NULL::DOUBLE AS nc2, NULL::DOUBLE AS acc_logfreq_slope,
    NULL::DOUBLE AS trimmed_acc, NULL::DOUBLE AS rho_acc_corpus, NULL::DOUBLE AS rho_pred_corpus,
    NULL::DOUBLE AS rho_nc1_freq, NULL::DOUBLE AS rho_nc2_mean_freq, NULL::DOUBLE AS rho_nc2_weight_freq,
    NULL::DOUBLE AS top1_caption_prompt WHERE false;

CREATE OR REPLACE VIEW train_log AS SELECT NULL::VARCHAR AS train_key, NULL::BIGINT AS epoch, NULL::DOUBLE AS loss,
    NULL::BIGINT AS steps, NULL::DOUBLE AS seconds, NULL::BIGINT AS samples, NULL::DOUBLE AS samples_per_s,
    NULL::DOUBLE AS samples_per_s_per_device, NULL::DOUBLE AS data_wait_frac, NULL::DOUBLE AS peak_rss_mb,
    NULL::DOUBLE AS peak_gpu_mb WHERE false;

CREATE OR REPLACE TABLE reference_freq AS SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS name,
    NULL::BIGINT AS count WHERE false;

CREATE OR REPLACE VIEW corpus_matches AS SELECT NULL::VARCHAR AS match_key, NULL::VARCHAR AS corpus,
    NULL::VARCHAR AS vocab, NULL::VARCHAR AS method, NULL::BIGINT AS captions WHERE false;

CREATE OR REPLACE VIEW concept_pairs AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS vocab, NULL::VARCHAR AS method,
    NULL::INTEGER AS concept_a, NULL::INTEGER AS concept_b, NULL::BIGINT AS count_a, NULL::BIGINT AS count_b,
    NULL::BIGINT AS count, NULL::BIGINT AS captions, NULL::DOUBLE AS pmi, NULL::DOUBLE AS npmi WHERE false;

CREATE OR REPLACE VIEW indexed_captions AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS index_key,
    NULL::BIGINT AS row, NULL::VARCHAR AS sample_id, NULL::VARCHAR AS caption, NULL::VARCHAR AS normalised,
    NULL::VARCHAR AS url, NULL::VARCHAR AS image_hash WHERE false;

CREATE OR REPLACE VIEW tokens AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS term, NULL::INTEGER AS row,
    NULL::INTEGER AS pos WHERE false;

CREATE OR REPLACE VIEW concept_freq_dedup AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS vocab,
    NULL::VARCHAR AS method, NULL::INTEGER AS concept_id, NULL::BIGINT AS count, NULL::BIGINT AS distinct_captions,
    NULL::DOUBLE AS duplicate_rate, NULL::BIGINT AS distinct_urls, NULL::DOUBLE AS url_duplicate_rate,
    NULL::BIGINT AS distinct_hashes, NULL::DOUBLE AS hash_duplicate_rate WHERE false;

CREATE OR REPLACE VIEW corpus_dedup AS SELECT NULL::VARCHAR AS corpus, NULL::BIGINT AS captions,
    NULL::BIGINT AS distinct_captions, NULL::DOUBLE AS duplicate_rate, NULL::BIGINT AS distinct_urls,
    NULL::DOUBLE AS url_duplicate_rate, NULL::BIGINT AS distinct_hashes, NULL::DOUBLE AS hash_duplicate_rate WHERE false;

CREATE OR REPLACE VIEW verified_freq AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS vocab,
    NULL::INTEGER AS concept_id, NULL::VARCHAR AS name, NULL::BIGINT AS raw_count, NULL::BIGINT AS verified_count,
    NULL::DOUBLE AS misalignment_rate WHERE false;

CREATE OR REPLACE VIEW concept_descriptiveness AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS vocab,
    NULL::VARCHAR AS method, NULL::INTEGER AS concept_id, NULL::VARCHAR AS name, NULL::BIGINT AS captions,
    NULL::DOUBLE AS mean_words, NULL::DOUBLE AS p10_words, NULL::DOUBLE AS median_words, NULL::DOUBLE AS p90_words,
    NULL::DOUBLE AS mean_extra_words, NULL::DOUBLE AS median_extra_words, NULL::BIGINT AS template_like,
    NULL::DOUBLE AS template_share WHERE false;

CREATE OR REPLACE VIEW concept_freq_urls AS SELECT NULL::VARCHAR AS corpus, NULL::VARCHAR AS vocab,
    NULL::VARCHAR AS method, NULL::INTEGER AS concept_id, NULL::BIGINT AS count, NULL::BIGINT AS distinct_urls,
    NULL::DOUBLE AS url_duplicate_rate, NULL::BIGINT AS distinct_hashes, NULL::DOUBLE AS hash_duplicate_rate WHERE false;
