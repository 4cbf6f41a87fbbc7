-- Imbalance of each shipped reference table (the paper's class frequencies): classes, total, max, smallest non-zero
-- count, classes with no caption, Gini coefficient, share of the top 10% of classes. E.g. LAION-400M / ImageNet: Gini
-- 0.80; MetaCLIP-400M 0.66; ImageNet-Captions (incaps) 0.22.
WITH ref AS (
    SELECT DISTINCT regexp_replace(source, '_ori$', '') AS reference, name, count FROM reference_freq
),
ordered AS (
    SELECT *, row_number() OVER (PARTITION BY reference ORDER BY count, name) AS i,
           row_number() OVER (PARTITION BY reference ORDER BY count DESC, name) AS top_rank,
           count(*) OVER (PARTITION BY reference) AS n
    FROM ref
)
SELECT reference, n AS classes, sum(count)::BIGINT AS total, max(count) AS max,
       min(count) FILTER (WHERE count > 0) AS min_nonzero, count(*) FILTER (WHERE count = 0) AS zero_classes,
       round(sum((2 * i - n - 1) * count) / (n * sum(count)), 3) AS gini,
       round(sum(count) FILTER (WHERE top_rank <= greatest(1, round(n * 0.1))) / sum(count), 3) AS top10_share
FROM ordered
GROUP BY reference, n
ORDER BY reference;
