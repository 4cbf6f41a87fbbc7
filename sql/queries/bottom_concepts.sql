-- The 20 least frequent concepts that occur at least once, per matched corpus.
SELECT corpus, name, count
FROM (SELECT *, row_number() OVER (PARTITION BY corpus ORDER BY count, concept_id) AS r
      FROM concept_freq WHERE count > 0)
WHERE r <= 20
ORDER BY corpus, count, name;
