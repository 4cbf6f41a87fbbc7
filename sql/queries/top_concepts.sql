-- The 20 most frequent concepts of each matched corpus and matching method.
SELECT corpus, method, rank, name, count, round(share, 4) AS share
FROM concept_freq
WHERE rank <= 20
ORDER BY corpus, method, rank;
