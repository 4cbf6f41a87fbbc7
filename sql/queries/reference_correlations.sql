-- Spearman rank correlation of class frequencies between the paper's six pre-training corpora (LAION-400M, LAION-2B,
-- MetaCLIP-400M, MetaCLIP-2.5B = metaclip_fullcc, CC-12M, YFCC-15M), per downstream dataset's class list.
-- Shipped tables: reference_freq (Wen et al. 2024). Ties get average ranks. Expect LAION-400M vs LAION-2B on
-- ImageNet about 0.99 and LAION-400M vs MetaCLIP-400M about 0.76.
WITH ref AS (
    SELECT DISTINCT
           regexp_extract(source, '^(laion400m|laion2b|metaclip_400m|metaclip_fullcc|cc12m|yfcc15m)_', 1) AS corpus,
           regexp_replace(regexp_replace(source, '^(laion400m|laion2b|metaclip_400m|metaclip_fullcc|cc12m|yfcc15m)_', ''),
                          '_ori$', '') AS dataset,
           name, count
    FROM reference_freq
    WHERE regexp_matches(source, '^(laion400m|laion2b|metaclip_400m|metaclip_fullcc|cc12m|yfcc15m)_')
      AND NOT regexp_matches(source, '_cls_')
),
pairs AS (
    SELECT a.dataset, a.corpus AS corpus_a, b.corpus AS corpus_b, a.name, a.count AS count_a, b.count AS count_b
    FROM ref a JOIN ref b ON a.dataset = b.dataset AND a.name = b.name AND a.corpus < b.corpus
),
ranked AS (
    SELECT *,
           rank() OVER (PARTITION BY dataset, corpus_a, corpus_b ORDER BY count_a)
             + (count(*) OVER (PARTITION BY dataset, corpus_a, corpus_b, count_a) - 1) / 2.0 AS rank_a,
           rank() OVER (PARTITION BY dataset, corpus_a, corpus_b ORDER BY count_b)
             + (count(*) OVER (PARTITION BY dataset, corpus_a, corpus_b, count_b) - 1) / 2.0 AS rank_b
    FROM pairs
)
SELECT dataset, corpus_a, corpus_b, count(*) AS classes, round(corr(rank_a, rank_b), 3) AS spearman
FROM ranked
GROUP BY ALL
ORDER BY dataset, corpus_a, corpus_b;
