-- The 20 most associated concept pairs (by NPMI) of each matched corpus, among pairs sharing at least 5 captions.
SELECT p.corpus, p.method, a.name AS concept_a, b.name AS concept_b, p.count, p.count_a, p.count_b,
       round(p.pmi, 3) AS pmi, round(p.npmi, 3) AS npmi
FROM concept_pairs AS p
JOIN (SELECT DISTINCT vocab, concept_id, name FROM concepts) AS a ON a.vocab = p.vocab AND a.concept_id = p.concept_a
JOIN (SELECT DISTINCT vocab, concept_id, name FROM concepts) AS b ON b.vocab = p.vocab AND b.concept_id = p.concept_b
WHERE p.count >= 5
QUALIFY row_number() OVER (PARTITION BY p.corpus, p.vocab, p.method ORDER BY p.npmi DESC, p.count DESC,
                                                                            p.concept_a, p.concept_b) <= 20
ORDER BY p.corpus, p.method, p.npmi DESC, p.count DESC, concept_a, concept_b;
