-- Per matched corpus: captions, how many matched no concept, exactly one, several; and the imbalance of its concept
-- counts (max / smallest non-zero, concepts never matched, Gini, top-10% share, Zipf exponent).
SELECT corpus, vocab, method, captions, no_concept, one_concept, several_concepts,
       round(1 - no_concept / captions, 4) AS matched_share, total AS matches,
       max, min_nonzero, zero_concepts, round(gini, 3) AS gini, round(top10_share, 3) AS top10_share,
       round(zipf_exponent, 3) AS zipf_exponent
FROM imbalance
ORDER BY corpus, vocab, method;
