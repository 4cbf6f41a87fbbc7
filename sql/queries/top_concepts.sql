-- The 20 most frequent concepts of each matched corpus.
SELECT corpus, rank, name, count, round(share, 4) AS share
FROM concept_freq
WHERE rank <= 20
ORDER BY corpus, rank;
