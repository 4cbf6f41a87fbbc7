-- Duplicate-aware counts of each indexed corpus (tailstudy match --index): the 20 concepts whose matched captions are
-- most often duplicates (same normalised caption), with the corpus's own duplicate rate beside them, and the duplicate
-- rates by image URL and by image hash where the input carries them (NULL otherwise).
SELECT d.corpus, d.method, f.name, d.count, d.distinct_captions, round(d.duplicate_rate, 4) AS duplicate_rate,
       round(c.duplicate_rate, 4) AS corpus_duplicate_rate, round(d.url_duplicate_rate, 4) AS url_duplicate_rate,
       round(d.hash_duplicate_rate, 4) AS hash_duplicate_rate
FROM concept_freq_dedup AS d
JOIN concept_freq AS f USING (corpus, vocab, method, concept_id)
JOIN corpus_dedup AS c USING (corpus)
QUALIFY row_number() OVER (PARTITION BY d.corpus, d.vocab, d.method ORDER BY d.duplicate_rate DESC, d.count DESC,
                                                                            d.concept_id) <= 20
ORDER BY d.corpus, d.method, d.duplicate_rate DESC, d.count DESC, f.name;
