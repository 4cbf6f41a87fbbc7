-- Per-class counts of every subset of every study, one column per factor level (pivot).
PIVOT (SELECT s.study, s.factor || '=' || s.level AS cell, f.name, f.count
       FROM study_subsets s JOIN subset_freq f USING (subset_key))
ON cell USING first(count)
ORDER BY study, name;
