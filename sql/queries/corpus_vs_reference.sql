-- How a matched corpus's concept frequencies compare with the paper's measured ones: Spearman rank correlation of
-- concept_freq.count with each shipped table of the six pre-training corpora that names at least 90% of the corpus's
-- concepts (joined on the concept name, e.g. imagenet1k against the *_imagenet tables). Ties get average ranks.
WITH ref AS (
    SELECT DISTINCT regexp_replace(source, '_ori$', '') AS reference, name, count
    FROM reference_freq
    WHERE regexp_matches(source, '^(laion400m|laion2b|metaclip_400m|metaclip_fullcc|cc12m|yfcc15m)_')
      AND NOT regexp_matches(source, '_cls_')
),
corpora AS (
    SELECT corpus, vocab, method, count(*) AS concepts FROM concept_freq GROUP BY ALL
),
joined AS (
    SELECT f.corpus, f.vocab, f.method, r.reference, f.name, f.count AS corpus_count, r.count AS reference_count
    FROM concept_freq f JOIN ref r ON r.name = f.name
),
ranked AS (
    SELECT *,
           rank() OVER (PARTITION BY corpus, vocab, method, reference ORDER BY corpus_count)
             + (count(*) OVER (PARTITION BY corpus, vocab, method, reference, corpus_count) - 1) / 2.0 AS rank_c,
           rank() OVER (PARTITION BY corpus, vocab, method, reference ORDER BY reference_count)
             + (count(*) OVER (PARTITION BY corpus, vocab, method, reference, reference_count) - 1) / 2.0 AS rank_r
    FROM joined
)
SELECT r.corpus, r.vocab, r.method, r.reference, count(*) AS concepts, round(corr(rank_c, rank_r), 3) AS spearman
FROM ranked r JOIN corpora c USING (corpus, vocab, method)
GROUP BY r.corpus, r.vocab, r.method, r.reference, c.concepts
HAVING count(*) >= 0.9 * c.concepts
ORDER BY r.corpus, r.vocab, r.method, spearman DESC;
