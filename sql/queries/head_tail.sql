-- Accuracy on the head / middle / tail thirds of classes by training frequency, per run.
SELECT study, factor, level, learner, seed, round(head_acc, 3) AS head, round(mid_acc, 3) AS mid,
       round(tail_acc, 3) AS tail, round(head_acc - tail_acc, 3) AS head_minus_tail
FROM run_metrics
ORDER BY study, factor, level, learner, seed;
