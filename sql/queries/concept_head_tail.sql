-- Head / middle / tail thirds of each matched corpus's concepts by frequency rank: concepts, matches, share of all
-- matches, and the count range of each third.
WITH parts AS (
    SELECT corpus, vocab, method, count, ntile(3) OVER (PARTITION BY corpus, vocab, method ORDER BY rank) AS third
    FROM concept_freq
)
SELECT corpus, vocab, method, CASE third WHEN 1 THEN 'head' WHEN 2 THEN 'middle' ELSE 'tail' END AS part,
       count(*) AS concepts, sum(count)::BIGINT AS matches,
       round(sum(count) / nullif(sum(sum(count)) OVER (PARTITION BY corpus, vocab, method), 0), 4) AS share,
       max(count) AS max_count, min(count) AS min_count
FROM parts
GROUP BY corpus, vocab, method, third
ORDER BY corpus, vocab, method, third;
