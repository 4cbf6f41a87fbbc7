-- Mean and spread over seeds of the headline metrics, per study, factor level and learner.
-- (undefined values, e.g. rho against a balanced subset's flat counts, are NULL in run_metrics: avg skips them;
-- rho_pred_corpus, against the corpus's natural frequency, is defined on every level)
SELECT study, factor, level, learner, count(*) AS seeds,
       round(avg(top1), 3) AS top1, round(stddev_pop(top1), 3) AS top1_sd,
       round(avg(rho_acc), 3) AS rho_acc, round(avg(rho_pred), 3) AS rho_pred,
       round(stddev_pop(rho_pred), 3) AS rho_pred_sd, round(avg(rho_pred_corpus), 3) AS rho_pred_corpus,
       round(avg(head_acc), 3) AS head_acc, round(avg(tail_acc), 3) AS tail_acc
FROM run_metrics
GROUP BY ALL
ORDER BY study, factor, level, learner;
