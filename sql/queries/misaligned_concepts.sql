-- Concepts whose phrase matches the semantic matcher most often rejects (corpora matched with both methods).
SELECT corpus, vocab, name, raw_count, verified_count, round(misalignment_rate, 4) AS misalignment_rate
FROM verified_freq
WHERE raw_count > 0
ORDER BY corpus, vocab, misalignment_rate DESC, raw_count DESC, name
LIMIT 50;
