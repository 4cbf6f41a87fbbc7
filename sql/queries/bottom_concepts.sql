-- The 20 least frequent concepts that occur at least once, per matched corpus and matching method.
SELECT corpus, method, name, count
FROM (SELECT *, row_number() OVER (PARTITION BY corpus, method ORDER BY count, concept_id) AS r
      FROM concept_freq WHERE count > 0)
WHERE r <= 20
ORDER BY corpus, method, count, name;
